"""Property-based fuzzing of the recipe loader: whatever the input, the only error is mmcore's RecipeError."""

import math

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import mmcore
from mmcore.recipe import RecipeError, apply_overrides, dump_toml, read_recipe_file, structure_recipe

from core_test_support import RECIPES

KEYS = ["name", "dataset", "encoders", "anchor", "loss", "evaluators", "trainer", "optimizer", "seed", "embed_dim",
        "modality", "hidden", "frozen", "temperature", "max_epochs", "batch_size", "lr", "modalities", "image",
        "text", "audio", "noise", "pairing", "ks", "extends", "output_dir", "precision", "devices"]
NAMES = ["synthetic", "mlp", "imagebind", "infonce", "retrieval", "prototypes", "knn", "nope"]

scalars = st.one_of(
    st.integers(-10**6, 10**6), st.floats(allow_nan=True, allow_infinity=True), st.booleans(),
    st.sampled_from(NAMES), st.text(max_size=8),
)
keys = st.one_of(st.sampled_from(KEYS), st.text(min_size=1, max_size=6))
documents = st.recursive(
    scalars,
    lambda children: st.one_of(st.lists(children, max_size=4), st.dictionaries(keys, children, max_size=5)),
    max_leaves=25,
)
settings.register_profile("mmcore", max_examples=150, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
settings.load_profile("mmcore")


def _structure_only_raises_recipe_errors(raw):
    try:
        structure_recipe(raw, mmcore.get_registry())
    except RecipeError as exc:
        assert exc.problems and all(isinstance(p, str) and p for p in exc.problems)


@given(st.dictionaries(keys, documents, max_size=8))
def test_random_documents_only_raise_recipe_errors(raw):
    _structure_only_raises_recipe_errors(raw)


@given(st.binary(max_size=200))
def test_random_bytes_only_raise_recipe_errors(tmp_path_factory, data):
    path = tmp_path_factory.mktemp("fuzz") / "r.toml"
    path.write_bytes(data)
    try:
        raw, _ = read_recipe_file(path)
        _structure_only_raises_recipe_errors(raw)
    except RecipeError:
        pass


VALID, _ = read_recipe_file(RECIPES / "imagebind.toml")


def _paths(data, prefix=()):
    if isinstance(data, dict):
        for key, value in data.items():
            yield (*prefix, key)
            yield from _paths(value, (*prefix, key))


PATHS = list(_paths(VALID))


@given(st.lists(st.tuples(st.sampled_from(PATHS), st.sampled_from(["set", "delete", "add"]), documents),
                min_size=1, max_size=4))
def test_mutations_of_a_valid_recipe_only_raise_recipe_errors(mutations):
    import copy

    raw = copy.deepcopy(VALID)
    for path, action, value in mutations:
        table = raw
        for part in path[:-1]:
            if not isinstance(table, dict) or part not in table:
                break
            table = table[part]
        else:
            if not isinstance(table, dict):
                continue
            if action == "set":
                table[path[-1]] = value
            elif action == "delete":
                table.pop(path[-1], None)
            else:
                table[f"{path[-1]}_extra"] = value
    _structure_only_raises_recipe_errors(raw)


@given(st.lists(st.tuples(st.sampled_from([".".join(p) for p in PATHS] + ["a..b", "", ".x", "trainer."]),
                          st.text(max_size=12)), min_size=1, max_size=3))
def test_random_overrides_only_raise_recipe_errors(overrides):
    try:
        raw = apply_overrides(VALID, [f"{k}={v}" for k, v in overrides])
    except RecipeError:
        return
    _structure_only_raises_recipe_errors(raw)


@given(st.dictionaries(st.text(min_size=1, max_size=5), documents, max_size=6))
def test_the_toml_writer_round_trips_what_it_writes(data):
    from mmcore.recipe.files import tomllib

    def clean(value):  # TOML has no null and keeps nan as nan: compare with nan == nan
        if isinstance(value, dict):
            return {k: clean(v) for k, v in value.items()}
        if isinstance(value, list):
            return [clean(v) for v in value]
        if isinstance(value, float) and math.isnan(value):
            return "nan"
        return value

    try:
        text = dump_toml(data)
    except TypeError:
        return
    assert clean(tomllib.loads(text)) == clean(data)
