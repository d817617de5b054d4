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


def _ptxas_report(kernel, config, pointers: dict, flags: dict) -> tuple:
    """(registers, spill-store bytes) of ``kernel``'s autotune ``config`` compiled for sm_90 by Triton's CUDA
    backend and ptxas (bundled with Triton): no GPU needed."""
    import re
    import tempfile

    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    ptxas = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "ptxas"
    if not ptxas.is_file():
        pytest.skip("this Triton build has no CUDA backend (ptxas)")
    types = {"n": "i32", "m": "i32", "d": "i32", **pointers}
    constants = {**flags, **config.kwargs}
    signature = {name: "constexpr" if name in constants else types[name] for name in kernel.fn.arg_names}
    compiled = triton.compile(ASTSource(fn=kernel.fn, signature=signature, constexprs=constants),
                              target=GPUTarget("cuda", 90, 32),
                              options={"num_warps": config.num_warps, "num_stages": config.num_stages})
    with tempfile.NamedTemporaryFile("w", suffix=".ptx") as ptx:
        ptx.write(compiled.asm["ptx"])
        ptx.flush()
        report = subprocess.run([str(ptxas), "-arch=sm_90a", "-v", ptx.name, "-o", os.devnull],
                                capture_output=True, text=True, check=True).stderr
    spills = re.search(r"(\d+) bytes spill stores", report)
    return int(re.search(r"Used (\d+) registers", report)[1]), int(spills[1]) if spills else 0


def test_the_kernels_compile_for_a_hopper_gpu_and_their_first_configurations_do_not_spill():
    # what the interpreter cannot check: lowering through Triton's CUDA backend (bf16, validity and labels on)
    from mmcore.contrastive import fused

    common = {"p_ptr": "*bf16", "q_ptr": "*bf16", "scale_ptr": "*fp32", "p_valid_ptr": "*i8", "q_valid_ptr": "*i8",
              "p_label_ptr": "*i64", "q_label_ptr": "*i64"}
    lse = _ptxas_report(fused._lse_kernel, fused.LSE_CONFIGS[0], {**common, "out_ptr": "*fp32"},
                        {"HAS_VALID": True, "HAS_LABELS": True, "IEEE": False})
    grad = _ptxas_report(fused._grad_kernel, fused.GRAD_CONFIGS[0],
                         {**common, **{k: "*fp32" for k in ("grad_ptr", "p_lse_ptr", "p_grad_ptr", "q_lse_ptr",
                                                            "q_grad_ptr")}},
                         {"P_TERM": True, "Q_TERM": True, "HAS_VALID": True, "HAS_LABELS": True, "IEEE": False})
    assert lse[1] == 0 and grad[1] == 0, (lse, grad)
