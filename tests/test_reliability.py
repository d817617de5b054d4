"""Faults: runs survive SIGKILL (exact resume) and SIGTERM (clean stop), NaN losses are caught, bad output
directories fail before training, tampered checkpoints are refused."""

import json
import os
import random
import signal
import subprocess
import sys
import time
import types

import pytest
import torch

from core_test_support import RECIPES, run_cli

SMALL = ["dataset.train_size=512", "dataset.val_size=128", "dataset.test_size=256", "trainer.batch_size=128",
         "trainer.max_epochs=4", "trainer.log_every_n_steps=1"]
LONGER = SMALL + ["dataset.train_size=2048", "trainer.max_epochs=8"]
"""16 steps per epoch, 8 epochs: long enough that a kill after the first epochs lands before the end."""


ONE_THREAD = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "MKL_DYNAMIC": "FALSE"}
"""Exact comparisons need deterministic kernels: with several BLAS threads on a loaded machine, two uninterrupted
runs of the same code once differed in the 7th digit of the step-0 loss (1 of 56 fresh runs; none in 10+ one-thread
runs under the same load). The kill/resume runs use one thread so that only the resume is under test."""


def _set(overrides):
    return [x for o in overrides for x in ("--set", o)]


def _start(out, extra=()):
    env = dict(os.environ, CI="true", **ONE_THREAD)
    cmd = [sys.executable, "-m", "mmcore.cli", "run", str(RECIPES / "imagebind.toml"), *_set(SMALL + list(extra)),
           "--out", str(out)]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def _epoch_of(ckpt):
    return torch.load(ckpt, map_location="cpu", weights_only=True)["epoch"]


def _wait_for_checkpoint(proc, ckpt, min_epoch, timeout=120):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if ckpt.exists():
            try:
                if _epoch_of(ckpt) >= min_epoch:
                    return
            except Exception:  # noqa: BLE001 - being replaced right now; try again
                pass
        if proc.poll() is not None:
            pytest.fail(f"run ended before a checkpoint of epoch {min_epoch}: {proc.stderr.read()}")
        time.sleep(0.05)
    pytest.fail("no checkpoint in time")


def _kill_and_resume(tmp_path, delay):
    """Reference run, then the same run SIGKILLed after a random epoch's checkpoint (+ ``delay`` s) and resumed.
    Returns (reference metrics, resumed metrics, [reference, resumed] final global steps)."""
    kill_after_epoch = random.Random(20261122).randint(0, 2)
    reference = tmp_path / "uninterrupted"
    run_cli("run", RECIPES / "imagebind.toml", *_set(LONGER), "--out", reference, check=True, env_extra=ONE_THREAD)

    victim = tmp_path / "killed"
    proc = _start(victim, LONGER[len(SMALL):])
    _wait_for_checkpoint(proc, victim / "checkpoints" / "last.ckpt", kill_after_epoch)
    time.sleep(delay)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (victim / "metrics.json").exists(), "the kill came too late to test anything"
    for ckpt in (victim / "checkpoints").glob("*.ckpt"):  # atomic writes: every file left is whole
        _epoch_of(ckpt)

    run_cli("run", "--resume", victim, check=True, env_extra=ONE_THREAD)
    steps = [torch.load(d / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] for d in (reference, victim)]
    return (json.loads((reference / "metrics.json").read_text()), json.loads((victim / "metrics.json").read_text()),
            steps)


def test_a_run_killed_with_sigkill_resumes_from_its_last_checkpoint_to_the_end(tmp_path):
    expected, resumed, steps = _kill_and_resume(tmp_path, 0.0)
    assert resumed.keys() == expected.keys()
    assert steps == [128, 128]  # 8 epochs x 16 steps, none lost or repeated


@pytest.mark.parametrize("delay", [0.0, 0.15])
def test_a_run_killed_with_sigkill_resumes_to_the_same_metrics(tmp_path, delay):
    expected, resumed, _ = _kill_and_resume(tmp_path, delay)
    for key, value in expected.items():
        assert resumed[key] == pytest.approx(value, abs=1e-6), key


