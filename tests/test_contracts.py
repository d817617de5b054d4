"""Components are checked against their contracts when a recipe is built, so `mmcore validate` rejects what would
otherwise crash in training; the optional parts of a contract stay optional."""

import json

import pytest

from core_test_support import RECIPES, TINY, run_cli

BROKEN = [
    # (override, what the message must say)
    ("loss.name=not_a_loss", "loss: loss 'not_a_loss' (from mmcore-test-contracts) breaks the loss contract: "
                             "build returned dict, not a torch.nn.Module"),
    ("encoders.text.name=wide_encoder", "encoders.text: 'wide_encoder' (from mmcore-test-contracts) returned"),
    ("anchor.name=lying_strategy", "anchor: 'lying_strategy' (from mmcore-test-contracts) made term(s) "
                                   "'image-text-typo' that its term_names() does not declare (image-text)"),
    ("anchor.name=clashing_strategy", "anchor: 'clashing_strategy' (from mmcore-test-contracts) returned a term and "
                                      "an aux loss of the same name: image-text"),
    ('evaluators=[{name="wordy_evaluator"}]', "evaluators[0]: 'wordy_evaluator' (from mmcore-test-contracts) "
                                              "returned metric 'wordy/score' = 'high'"),
]


def _overrides(*extra):
    return [x for o in [*TINY, *extra] for x in ("--set", o)]


@pytest.fixture(scope="module")
def contracts_env(tmp_path_factory):
    from core_test_support import pip_install_target

    return pip_install_target(["contracts"], tmp_path_factory.mktemp("contracts") / "site")


@pytest.mark.parametrize("override,message", BROKEN, ids=[b[0].split("=")[1][:20] for b in BROKEN])
def test_validate_rejects_a_component_that_breaks_its_contract_and_run_writes_nothing(contracts_env, tmp_path,
                                                                                       override, message):
    # run shares validate's checks (both assemble the recipe); it is run for the first case only, to save time
    for command in ("validate", "run") if override == BROKEN[0][0] else ("validate",):
        args = [command, RECIPES / "imagebind.toml", *_overrides(override)]
        if command == "run":
            args += ["--out", tmp_path / "run"]
        proc = run_cli(*args, env_extra=contracts_env, cwd=tmp_path)
        assert proc.returncode == 2, (command, proc.stderr)
        assert proc.stderr.startswith("mmcore: error: invalid recipe"), proc.stderr
        assert message in proc.stderr, proc.stderr
        assert "Traceback" not in proc.stderr
    assert not (tmp_path / "run").exists() and not (tmp_path / "runs").exists()


def test_a_loss_without_the_optional_logit_scale_trains(contracts_env, tmp_path):
    run_cli("run", RECIPES / "imagebind.toml", *_overrides("loss.name=plain_loss"), "--out", tmp_path / "run",
            env_extra=contracts_env, check=True)
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["retrieval/trained/R@1"] > 5 / 256  # chance is 1/256


def test_per_term_names_come_from_the_strategys_declaration_in_both_emergentbridge_variants():
    """``loss.per_term`` is checked against ``term_names()``: the proxy term of the gradient variant (scored by the
    strategy itself) is as valid as the loss variant's, and a typo is still caught."""
    from mmcore.recipe import RecipeError, load_recipe
    from mmcore.train.build import assemble

    small = ["dataset.train_size=256", "dataset.val_size=64", "dataset.test_size=64"]
    for projection in ("loss", "gradient"):
        recipe, _ = load_recipe(RECIPES / "emergentbridge.toml", [
            *small, f"anchor.projection={projection}", 'loss.per_term={"proxy/audio-text" = {temperature = 0.1}}'])
        module, _ = assemble(recipe)
        assert "proxy/audio-text" in module.strategy.term_names()
        recipe, _ = load_recipe(RECIPES / "emergentbridge.toml", [
            *small, f"anchor.projection={projection}", 'loss.per_term={"proxy/audio-txt" = {temperature = 0.1}}'])
        with pytest.raises(RecipeError, match="did you mean 'proxy/audio-text'"):
            assemble(recipe)
