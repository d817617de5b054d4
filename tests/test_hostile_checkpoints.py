"""Hostile checkpoints (issue 14): files cut short by a kill during a copy across filesystems, empty, garbage or
tampered files, a SIGTERM before the first epoch ends, a disk that fills up mid-run, and a plugin that wraps
torch.load. Nothing is lost, the hint printed is one that works, and no checkpoint payload runs."""

import errno
import json
import io
import os
import pickle
import re
import shutil
import signal
import sys
import tempfile
from pathlib import Path

import pytest
import torch

from core_test_support import RECIPES, TINY
from mmcore.runs import checkpoints  # first: its reference to torch.load is the real one

TWO_EPOCHS = [*TINY, "trainer.max_epochs=2"]
"""4 batches of 128 an epoch: a finished run ends at global step 8."""


def _set(overrides):
    return [x for o in overrides for x in ("--set", o)]


def _step(ckpt: Path) -> int:
    return checkpoints.load_checkpoint(ckpt)["global_step"]


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """A finished two-epoch run (last.ckpt at step 8 and a best-*.ckpt); tests work on copies of it."""
    from mmcore.testing import cli

    out = tmp_path_factory.mktemp("finished") / "run"
    status, _, err = cli("run", RECIPES / "imagebind.toml", *_set(TWO_EPOCHS), "--out", out)
    assert status == 0, err
    return out


