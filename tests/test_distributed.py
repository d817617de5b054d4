"""Distributed training on the CPU (gloo): the global-batch loss is exact, and a 2-process run works end to end."""

import json
import subprocess
import sys
from pathlib import Path

from core_test_support import RECIPES, run_cli


def test_two_processes_give_the_loss_and_gradients_of_one_process_holding_the_whole_batch():
    script = Path(__file__).with_name("ddp_check.py")
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    # plain InfoNCE, a label-masked loss (MAMCL-style, labels gathered across ranks), the same tiled, and the
    # siglip plugin's sigmoid loss (mmcore.blockwise_rows: labels and invalid candidates), plain and tiled
    assert set(report) == {"infonce", "masked", "masked_tiled", "siglip", "siglip_tiled"}
    for kind, r in report.items():
        assert abs(r["loss_ddp"] - r["loss_single"]) <= 1e-5 * abs(r["loss_single"]), (kind, r)
        assert r["max_grad_diff"] <= 1e-5 * r["max_grad"], (kind, r)


def test_a_two_process_ddp_run_writes_one_run_directory_with_metrics_over_the_whole_test_split(tmp_path):
    overrides = ["trainer.devices=2", "trainer.strategy=ddp", "trainer.accelerator=cpu", "trainer.max_epochs=1",
                 "dataset.train_size=512", "dataset.test_size=300", "trainer.batch_size=64"]
    run_cli("run", RECIPES / "imagebind.toml", *[x for o in overrides for x in ("--set", o)], cwd=tmp_path,
            check=True)
    runs = list((tmp_path / "runs").iterdir())
    assert [r.name for r in runs] == ["imagebind-1"]
    metrics = json.loads((runs[0] / "metrics.json").read_text())
    # both ranks' halves are gathered (and DistributedSampler's padding removed): 300 test samples evaluated
    assert metrics["samples"] == 300
    assert 1 <= metrics["retrieval/text->image/mean_rank"] <= 300
    assert (runs[0] / "checkpoints" / "last.ckpt").is_file()


def test_two_processes_taking_the_cached_step_under_lightning_ddp_give_the_whole_batch_gradient(tmp_path):
    # each rank chunks its own rows (trainer.embed_chunk = 5 of 24) and back-propagates most chunks inside the
    # step; DDP's all-reduce must still average the whole accumulated gradient (tests/ddp_cached_check.py)
    out = tmp_path / "report.json"
    script = Path(__file__).with_name("ddp_cached_check.py")
    proc = subprocess.run([sys.executable, str(script), str(out)], capture_output=True, text=True, timeout=600,
                          cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["names_equal"] and report["parameters"] > 10 and report["temperature_grad"], report
    assert report["max_grad_diff"] <= 1e-5 * report["max_grad"], report
