"""Recipe loading: extends, overrides, structuring and the TOML writer."""

import pytest

import mmcore
from mmcore.recipe import apply_overrides, dump_toml, parse_override_value, read_recipe_file, recipe_to_dict

try:
    import tomllib
except ModuleNotFoundError:
    import tomli as tomllib

from core_test_support import RECIPES


def write(path, text):
    path.write_text(text)
    return path


def test_extends_deep_merges_tables_replaces_arrays_and_resolves_relative_to_the_file(tmp_path):
    (tmp_path / "base").mkdir()
    write(tmp_path / "base" / "base.toml", '[trainer]\nmax_epochs = 5\nbatch_size = 64\n[x]\nlist = [1, 2]\n')
    child = write(tmp_path / "child.toml", 'extends = "base/base.toml"\n[trainer]\nmax_epochs = 2\n[x]\nlist = [3]\n')
    raw, files = read_recipe_file(child)
    assert raw == {"trainer": {"max_epochs": 2, "batch_size": 64}, "x": {"list": [3]}}
    assert files == [(tmp_path / "base" / "base.toml").resolve(), child.resolve()]


def test_changing_a_component_name_replaces_the_base_section(tmp_path):
    write(tmp_path / "base.toml", '[anchor]\nname = "imagebind"\nmodality = "image"\n')
    child = write(tmp_path / "child.toml", 'extends = "base.toml"\n[anchor]\nname = "other"\nweight = 1\n')
    raw, _ = read_recipe_file(child)
    assert raw["anchor"] == {"name": "other", "weight": 1}


def test_extends_cycle_is_reported_with_the_chain(tmp_path):
    write(tmp_path / "a.toml", 'extends = "b.toml"\n')
    write(tmp_path / "b.toml", 'extends = "a.toml"\n')
    with pytest.raises(mmcore.RecipeError, match=r"cycle: .*a\.toml -> .*b\.toml -> .*a\.toml"):
        read_recipe_file(tmp_path / "a.toml")


@pytest.mark.parametrize("raw, value", [("3", 3), ("1e-3", 1e-3), ("true", True), ("[1, 2]", [1, 2]),
                                        ('"x"', "x"), ("image", "image"), ("a b", "a b")])
def test_override_values_are_toml_with_bare_string_fallback(raw, value):
    assert parse_override_value(raw) == value


def test_overrides_create_nested_keys_and_index_arrays():
    raw = {"trainer": {"max_epochs": 1}, "evaluators": [{"name": "retrieval"}]}
    out = apply_overrides(raw, ["trainer.max_epochs=4", "dataset.modalities.a.noise=0.5", "evaluators.0.k=3"])
    assert out["trainer"]["max_epochs"] == 4
    assert out["dataset"]["modalities"]["a"]["noise"] == 0.5
    assert out["evaluators"][0]["k"] == 3
    assert raw["trainer"]["max_epochs"] == 1  # the input is not modified


def test_resolved_recipe_round_trips_through_toml():
    recipe, _ = mmcore.load_recipe(RECIPES / "imagebind.toml")
    data = recipe_to_dict(recipe)
    assert tomllib.loads(dump_toml(data)) == data


def test_toml_writer_handles_quoting_and_special_values():
    data = {"a b": "quote \" and \\ and é", "n": float("inf"), "t": [{"name": "x", "sub": {"k": 1}}], "x": None}
    assert tomllib.loads(dump_toml(data)) == {"a b": data["a b"], "n": float("inf"),
                                              "t": [{"name": "x", "sub": {"k": 1}}]}


def test_an_override_that_renames_a_component_replaces_its_section_whatever_the_order():
    raw = {"encoders": {"text": {"name": "mlp", "hidden": [8]}}}
    out = apply_overrides(raw, ["encoders.text.bias=false", "encoders.text.name=linear"])
    assert out["encoders"]["text"] == {"name": "linear", "bias": False}
    same = apply_overrides(raw, ["encoders.text.name=mlp", "encoders.text.dropout=0.1"])
    assert same["encoders"]["text"] == {"name": "mlp", "hidden": [8], "dropout": 0.1}


def test_renamed_keys_are_used_in_suggestions_and_validator_messages():
    from typing import Annotated

    import attrs
    from cattrs.gen import override

    from mmcore.recipe.structure import _Structurer, toml_keys

    @attrs.frozen
    class Config:
        lambda_: Annotated[float, override(rename="lambda")] = attrs.field(default=0.1,
                                                                           validator=attrs.validators.ge(0.0))

    assert toml_keys(Config) == {"lambda_": "lambda"}
    s = _Structurer(mmcore.get_registry())
    s.converter.register_structure_hook(Config, __import__("cattrs").gen.make_dict_structure_fn(
        Config, s.converter, _cattrs_forbid_extra_keys=True, lambda_=override(rename="lambda")))
    assert s.attrs_class({"lamda": 1.0}, Config, "anchor") is None
    assert s.attrs_class({"lambda": -1.0}, Config, "anchor") is None
    assert s.problems == ["anchor.lamda: unknown key; did you mean 'lambda'?", "anchor.lambda: must be >= 0.0: -1.0"]