def _copy(run: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    return copy


def _snapshot(folder: Path) -> dict:
    """Every entry under ``folder`` with its size and modification time: what "nothing written" compares."""
    return {str(p.relative_to(folder)): (p.is_dir(), p.stat().st_size if p.is_file() else 0, p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*"))}


class _Payload:
    def __reduce__(self):
        return (os.system, (f"touch {os.environ['MMCORE_PWNED']}",))


def _tamper(ckpt: Path, marker: Path, monkeypatch) -> None:
    monkeypatch.setenv("MMCORE_PWNED", str(marker))
    state = checkpoints.load_checkpoint(ckpt)
    state["payload"] = _Payload()
    torch.save(state, ckpt)


def test_a_truncated_last_ckpt_resumes_from_the_newest_whole_checkpoint_and_says_so(cli, tmp_path, finished_run):
    """A kill during a copy across filesystems left last.ckpt cut short: --resume continues from the best
    checkpoint (named, with last.ckpt's fault), finishes, and removes the killed writer's temporary file only."""
    run = _copy(finished_run, tmp_path)
    ckpts = run / "checkpoints"
    last = ckpts / "last.ckpt"
    last.write_bytes(last.read_bytes()[:4096])
    (ckpts / ".last.ckpt.tmp-4242").write_bytes(b"\0" * 1000)  # the killed writer's
    (ckpts / ".last.ckpt.tmp-mine").write_text("not mmcore's")
    (ckpts / "notes.txt").write_text("mine")

    status, _, err = cli("run", "--resume", run, "--set", "trainer.max_epochs=3")
    assert status == 0, err
    assert re.search(r"mmcore: resuming from \S*best-epoch\d-step\d\.ckpt: last\.ckpt is not a whole checkpoint "
                     r"\(4096 bytes", err), err
    assert _step(last) == 12  # 3 epochs x 4 steps, whichever best epoch it went on from
    assert not (ckpts / ".last.ckpt.tmp-4242").exists()
    assert (ckpts / ".last.ckpt.tmp-mine").exists() and (ckpts / "notes.txt").exists()


@pytest.mark.parametrize("damage", ["empty", "garbage", "tampered", "weights only"])
def test_resume_without_a_whole_checkpoint_exits_2_naming_the_file_and_writes_nothing(cli, tmp_path, finished_run,
                                                                                      damage, monkeypatch):
    run = _copy(finished_run, tmp_path)
    last = run / "checkpoints" / "last.ckpt"
    for best in (run / "checkpoints").glob("best-*.ckpt"):
        best.unlink()
    marker = tmp_path / "pwned"
    if damage == "empty":
        last.write_bytes(b"")
    elif damage == "garbage":
        last.write_bytes(os.urandom(20000))
    elif damage == "tampered":
        _tamper(last, marker, monkeypatch)
    else:  # a file of weights only (a state_dict saved by hand): whole, but nothing to continue training from
        torch.save({"state_dict": checkpoints.load_checkpoint(last)["state_dict"]}, last)
    before = _snapshot(run)

    status, _, err = cli("run", "--resume", run)
    assert status == 2 and "Traceback" not in err
    assert f"mmcore: error: nothing to resume in {run}: no whole checkpoint: last.ckpt" in err, err
    assert {"empty": "is empty (0 bytes)", "garbage": "is not a whole checkpoint (20000 bytes",
            "tampered": "was refused: it holds code or objects that are not weights: GLOBAL posix.system",
            "weights only": "is not a training checkpoint (no optimizer_states, loops, epoch, global_step)"}[damage] in err
    assert _snapshot(run) == before  # no interrupted.ckpt of untrained weights, recipe.toml untouched
    assert not marker.exists()


class _SigtermAtStep2:
    """A Lightning callback (made in :func:`_with_sigterm_at_step_2`) that sends this process SIGTERM after the
    second training batch, once Lightning's own handler is installed (it only sets a flag; the loop stops)."""

    def on_train_batch_end(self, trainer, *args):
        if trainer.global_step == 2:
            assert signal.getsignal(signal.SIGTERM) not in (signal.SIG_DFL, None), "Lightning's handler is not set"
            os.kill(os.getpid(), signal.SIGTERM)


def _with_sigterm_at_step_2(monkeypatch):
    import lightning as L

    import mmcore.runs.train as runs_train

    callback = type("SigtermAtStep2", (_SigtermAtStep2, L.Callback), {})
    original = runs_train.make_trainer

    def make_trainer(*args, **kwargs):
        trainer = original(*args, **kwargs)
        trainer.callbacks.append(callback())
        return trainer

    monkeypatch.setattr(runs_train, "make_trainer", make_trainer)


@pytest.mark.parametrize("embed_chunk", [0, 48], ids=["plain step", "cached step"])
def test_after_sigterm_in_the_first_epoch_the_printed_resume_command_works_and_is_exact(cli, tmp_path, monkeypatch,
                                                                                      embed_chunk):
    """SIGTERM after 2 of the first epoch's 4 batches: no last.ckpt yet, only interrupted.ckpt. The command
    printed resumes from it, goes on from batch 3, and reaches the metrics of an uninterrupted run (one BLAS
    thread: see tests/test_reliability.py's ONE_THREAD). The same with the cached step (trainer.embed_chunk)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    overrides = [*TWO_EPOCHS, f"trainer.embed_chunk={embed_chunk}"]
    try:
        status, _, err = cli("run", RECIPES / "imagebind.toml", *_set(overrides), "--out", tmp_path / "whole")
        assert status == 0, err
        out = tmp_path / "run"
        with monkeypatch.context() as patched:
            _with_sigterm_at_step_2(patched)
            status, _, err = cli("run", RECIPES / "imagebind.toml", *_set(overrides), "--out", out)
        assert status == 143, err
        assert not (out / "checkpoints" / "last.ckpt").exists()
        assert _step(out / "checkpoints" / "interrupted.ckpt") == 2
        command = re.search(r"resume with: mmcore (run --resume \S+)", err)
        assert command, err

        status, _, err = cli(*command[1].split())
    finally:
        torch.set_num_threads(threads)
    assert status == 0, err
    assert f"mmcore: resuming from {out / 'checkpoints' / 'interrupted.ckpt'}: it was saved during epoch 0 after 2 " \
           "batches; the run goes on from the next batch" in err, err
    assert _step(out / "checkpoints" / "last.ckpt") == 8
    whole = json.loads((tmp_path / "whole" / "metrics.json").read_text())
    resumed = json.loads((out / "metrics.json").read_text())
    assert resumed == pytest.approx(whole, abs=1e-6)


def _checkpoint_io(run_dir: Path):
    """The CheckpointIO a run's Trainer writes and reads its checkpoints with."""
    import mmcore
    from mmcore.runs.train import make_trainer

    recipe, _ = mmcore.load_recipe(RECIPES / "imagebind.toml", TINY)
    return make_trainer(recipe, run_dir, logger=False).strategy.checkpoint_io


def test_checkpoints_are_written_next_to_their_target_never_staged_in_tmpdir(tmp_path, monkeypatch):
    """A temporary file in $TMPDIR (often another filesystem, a tmpfs) makes the final move a copy that a kill
    cuts short; every rename of a checkpoint write stays inside the checkpoint directory."""
    elsewhere = tmp_path / "tmpfs"
    elsewhere.mkdir()
    monkeypatch.setenv("TMPDIR", str(elsewhere))
    monkeypatch.setattr(tempfile, "tempdir", str(elsewhere))
    checkpoint_io = _checkpoint_io(tmp_path)
    moves = []

    def spy(real):
        def move(src, dst, *args, **kwargs):
            moves.append((Path(src).parent, Path(dst).parent, os.listdir(elsewhere)))
            return real(src, dst, *args, **kwargs)
        return move

    for module, name in ((os, "replace"), (os, "rename"), (shutil, "move")):
        monkeypatch.setattr(module, name, spy(getattr(module, name)))
    target = tmp_path / "checkpoints" / "last.ckpt"
    checkpoint_io.save_checkpoint({"state_dict": {"w": torch.ones(3)}}, target)
    monkeypatch.undo()

    assert checkpoints.load_checkpoint(target)["state_dict"]["w"].sum() == 3
    assert moves and all(src == dst == target.parent and not staged for src, dst, staged in moves), moves
    assert os.listdir(elsewhere) == [] and os.listdir(target.parent) == ["last.ckpt"]


def test_a_full_disk_during_a_checkpoint_write_leaves_the_old_file_and_no_temporary_one(tmp_path, monkeypatch):
    """The disk is full: a write fails part-way, and a copy onto the disk (what a move across filesystems is)
    fails too. The previous checkpoint stays whole; the error names the checkpoint."""
    checkpoint_io = _checkpoint_io(tmp_path)
    target = tmp_path / "checkpoints" / "last.ckpt"
    checkpoint_io.save_checkpoint({"state_dict": {"w": torch.ones(3)}}, target)
    before = target.read_bytes()
    real_save = torch.save

    def full(*args):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def save_until_full(obj, f, *args, **kwargs):
        if isinstance(f, io.BytesIO):  # in memory: fine
            return real_save(obj, f, *args, **kwargs)
        f.write(b"PK\x03\x04" + b"\0" * 100)
        full()

    monkeypatch.setattr(torch, "save", save_until_full)
    monkeypatch.setattr(os, "rename", lambda *args: (_ for _ in ()).throw(OSError(errno.EXDEV, "cross-device")))
    monkeypatch.setattr(os, "sendfile", full)
    with pytest.raises(OSError) as info:
        checkpoint_io.save_checkpoint({"state_dict": {"w": torch.zeros(3)}}, target)
    monkeypatch.undo()

    assert info.value.errno == errno.ENOSPC and str(target) in str(info.value)
    assert target.read_bytes() == before
    assert os.listdir(target.parent) == ["last.ckpt"]


def test_a_disk_that_fills_up_mid_run_stops_with_the_resume_hint_and_the_hint_works(cli, tmp_path, monkeypatch):
    """The epoch-0 checkpoints are written, then the disk is full: exit 1, `mmcore: stopped: ...` with the resume
    command and no traceback; interrupted.ckpt cannot be written either (a warning, not a second error, not a
    0-byte file). Once there is room, the command printed finishes the run."""
    real_save = torch.save
    saves = []

    def filling(obj, f, *args, **kwargs):
        saves.append(f)
        if len(saves) <= 2:  # epoch 0: best-*.ckpt and last.ckpt
            return real_save(obj, f, *args, **kwargs)
        f.write(b"\0" * 100)
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(torch, "save", filling)
    out = tmp_path / "run"
    status, _, err = cli("run", RECIPES / "imagebind.toml", *_set(TWO_EPOCHS), "--out", out)
    monkeypatch.setattr(torch, "save", real_save)

    assert status == 1 and "Traceback" not in err, err
    assert re.search(rf"mmcore: stopped: No space left on device \({re.escape(str(out / 'checkpoints'))}/\S+\.ckpt\); "
                     rf"checkpoints kept in {re.escape(str(out / 'checkpoints'))}; fix that, then resume with: "
                     rf"mmcore run --resume {re.escape(str(out))}\n", err), err
    assert "mmcore: warning: could not write" in err and "interrupted.ckpt" in err
    left = sorted(p.name for p in (out / "checkpoints").iterdir())
    assert "last.ckpt" in left and "interrupted.ckpt" not in left and not [n for n in left if ".tmp-" in n], left
    assert _step(out / "checkpoints" / "last.ckpt") == 4

    status, _, err = cli("run", "--resume", out)
    assert status == 0, err
    assert _step(out / "checkpoints" / "last.ckpt") == 8


def test_a_disk_full_before_any_checkpoint_is_written_gives_no_resume_hint_that_would_be_refused(cli, tmp_path,
                                                                                                monkeypatch):
    def full(obj, f, *args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(torch, "save", full)
    out = tmp_path / "run"
    status, _, err = cli("run", RECIPES / "imagebind.toml", *_set(TINY), "--out", out)
    assert status == 1 and "Traceback" not in err, err
    assert "mmcore: stopped: No space left on device" in err and "resume with" not in err
    assert "no checkpoint was written, so there is nothing to resume: fix that, then start the run again" in err
    assert os.listdir(out / "checkpoints") == []


def test_a_plugin_wrapping_torch_load_cannot_turn_off_weights_only_for_mmcores_loads(tmp_path, monkeypatch):
    """mmcore loads checkpoints through the torch.load it found before plugins were imported."""
    real = torch.serialization.load

    def unsafe(*args, **kwargs):
        return real(*args, **{**kwargs, "weights_only": False})

    monkeypatch.setattr(torch, "load", unsafe)
    monkeypatch.setattr(torch.serialization, "load", unsafe)
    marker = tmp_path / "pwned"
    monkeypatch.setenv("MMCORE_PWNED", str(marker))
    ckpt = tmp_path / "checkpoints" / "last.ckpt"
    ckpt.parent.mkdir()
    real_save_state = {"state_dict": {"w": torch.ones(1)}, "payload": _Payload()}
    torch.save(real_save_state, ckpt)

    with pytest.raises(checkpoints.RunDirectoryError, match="last.ckpt was refused"):
        checkpoints.resume_checkpoint(tmp_path)
    with pytest.raises(pickle.UnpicklingError):
        checkpoints.load_checkpoint(ckpt)
    with pytest.raises(pickle.UnpicklingError):
        _checkpoint_io(tmp_path).load_checkpoint(ckpt, weights_only=False)  # what Lightning's resume calls
    assert not marker.exists()


def test_the_cli_takes_the_real_torch_load_before_it_imports_the_plugins(monkeypatch):
    """``main`` imports mmcore.runs.checkpoints (which keeps a reference to torch.load) before ``build_parser``
    imports the plugins, for the commands that load checkpoints."""
    import mmcore.cli
    import mmcore.runs

    seen = []

    def build_parser():  # where the plugins would be imported
        seen.append("mmcore.runs.checkpoints" in sys.modules)
        raise SystemExit(0)

    monkeypatch.delitem(sys.modules, "mmcore.runs.checkpoints")
    monkeypatch.delattr(mmcore.runs, "checkpoints")
    monkeypatch.setattr(mmcore.cli, "build_parser", build_parser)
    with pytest.raises(SystemExit):
        mmcore.cli.main(["eval", "RUN"])
    assert seen == [True]


@pytest.mark.parametrize("argv, loads", [
    (["run", "--resume", "RUN"], True), (["run", "--res=RUN"], True), (["run", "--set", "x=1", "--resume", "R"], True),
    (["run", "recipe.toml"], False), (["run", "recipe.toml", "--out", "o", "--overwrite"], False),
    (["eval", "RUN"], True), (["embed", "RUN"], True), (["index", "RUN"], True), (["search", "IDX"], True),
    (["export", "RUN"], True), (["validate", "recipe.toml"], False), (["--help"], False), ([], False),
])
def test_only_commands_that_load_checkpoints_import_torch_before_the_plugins(argv, loads):
    from mmcore.cli import _loads_checkpoints

    assert _loads_checkpoints(argv) is loads
