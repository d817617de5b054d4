"""Same seeds and equal settings give the same metrics as before the speed work of issue 17.

``same_seed_metrics.json`` holds every test metric of three short runs (pairwise InfoNCE, the fixed anchor,
CentroBind with MAMCL) on the CPU with 2 threads, recorded from the code as it was before the speed changes, per
machine: the low bits of a matrix product depend on the CPU's kernels (the same code gave mean ranks 0.04 apart on
the project's machine of 2026-12-01 and the AMD EPYC one of 2026-12-07) and on the thread count (the test sets it).
Those changes must not move a single number: the logging only skips values Lightning would drop, the optimizer's
``foreach`` form computes what the per-tensor loop did, and the objective's unmasked path (every row present, on
the CPU) computes what the masked one did.

A machine with no record skips, naming its fingerprint. To record one, check out a commit from before the changes
(``b48d6ed``, which gives the numbers of ``ad92014``) and run ``python tests/test_same_seed_metrics.py --record``
there.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

from mmcore.testing import run_recipe, tiny_recipe

RECORD = Path(__file__).parent / "same_seed_metrics.json"
THREADS = 2

CASES = {
    "pairwise_infonce": tiny_recipe(),
    "imagebind_infonce": tiny_recipe(anchor={"name": "imagebind", "anchor": "image"}),
    "centrobind_mamcl": tiny_recipe(anchor={"name": "centrobind"}, loss={"name": "mamcl"}, seed=3),
}


def fingerprint() -> str:
    """What decides the low bits here: torch's version, the CPU's vendor and model, the kernels torch picked."""
    cpu = {}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() in ("vendor_id", "model name") and key.strip() not in cpu:
                cpu[key.strip()] = value.strip()
    except OSError:
        pass
    return (f"torch {torch.__version__.split('+')[0]}, {cpu.get('vendor_id', '?')} {cpu.get('model name', '?')}, "
            f"{torch.backends.cpu.get_cpu_capability()}")


def run_case(case: str, out: Path) -> dict:
    threads = torch.get_num_threads()
    torch.set_num_threads(THREADS)
    try:
        return run_recipe(CASES[case], out)
    finally:
        torch.set_num_threads(threads)


@pytest.mark.parametrize("case", sorted(CASES))
def test_same_seed_gives_the_recorded_metrics(case, tmp_path):
    machines = json.loads(RECORD.read_text())["machines"]
    here = fingerprint()
    if here not in machines:
        pytest.skip(f"no metrics recorded for this machine ({here}); see this file's docstring to record them")
    metrics = run_case(case, tmp_path / "run")
    expected = machines[here]["runs"][case]
    assert sorted(metrics) == sorted(expected)
    different = {k: (metrics[k], expected[k]) for k in expected if metrics[k] != pytest.approx(expected[k], abs=1e-9)}
    assert not different


def record(commit: str) -> None:
    """Add this machine's metrics of every case, from the code checked out now, to the record."""
    import tempfile

    data = json.loads(RECORD.read_text())
    with tempfile.TemporaryDirectory() as tmp:
        runs = {case: run_case(case, Path(tmp) / case) for case in sorted(CASES)}
    data["machines"][fingerprint()] = {"recorded_at": commit, "threads": THREADS, "runs": runs}
    RECORD.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
    print(f"recorded {fingerprint()} at {commit}")


if __name__ == "__main__" and sys.argv[1:] == ["--record"]:
    import subprocess

    record(subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                          cwd=Path(__file__).parent).stdout.strip())
