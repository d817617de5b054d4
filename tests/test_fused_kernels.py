"""The fused Triton kernels of the tiled InfoNCE (``[loss] kernel = "triton"``), run on the CPU in Triton's
interpreter against the PyTorch tiles and the plain loss (tests/fused_check.py, in a subprocess: ``TRITON_INTERPRET``
must be set before the kernels are decorated), and the settings that refuse them."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import mmcore
from mmcore.recipe import RecipeError, structure_recipe
from mmcore.registry import get_registry

pytest.importorskip("triton", reason="pip install triton")

FP32 = 1e-5  # of the largest reference magnitude: values, dq, dk and dscale
BF16 = 3e-2  # bf16 inputs: the PyTorch tiles round each block's logits to bf16, the kernels keep them in fp32


@pytest.fixture(scope="module")
def report():
    script = Path(__file__).with_name("fused_check.py")
    env = dict(os.environ, TRITON_INTERPRET="1")
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=900, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_fp32_values_and_gradients_match_the_pytorch_tiles_with_every_mask(report):
    cases = {k: v for k, v in report.items() if "/float32/" in k}
    # both directions of a pair term and a pool of another size; labels, invalid rows, both; sizes no block divides
    assert len(cases) == 16
    for name, r in cases.items():
        assert r["diff"] <= FP32 * r["scale"], (name, r)


def test_bf16_within_its_documented_tolerance(report):
    cases = {k: v for k, v in report.items() if "/bfloat16/" in k}
    assert len(cases) == 8
    for name, r in cases.items():
        assert r["diff"] <= BF16 * r["scale"], (name, r)


def test_the_whole_loss_matches_the_plain_loss_and_stays_finite(report):
    cases = {k: v for k, v in report.items() if k.startswith("loss/") or k.startswith("finite")}
    assert len(cases) == 4
    for name, r in cases.items():
        assert r["diff"] <= FP32 * r["scale"], (name, r)


@pytest.mark.parametrize("loss, says", [
    ({"name": "infonce", "kernel": "triton"}, "loss.kernel: \"triton\" is the tiled loss's kernel: set tile_size"),
    ({"name": "mamcl", "kernel": "triton"}, "loss.kernel: \"triton\" is the tiled loss's kernel: set tile_size"),
    ({"name": "infonce", "kernel": "cuda", "tile_size": 64}, "loss.kernel: invalid value; expected one of"),
])
def test_settings_that_cannot_run_are_refused_naming_the_key(loss, says):
    from mmcore.train.build import assemble

    raw = mmcore.testing.tiny_recipe(loss=loss)
    with pytest.raises(RecipeError) as refused:
        assemble(structure_recipe(raw, get_registry(), "<test>"))
    assert says in str(refused.value)


def test_on_the_cpu_a_triton_loss_trains_through_the_pytorch_tiles(tmp_path):
    # the probe step and CPU runs use the PyTorch tiles (the kernels need CUDA, or the interpreter)
    raw = mmcore.testing.tiny_recipe(loss={"name": "infonce", "tile_size": 64, "kernel": "triton"},
                                     trainer={"max_epochs": 1})
    metrics = mmcore.testing.run_recipe(raw, tmp_path / "run")
    assert metrics["retrieval/trained/R@1"] > 1 / 256