def test_a_resumed_run_drops_best_checkpoints_its_restored_state_does_not_track(tmp_path):
    """A kill between an epoch's best and last checkpoint writes leaves a best file that last.ckpt does not know;
    the resumed run deletes it, so the directory ends as an uninterrupted run's does (one best, one last)."""
    import shutil

    victim = tmp_path / "killed"
    proc = _start(victim)
    _wait_for_checkpoint(proc, victim / "checkpoints" / "last.ckpt", 0)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    orphan = victim / "checkpoints" / "best-epoch9-step999.ckpt"
    shutil.copy(victim / "checkpoints" / "last.ckpt", orphan)
    run_cli("run", "--resume", victim, check=True, env_extra=ONE_THREAD)
    left = sorted(p.name for p in (victim / "checkpoints").glob("*.ckpt"))
    assert not orphan.exists()
    assert len(left) == 2 and "last.ckpt" in left and left[0].startswith("best-epoch") and "-v" not in left[0], left


def test_sigterm_stops_cleanly_with_a_checkpoint_and_says_how_to_resume(tmp_path):
    out = tmp_path / "run"
    proc = _start(out, ["trainer.max_epochs=200"])
    _wait_for_checkpoint(proc, out / "checkpoints" / "last.ckpt", 0)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143
    assert f"resume with: mmcore run --resume {out}" in err
    _epoch_of(out / "checkpoints" / "interrupted.ckpt")


def test_resume_without_a_checkpoint_is_refused(cli, tmp_path):
    (tmp_path / "recipe.toml").write_text((RECIPES / "imagebind.toml").read_text())
    status, _, err = cli("run", "--resume", tmp_path)
    assert status == 2 and "nothing to resume" in err


class _PoisonAt(torch.nn.Module):
    """Wraps a strategy; from step ``step`` on, one auxiliary loss term is NaN."""

    def __init__(self, inner, module, step):
        super().__init__()
        self.inner, self.module, self.step = inner, [module], step

    def forward(self, z, present, batch):
        alignment = self.inner(z, present, batch)
        if self.module[0].training and self.module[0].global_step == self.step:
            alignment.aux_losses["poison"] = torch.tensor(float("nan"))
        return alignment

    def term_names(self):
        return self.inner.term_names()

    def trained_pairs(self, observed):
        return self.inner.trained_pairs(observed)


def _poisoned(recipe_overrides, step):
    import mmcore
    from mmcore.train.build import assemble

    recipe, sources = mmcore.load_recipe(RECIPES / "imagebind.toml", SMALL + recipe_overrides)
    module, data = assemble(recipe)
    module.strategy = _PoisonAt(module.strategy, module, step)
    return recipe, sources, (module, data)


STEPS = pytest.mark.parametrize("step", ["trainer.embed_chunk=0", "trainer.embed_chunk=40"],
                                ids=["plain step", "cached step"])


@STEPS
def test_a_nan_loss_term_stops_the_run_naming_the_term_the_step_and_the_last_good_checkpoint(tmp_path, step):
    from mmcore.train.module import NonFiniteLoss
    from mmcore.runs.train import train

    recipe, sources, built = _poisoned([step], step=6)
    with pytest.raises(NonFiniteLoss) as info:
        train(recipe, sources, tmp_path, module_data=built)
    message = str(info.value)
    assert "'poison' = nan" in message and "step 6" in message
    assert f"last good checkpoint is {tmp_path / 'checkpoints' / 'last.ckpt'}" in message
    assert _epoch_of(tmp_path / "checkpoints" / "last.ckpt") == 0  # kept, from before the fault


@STEPS
def test_on_nonfinite_skip_skips_the_bad_batch_and_finishes(tmp_path, step):
    from mmcore.runs.train import train

    recipe, sources, built = _poisoned(["trainer.on_nonfinite=skip", step], step=6)
    metrics = train(recipe, sources, tmp_path, module_data=built)
    assert built[0].skipped_batches == 1
    assert all(value == value for value in metrics.values())  # no NaN anywhere


class _FakeEvent:
    """Stands in for a CUDA event: ``done`` says whether the device has passed it."""

    def __init__(self):
        self.done = False

    def query(self):
        return self.done

    def synchronize(self):
        self.done = True


