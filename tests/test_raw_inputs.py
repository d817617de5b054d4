"""Raw media through the core: a third-party dataset yields raw captions (``InputSpec.raw("text")``, ``None`` where
absent) and its encoder preprocesses them in the loader; zero-shot from prompts; per-encoder optimizer settings."""

import json

import pytest

from core_test_support import run_cli

CAPTIONS_RECIPE = """
seed = 1
embed_dim = 16
[dataset]
name = "tiny_captions"
[encoders.feat]
name = "mlp"
[encoders.caption]
name = "char_bag"
lr = 0.02
[anchor]
name = "pairwise"
[[evaluators]]
name = "retrieval"
[[evaluators]]
name = "zero_shot"
text = "caption"
[[evaluators]]
name = "prototypes"
[optimizer]
lr = 0.005
[trainer]
max_epochs = 3
batch_size = 32
num_workers = 1
accelerator = "cpu"
devices = 1
"""


def _scalars(run, tag):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    values = []
    for events in sorted(run.rglob("events.out.tfevents.*")):
        acc = EventAccumulator(str(events))
        acc.Reload()
        if tag in acc.Tags()["scalars"]:
            values += [e.value for e in acc.Scalars(tag)]
    return values


def test_raw_captions_train_with_prompt_zero_shot_and_load_for_encode(images_env, tmp_path):
    recipe = tmp_path / "captions.toml"
    recipe.write_text(CAPTIONS_RECIPE)
    # char_bag raises if an absent caption reaches preprocess, or if a batch's preprocessing mode (train=) differs
    # from the module's mode: training batches are augmented, validation/test/probe/encode ones never
    run_cli("run", recipe, "--out", tmp_path / "run", env_extra=images_env, cwd=tmp_path, check=True)
    run = tmp_path / "run"
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["zero_shot/feat/acc"] > 0.6  # 4 colours: chance 0.25; prompts "a {} square" never seen as such
    assert metrics["zero_shot/trained/acc"] == metrics["zero_shot/feat/acc"]
    assert "prototypes/feat->caption/acc" in metrics
    record = json.loads((run / "model.json").read_text())
    assert record["inputs"]["caption"] == {"media": "text"} and record["prompts"] == ["a {} square"]
    # one caption in five is dropped as undecodable: counted, cumulative, and logged
    skipped = _scalars(run, "train/skipped_samples")
    assert skipped and skipped == sorted(skipped) and skipped[-1] > 10

    check = f"""
import json, numpy as np, mmcore
model = mmcore.load({str(run)!r})
z = model.encode("caption", ["a red square", "a blue square", "a red square"])
try:
    model.encode("caption", [None])
    bad = ""
except AssertionError as exc:
    bad = str(exc)
print(json.dumps({{"shape": list(z.shape), "same": float(np.abs(z[0] - z[2]).max()), "cos": float(z[0] @ z[1]),
                  "bad": bad}}))
"""
    out = _python(check, images_env)
    assert out["shape"] == [3, 16] and out["same"] < 1e-6 and out["cos"] < 0.99
    assert "absent caption" in out["bad"]
    proc = run_cli("eval", run, "--json", env_extra=images_env, check=True)
    assert json.loads(proc.stdout)["zero_shot/feat/acc"] == pytest.approx(metrics["zero_shot/feat/acc"])

    # raw media through the command line: index a text file of captions, search it with a typed query
    (tmp_path / "captions.txt").write_text("a blue square\n\na red square\na yellow square\n")
    run_cli("index", run, "--modality", "caption", tmp_path / "captions.txt", "--out", tmp_path / "index",
            env_extra=images_env, check=True)
    proc = run_cli("search", tmp_path / "index", "--run", run, "--modality", "caption", "a red square", "-k", "3",
                   env_extra=images_env, check=True)
    hits = proc.stdout.strip().split("\t")
    assert hits[0] == "0" and hits[1].startswith("line 2:") and len(hits) == 4
    proc = run_cli("embed", run, "--modality", "caption", tmp_path / "nowhere", "--out", tmp_path / "z.npy",
                   env_extra=images_env)
    assert proc.returncode == 2 and "nowhere: no such file" in proc.stderr and not (tmp_path / "z.npy").exists()
    run_cli("export", run, "--out", tmp_path / "exported", env_extra=images_env, check=True)
    exported = json.loads((tmp_path / "exported" / "manifest.json").read_text())["encoders"]["caption"]
    assert exported["input"] == {"media": "text"} and "preprocess" in exported["note"]


