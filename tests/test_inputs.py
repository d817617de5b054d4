"""Inputs of any shape: a third-party plugin with [3, 8, 8] images and dict token inputs trains, evaluates, loads
and exports; absent rows never reach an encoder; a finished run loads, exports and evaluates after its data moved."""

import json
import shutil

import numpy as np
import pytest
import torch

from core_test_support import run_cli

IMAGES_RECIPE = """
seed = 3
embed_dim = 16
[dataset]
name = "tiny_images"
[encoders.image]
name = "tiny_conv"
[encoders.text]
name = "token_bag"
[anchor]
name = "pairwise"
[optimizer]
lr = 0.01
[trainer]
max_epochs = 3
batch_size = 32
accelerator = "cpu"
devices = 1
"""


def test_image_and_token_inputs_train_evaluate_load_and_export_end_to_end(images_env, tmp_path):
    recipe = tmp_path / "images.toml"
    recipe.write_text(IMAGES_RECIPE)
    # the conv encoder raises on any placeholder row: training, the probe and evaluation never pass it one
    run_cli("run", recipe, "--out", tmp_path / "run", env_extra=images_env, cwd=tmp_path, check=True)
    run = tmp_path / "run"
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["samples"] == 128
    assert metrics["retrieval/image->text/R@1"] > 0.03  # chance is about 1/90 (the test samples having both)
    record = json.loads((run / "model.json").read_text())
    assert record["inputs"]["image"] == {"shape": [3, 8, 8], "dtype": "float32"}
    assert record["inputs"]["text"]["fields"]["ids"] == {"shape": [6], "dtype": "int64"}

    check = f"""
import json, sys, numpy as np, torch, mmcore
model = mmcore.load({str(run)!r})
images = np.random.default_rng(0).normal(size=(5, 3, 8, 8)).astype("float32"); images[:, 0, 0, 0] = 1.0
z = model.encode("image", images)
t = model.encode("text", {{"ids": np.ones((5, 6), dtype="int64"), "mask": np.ones((5, 6), dtype=bool)}})
split = model.embed_split("test")
assert split.reference is not None and len(split.z["image"]) == 128
print(json.dumps({{"z": list(z.shape), "t": list(t.shape), "norm": float(np.linalg.norm(z, axis=1).mean())}}))
"""
    out = run_cli_python(check, images_env)
    assert out == {"z": [5, 16], "t": [5, 16], "norm": pytest.approx(1.0, abs=1e-5)}

    run_cli("export", run, "--out", tmp_path / "exported", env_extra=images_env, check=True)
    manifest = json.loads((tmp_path / "exported" / "manifest.json").read_text())
    assert manifest["encoders"]["image"]["input"]["shape"] == [3, 8, 8]
    image = torch.jit.load(str(tmp_path / "exported" / "image.pt"))
    x = torch.ones(3, 3, 8, 8)
    assert image(x).shape == (3, 16)
    proc = run_cli("eval", run, "--json", env_extra=images_env, check=True)
    assert json.loads(proc.stdout)["retrieval/image->text/R@1"] == pytest.approx(metrics["retrieval/image->text/R@1"])


def run_cli_python(code: str, env: dict):
    import os
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600,
                          env={**os.environ, **env})
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_absent_rows_never_reach_an_encoder():
    """The module runs each encoder on the present rows only; the others get zero embeddings."""
    from mmcore.contracts import Batch
    from mmcore.recipe import structure_recipe
    from mmcore.registry import get_registry
    from mmcore.testing import tiny_recipe
    from mmcore.train.build import assemble

    module, data = assemble(structure_recipe(tiny_recipe(), get_registry()))
    seen = {}
    for m, encoder in module.encoders.items():
        encoder.register_forward_hook(lambda mod, args, out, m=m: seen.setdefault(m, []).append(args[0].shape[0]))
    batch = Batch.from_collated(data.fetch(data.splits.train, list(range(64))))
    present = {m: p.clone() for m, p in batch.present.items()}
    present["text"][:40] = False
    batch = Batch(batch.inputs, present, batch.labels, batch.ids)
    z = module.embed(batch)
    assert seen["text"] == [int(present["text"].sum())] and seen["image"] == [int(present["image"].sum())]
    assert torch.equal(z["text"][~present["text"]], torch.zeros_like(z["text"][~present["text"]]))
    assert torch.allclose(z["text"][present["text"]].norm(dim=1), torch.ones(int(present["text"].sum())))


def _write_features(path, n=300, seed=0):
    rng = np.random.default_rng(seed)
    path.mkdir(parents=True)
    labels = rng.integers(0, 5, n)
    centres = rng.normal(size=(5, 12))
    for m, width in (("image", 12), ("text", 8)):
        x = centres[labels][:, :width] + 0.3 * rng.normal(size=(n, width))
        np.save(path / f"{m}.npy", x.astype(np.float32))
    np.save(path / "labels.npy", labels.astype(np.int64))


def test_a_run_loads_exports_and_evaluates_after_its_training_data_moved(tmp_path):
    _write_features(tmp_path / "data")
    recipe = tmp_path / "features.toml"
    recipe.write_text("""
embed_dim = 16
[dataset]
name = "features"
path = "data"
[encoders.image]
name = "mlp"
[encoders.text]
name = "mlp"
[anchor]
name = "pairwise"
[trainer]
max_epochs = 2
batch_size = 64
accelerator = "cpu"
devices = 1
""")
    run_cli("run", recipe, "--out", tmp_path / "run", cwd=tmp_path, check=True)
    before = json.loads((tmp_path / "run" / "metrics.json").read_text())
    shutil.move(tmp_path / "data", tmp_path / "moved")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()

    out = run_cli_python(f"""
import json, numpy as np, mmcore
model = mmcore.load({str(tmp_path / 'run')!r})
print(json.dumps({{"dim": model.dim, "z": list(model.encode("text", np.zeros((3, 8), dtype="float32")).shape)}}))
""", {})
    assert out == {"dim": 16, "z": [3, 16]}
    run_cli("export", tmp_path / "run", "--out", tmp_path / "exported", cwd=elsewhere, check=True)
    assert (tmp_path / "exported" / "text.pt").is_file()
    gone = run_cli("eval", tmp_path / "run", cwd=elsewhere)
    assert gone.returncode == 2 and "--set dataset." in gone.stderr and "Traceback" not in gone.stderr
    proc = run_cli("eval", tmp_path / "run", "--json", "--set", f"dataset.path={tmp_path / 'moved'}", cwd=elsewhere,
                   check=True)
    after = json.loads(proc.stdout)
    assert after["retrieval/text->image/R@1"] == pytest.approx(before["retrieval/text->image/R@1"], abs=1e-6)
    bad = run_cli("eval", tmp_path / "run", "--set", "embed_dim=8", cwd=elsewhere)
    assert bad.returncode == 2 and "only dataset.* settings" in bad.stderr