def test_a_key_ending_in_a_newline_is_quoted():
    # found by the fuzzer: `$` in a regex also matches before a final newline
    from mmcore.recipe.files import tomllib

    data = {"0": {}, "0\n": [{}]}
    assert tomllib.loads(dump_toml(data)) == data


def test_nearest_hint_suggests_the_closest_name_or_lists_them_all():
    from mmcore.recipe import nearest_hint

    assert nearest_hint("audio-imag", ["text-image", "audio-image"], "its terms") == "; did you mean 'audio-image'?"
    assert nearest_hint("zzz", ["text-image", "audio-image"], "its terms") == "; its terms: text-image, audio-image"


# ------------------------------------------------------------------ renamed keys (``__mmcore_renamed__``)

RENAMED = "mmcore: warning: anchor.modality is renamed anchor.anchor; the old name still works"


def _imagebind_recipe(tmp_path, anchor: dict):
    raw = mmcore.testing.tiny_recipe(anchor={"name": "imagebind", **anchor},
                                     dataset={"train_size": 256, "val_size": 64, "test_size": 128},
                                     trainer={"max_epochs": 1, "batch_size": 128})
    return write(tmp_path / "recipe.toml", dump_toml(raw))


def test_a_renamed_key_still_works_with_one_warning_naming_the_new_key(tmp_path, capsys):
    recipe, _ = mmcore.load_recipe(_imagebind_recipe(tmp_path, {"modality": "image"}))
    assert recipe.anchor.config.anchor == "image"
    assert capsys.readouterr().err.count(RENAMED) == 1
    assert recipe_to_dict(recipe)["anchor"] == {"name": "imagebind", "anchor": "image"}  # written with the new name
    mmcore.load_recipe(_imagebind_recipe(tmp_path, {"anchor": "image"}))
    assert "renamed" not in capsys.readouterr().err


def test_a_renamed_key_given_twice_is_a_recipe_error(tmp_path):
    with pytest.raises(mmcore.RecipeError) as exc:
        mmcore.load_recipe(_imagebind_recipe(tmp_path, {"modality": "image", "anchor": "text"}))
    assert exc.value.problems == ["anchor.modality: renamed anchor.anchor, and both are given; keep only anchor"]


def test_any_component_may_rename_a_key_and_the_path_is_its_section(monkeypatch, capsys):
    import attrs

    from mmcore.recipe import structure_recipe

    @attrs.frozen
    class Config:
        __mmcore_renamed__ = {"old_k": "k"}
        k: int = 1

    registry = mmcore.get_registry()
    component = mmcore.Component("renamed_knn", Config,
                                 lambda config, context=None: mmcore.evaluator(lambda split: {}))
    monkeypatch.setitem(registry.components["evaluators"], "renamed_knn", component)
    monkeypatch.setitem(registry.owners["evaluators"], "renamed_knn", "mmcore-test")
    raw = mmcore.testing.tiny_recipe(evaluators=[{"name": "knn"}, {"name": "renamed_knn", "old_k": 3}])
    recipe = structure_recipe(raw, registry, "<test>")
    assert recipe.evaluators[1].config == Config(k=3)
    assert capsys.readouterr().err.strip() == ("mmcore: warning: evaluators[1].old_k is renamed evaluators[1].k; "
                                               "the old name still works")
    raw["evaluators"][1]["k"] = 4
    with pytest.raises(mmcore.RecipeError, match=r"evaluators\[1\]\.old_k: renamed evaluators\[1\]\.k, and both"):
        structure_recipe(raw, registry, "<test>")


def test_validate_and_run_agree_on_a_renamed_key(tmp_path, cli):
    old = _imagebind_recipe(tmp_path, {"modality": "image"})
    status, out, err = cli("validate", old)
    assert status == 0 and "ok (imagebind" in out and err.count(RENAMED) == 1
    status, _, err = cli("run", old, "--out", tmp_path / "run")
    assert status == 0 and err.count(RENAMED) == 1
    resolved = tomllib.loads((tmp_path / "run" / "recipe.toml").read_text())
    assert resolved["anchor"] == {"name": "imagebind", "anchor": "image"}

    both = write(tmp_path / "both.toml", old.read_text().replace('modality = "image"',
                                                                 'modality = "image"\nanchor = "text"'))
    for command in ("validate", "run"):
        status, _, err = cli(command, both, "--out", tmp_path / "run2") if command == "run" else cli(command, both)
        assert status == 2 and "anchor.modality: renamed anchor.anchor, and both are given" in err
    assert not (tmp_path / "run2").exists()
