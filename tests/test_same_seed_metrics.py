"""Same seeds and equal settings give the same metrics as before the speed work of issue 17.

``same_seed_metrics.json`` holds every test metric of three short runs (pairwise InfoNCE, the fixed anchor,
CentroBind with MAMCL), recorded at commit ad92014 with torch 2.9.1 on the CPU with 2 threads (the sums of a matrix
product depend on the thread count, so the test sets it), before the step-level logging,
batch transfer and optimizer changes. Those changes must not move a single number: the logging only skips values
Lightning would drop, and the optimizer's ``foreach`` form computes what the per-tensor loop did.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from mmcore.testing import run_recipe, tiny_recipe

RECORDED = json.loads((Path(__file__).parent / "same_seed_metrics.json").read_text())

CASES = {
    "pairwise_infonce": tiny_recipe(),
    "imagebind_infonce": tiny_recipe(anchor={"name": "imagebind", "anchor": "image"}),
    "centrobind_mamcl": tiny_recipe(anchor={"name": "centrobind"}, loss={"name": "mamcl"}, seed=3),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_same_seed_gives_the_recorded_metrics(case, tmp_path):
    if not torch.__version__.startswith(RECORDED["torch"]):
        pytest.skip(f"recorded with torch {RECORDED['torch']} (the README's test command installs it); this is "
                    f"torch {torch.__version__}, whose kernels may round differently")
    threads = torch.get_num_threads()
    torch.set_num_threads(RECORDED["threads"])
    try:
        metrics = run_recipe(CASES[case], tmp_path / "run")
    finally:
        torch.set_num_threads(threads)
    expected = RECORDED["runs"][case]
    assert sorted(metrics) == sorted(expected)
    different = {k: (metrics[k], expected[k]) for k in expected if metrics[k] != pytest.approx(expected[k], abs=1e-9)}
    assert not different
