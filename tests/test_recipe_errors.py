"""Bad recipes: each problem names its TOML path, the CLI exits 2 and nothing is written."""

import pytest

from core_test_support import RECIPES, run_cli

RECIPE = RECIPES / "imagebind.toml"


@pytest.mark.parametrize("overrides, expected", [
    (["trainer.max_epoch=3"], "trainer.max_epoch: unknown key; did you mean 'max_epochs'?"),
    (["anchor.anchr=image"], "anchor.anchr: unknown key; did you mean 'anchor'?"),
    (["seeed=1"], "seeed: unknown key; did you mean 'seed'?"),
    (["trainer.max_epochs=three"], "trainer.max_epochs: expected an integer, got str 'three'"),
    (["optimizer.lr=true"], "optimizer.lr: expected a number, got a boolean"),
    (["encoders.text.hidden=[1, \"x\"]"], "encoders.text.hidden[1]: expected an integer"),
    (["anchor.name=imagebnd"], "anchor.name: unknown anchor strategy 'imagebnd'; installed: "),
    (["loss.name=infonc"], "did you mean 'infonce'?"),
    (["trainer.batch_size=-4"], "trainer.batch_size: must be > 0, got -4"),
    (["optimizer.name=adamx"], "optimizer.name: invalid value; expected one of 'adamw', 'adam', 'sgd'"),
    (["anchor.anchor=depth"], "anchor.anchor: anchor modality 'depth' has no encoder"),
    (["encoders.depth.name=mlp"], "encoders.depth: the dataset 'synthetic' has no modality 'depth'"),
    (["trainer"], "--set 'trainer': expected KEY=VALUE"),
    (["seed.x=1"], "--set seed.x: seed is not a table"),
])
def test_bad_override_is_reported_with_its_path(cli, tmp_path, overrides, expected):
    args = [x for o in overrides for x in ("--set", o)]
    status, _, err = cli("run", RECIPE, *args, "--out", tmp_path / "run", cwd=tmp_path)
    assert status == 2, err
    assert expected in err
    assert not (tmp_path / "run").exists() and not (tmp_path / "runs").exists()


@pytest.mark.parametrize("text, expected", [
    ("", "empty recipe"),
    ("[dataset\nname=1", "not valid TOML"),
    ('extends = "missing.toml"', "extends: file not found"),
    ('[encoders.image]\nname = "mlp"\n[anchor]\nname = "imagebind"\nanchor = "image"',
     "dataset: required section missing"),
    ('[dataset]\nname = "synthetic"\n[encoders.image]\nname = "mlp"\n[anchor]\nname = "imagebind"',
     "anchor.anchor: required setting missing"),
    ('[dataset]\nname = "synthetic"\n[encoders.image]\nhidden = []\n[anchor]\nname = "imagebind"\nanchor = "image"',
     "encoders.image.name: required setting missing"),
])
def test_bad_file_is_rejected_with_exit_2_and_nothing_written(cli, tmp_path, text, expected):
    recipe = tmp_path / "bad.toml"
    recipe.write_text(text)
    status, _, err = cli("run", recipe, cwd=tmp_path)
    assert status == 2
    assert expected in err
    assert not (tmp_path / "runs").exists()


def test_all_problems_are_reported_at_once(cli):
    status, _, err = cli("validate", RECIPE, "--set", "trainer.max_epoch=1", "--set", "loss.temperatur=1",
                         "--set", "dataset.modalities.text.noyse=1")
    assert status == 2
    for line in ("trainer.max_epoch:", "loss.temperatur:", "dataset.modalities.text.noyse:"):
        assert line in err


def test_the_installed_command_exits_with_status_2(tmp_path):
    proc = run_cli("validate", RECIPE, "--set", "trainer.max_epoch=1", cwd=tmp_path)
    assert proc.returncode == 2
    assert "trainer.max_epoch: unknown key" in proc.stderr


def test_existing_output_directory_is_never_overwritten_silently(cli, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "precious.txt").write_text("keep me")
    status, _, err = cli("run", RECIPE, "--out", out)
    assert status == 2
    assert "already exists" in err and "--overwrite" in err
    assert (out / "precious.txt").read_text() == "keep me"