def test_zero_shot_needs_a_raw_text_modality(images_env, tmp_path):
    recipe = tmp_path / "captions.toml"
    recipe.write_text(CAPTIONS_RECIPE.replace('text = "caption"', 'text = "feat"'))
    proc = run_cli("validate", recipe, env_extra=images_env, cwd=tmp_path)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "evaluators[1].text" in proc.stderr and 'set text = "caption"' in proc.stderr
    assert "prototypes" in proc.stderr
    recipe.write_text(CAPTIONS_RECIPE.replace('name = "char_bag"', 'name = "mlp"'))
    proc = run_cli("validate", recipe, env_extra=images_env, cwd=tmp_path)
    assert proc.returncode == 2 and "encoders.caption" in proc.stderr and "raw text" in proc.stderr


def _python(code: str, env: dict):
    import os
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600,
                          env={**os.environ, **env})
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_each_encoder_may_have_its_own_learning_rate_and_weight_decay():
    from mmcore.recipe import structure_recipe
    from mmcore.registry import get_registry
    from mmcore.testing import tiny_recipe
    from mmcore.train.build import assemble

    raw = tiny_recipe(encoders={"image": {"name": "mlp", "lr": 1e-4, "weight_decay": 0.5}},
                      optimizer={"lr": 3e-3, "weight_decay": 0.1})
    module, _ = assemble(structure_recipe(raw, get_registry()))
    groups = {(g["name"], g["weight_decay"]): g for g in module.parameter_groups()}
    image = {id(p) for p in module.encoders["image"].parameters()}
    assert groups["encoders.image", 0.5]["lr"] == 1e-4 and groups["encoders.image", 0.0]["lr"] == 1e-4
    assert {id(p) for g in groups.values() if g["name"] == "encoders.image" for p in g["params"]} == image
    assert groups["default", 0.1]["lr"] == 3e-3
    # biases, norms and the temperature (ndim < 2) never decay; every trainable parameter is in exactly one group
    assert all(p.ndim < 2 for (name, wd), g in groups.items() if wd == 0.0 for p in g["params"])
    assert all(p.ndim >= 2 for (name, wd), g in groups.items() if wd > 0.0 for p in g["params"])
    listed = [id(p) for g in groups.values() for p in g["params"]]
    assert sorted(listed) == sorted(id(p) for p in module.parameters() if p.requires_grad)


@pytest.mark.parametrize("setting, message", [("lr = 0", "encoders.image.lr: must be > 0"),
                                              ("lr = true", "encoders.image.lr: expected a number"),
                                              ("weight_decay = -1.0", "encoders.image.weight_decay: must be >= 0")])
def test_bad_encoder_optimizer_settings_are_recipe_errors(cli, tmp_path, setting, message):
    import tomli_w

    from mmcore.testing import tiny_recipe

    raw = tiny_recipe()
    text = tomli_w.dumps(raw).replace('[encoders.image]\nname = "mlp"', f'[encoders.image]\nname = "mlp"\n{setting}')
    assert setting in text
    (tmp_path / "r.toml").write_text(text)
    code, out, err = cli("validate", tmp_path / "r.toml")
    assert code == 2 and message in err, err


def test_encoder_optimizer_settings_survive_the_written_recipe():
    from mmcore.recipe import structure_recipe
    from mmcore.recipe.writer import recipe_to_dict
    from mmcore.registry import get_registry
    from mmcore.testing import tiny_recipe

    raw = tiny_recipe(encoders={"image": {"name": "mlp", "lr": 1e-4, "frozen": False}})
    recipe = structure_recipe(raw, get_registry())
    again = structure_recipe(recipe_to_dict(recipe), get_registry())
    assert again.encoders["image"].lr == 1e-4 and again.encoders["image"].weight_decay is None
    assert again == recipe