def test_deferred_gpu_nonfinite_check_judges_in_step_order_and_always_before_a_checkpoint():
    """On a GPU ("stop" mode) the loss flags are read late instead of synchronising every step; this runs that
    bookkeeping on the CPU with stand-in events: nothing is judged before the device has passed it, the first
    bad step is the one named, and a checkpoint write waits for every pending check."""
    from mmcore.train.module import NonFiniteLoss

    recipe, _, (module, _) = _poisoned([], step=-1)
    module.trainer = types.SimpleNamespace(default_root_dir="/nonexistent")  # only read for the message
    good, bad, later = _FakeEvent(), _FakeEvent(), _FakeEvent()
    module._pending_checks += [
        (torch.tensor([0.5, 1.0]), good, ("a-b", "c-b"), 3, 0),
        (torch.tensor([0.5, float("inf")]), bad, ("a-b", "c-b"), 4, 0),
        (torch.tensor([float("nan"), 1.0]), later, ("a-b", "c-b"), 5, 0),
    ]
    module.judge_pending_checks(wait=False)  # the device has passed none of them: nothing judged yet
    assert len(module._pending_checks) == 3
    good.done = True
    module.judge_pending_checks(wait=False)
    assert len(module._pending_checks) == 2  # step 3 was fine; step 4 not computed yet
    later.done = True  # a later event done while an earlier one is not: order is kept, nothing judged
    module.judge_pending_checks(wait=False)
    assert len(module._pending_checks) == 2
    with pytest.raises(NonFiniteLoss) as info:
        module.on_save_checkpoint({})  # waits for all: the first bad step stops the run before the write
    assert "'c-b' = inf at step 4" in str(info.value) and "no checkpoint was written yet" in str(info.value)
    assert module._pending_checks == []


def test_an_unusable_output_directory_fails_before_training(cli, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    status, _, err = cli("run", RECIPES / "imagebind.toml", "--out", blocker / "run")
    assert status == 2 and "cannot create the run directory" in err


def test_a_full_disk_fails_before_training(cli, tmp_path, monkeypatch):
    import shutil
    from collections import namedtuple

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(10**9, 10**9 - 10**6, 10**6))
    status, _, err = cli("run", RECIPES / "imagebind.toml", "--out", tmp_path / "run")
    assert status == 2 and "not enough free space" in err
    assert not (tmp_path / "run" / "checkpoints").exists()


class _Payload:
    def __reduce__(self):
        return (os.system, (f"touch {os.environ['MMCORE_PWNED']}",))


def test_a_tampered_checkpoint_is_refused_and_its_code_never_runs(tmp_path, cli, monkeypatch):
    run_cli("run", RECIPES / "imagebind.toml", *_set(SMALL + ["trainer.max_epochs=1"]), "--out", tmp_path / "run",
            check=True)
    marker = tmp_path / "pwned"
    monkeypatch.setenv("MMCORE_PWNED", str(marker))
    ckpt = tmp_path / "run" / "checkpoints" / "last.ckpt"
    state = torch.load(ckpt, weights_only=True)
    state["payload"] = _Payload()
    torch.save(state, ckpt)

    status, _, err = cli("eval", tmp_path / "run")
    assert status == 2 and "cannot load" in err and "UnpicklingError" in err
    import mmcore

    with pytest.raises(mmcore.RunLoadError, match="cannot load"):
        mmcore.load(tmp_path / "run")
    assert not marker.exists()


def test_a_run_resumed_from_a_best_checkpoint_deletes_it_once_a_better_one_replaces_it(tmp_path):
    """A kill between an epoch's best and last writes leaves best-epoch1 newer than last.ckpt, so --resume goes on
    from it; Lightning never deletes the file it resumed from. (The kill test above meets this only when its timing
    falls in that window: seen once in CI under load, 3 checkpoints left.)"""
    from types import SimpleNamespace

    from mmcore.train.callbacks import DropOrphanBest

    folder = tmp_path / "checkpoints"
    folder.mkdir()
    resumed, better = folder / "best-epoch1-step8.ckpt", folder / "best-epoch3-step16.ckpt"
    for path in (resumed, better):
        path.write_bytes(b"x")
    best = SimpleNamespace(dirpath=str(folder), best_k_models={str(better): 0.1})
    trainer = SimpleNamespace(ckpt_path=str(resumed), is_global_zero=True)
    DropOrphanBest(best).on_train_end(trainer, None)
    assert not resumed.exists() and better.exists()

    # still the best one: kept; resumed from last.ckpt: nothing to do
    best.best_k_models = {str(better): 0.1}
    DropOrphanBest(best).on_train_end(SimpleNamespace(ckpt_path=str(better), is_global_zero=True), None)
    DropOrphanBest(best).on_train_end(SimpleNamespace(ckpt_path=str(folder / "last.ckpt"), is_global_zero=True),
                                      None)
    assert better.exists()
