"""Checkpoint files: written whole or not at all, loaded without running code, and the one to resume from.

* Writing (:func:`save_checkpoint`, and :class:`CheckpointFiles`, the Lightning ``CheckpointIO`` plugin the
  Trainer uses): the file is serialised into ``.<name>.tmp-<pid>`` next to the target, flushed, fsync'ed and
  renamed over it, then the directory is fsync'ed. A kill or a full disk leaves the old file or the new one,
  never a part of one; Lightning's own writer stages the file in ``$TMPDIR``, and when that is another filesystem
  its "rename" is a copy that a kill cuts short.
* Loading (:func:`load_checkpoint`): always ``weights_only=True`` (no code in the file runs), through the
  ``torch.load`` this module found when it was imported. The CLI imports it before any plugin, so a plugin that
  wraps ``torch.load`` cannot turn that off (plugins are trusted code in every other way).
* Resuming (:func:`resume_checkpoint`): the newest whole checkpoint of a run, by the step stored in it, with a
  note when it is not ``last.ckpt``.
"""

from __future__ import annotations

import os
import pickle
import re
import zipfile
from pathlib import Path

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

from ..files import atomic_output, temporary_target
from ..train.data import resume_position
from .directory import RunDirectoryError

_torch_load = torch.serialization.load
"""The real ``torch.load``, taken when this module is imported (before plugins are, in the CLI)."""

TRAINING_KEYS = ("state_dict", "optimizer_states", "loops", "epoch", "global_step")
"""What Lightning needs from a checkpoint to continue training from it."""


def load_checkpoint(path: str | Path, map_location="cpu", mmap: bool = False) -> dict:
    """Load a checkpoint with ``weights_only=True`` (tensors and plain containers only: a file carrying code is
    refused with ``pickle.UnpicklingError``), whatever a plugin did to ``torch.load``. ``mmap``: map the tensors
    instead of reading them (zip-format files only)."""
    return _torch_load(path, map_location=map_location, weights_only=True, mmap=mmap)


def save_checkpoint(checkpoint: dict, path: str | Path) -> None:
    """Write ``checkpoint`` to ``path`` atomically (see the module docstring). An ``OSError`` (a full disk, an I/O
    error) names ``path`` and leaves whatever was there before untouched, with no temporary file left behind."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with atomic_output(path) as tmp, open(tmp, "wb") as handle:
            try:
                torch.save(checkpoint, handle)
            except RuntimeError as exc:  # torch's zip writer reports a failed write as a RuntimeError
                if isinstance(exc.__context__, OSError):
                    raise exc.__context__ from exc
                raise
            handle.flush()
            os.fsync(handle.fileno())
    except OSError as exc:
        if exc.filename == str(path):
            raise
        raise OSError(exc.errno, exc.strerror or str(exc), str(path)) from exc


class CheckpointFiles(TorchCheckpointIO):
    """Lightning's ``CheckpointIO`` for mmcore runs: :func:`save_checkpoint` and :func:`load_checkpoint` (so the
    Trainer's own resume loads with ``weights_only=True`` through the real ``torch.load`` too)."""

    def save_checkpoint(self, checkpoint: dict, path, storage_options=None) -> None:
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} does not take storage_options")
        save_checkpoint(checkpoint, path)

    def load_checkpoint(self, path, map_location=lambda storage, loc: storage, weights_only=None) -> dict:
        if not Path(path).is_file():
            raise FileNotFoundError(f"Checkpoint file not found: {path}")
        return load_checkpoint(path, map_location=map_location)


def remove_stale_temporaries(folder: str | Path) -> list:
    """Delete the temporary checkpoint files (``.<name>.ckpt.tmp-<pid>``) a killed writer left in ``folder``;
    nothing else is touched. Call it only while no other process writes there (the run is locked). Returns the
    paths removed."""
    folder = Path(folder)
    stale = [p for p in folder.iterdir() if (temporary_target(p) or "").endswith(".ckpt") and p.is_file()] \
        if folder.is_dir() else []
    for path in stale:
        path.unlink(missing_ok=True)
    return stale


def _candidates(folder: Path) -> list:
    """``last.ckpt``, ``interrupted.ckpt`` and the ``best-*.ckpt`` files in ``folder``, in the order that breaks
    a tie in global step (the epoch-end ``last.ckpt`` first)."""
    names = ["last.ckpt", "interrupted.ckpt"] + sorted(p.name for p in folder.glob("best-*.ckpt"))
    return [folder / name for name in names if (folder / name).is_file()]


def _first_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return (lines[0] if lines else "")[:160]


def inspect_checkpoint(path: Path) -> tuple:
    """``(facts, "")`` for a whole training checkpoint, where ``facts`` holds its ``global_step``, ``epoch``
    and ``batches`` (training batches done in the epoch it was saved in, None at an epoch's end), else
    ``(None, why)``: why it cannot be resumed from, starting with ``"refused"`` when its unpickling was refused
    (it holds code or objects that are not weights). The tensors are mapped, not read: this is cheap."""
    try:
        size = path.stat().st_size
        if size == 0:
            return None, "empty (0 bytes)"
        if not zipfile.is_zipfile(path):  # mmcore writes the zip format only; a truncated one lost its directory
            return None, f"not a whole checkpoint ({size} bytes: cut short, or not written by mmcore)"
        try:
            state = load_checkpoint(path, mmap=True)
        except (pickle.UnpicklingError, OSError):
            raise
        except Exception:  # noqa: BLE001 - perhaps a filesystem that cannot map files: read it all instead
            state = load_checkpoint(path)
    except pickle.UnpicklingError as exc:
        if any(sign in str(exc) for sign in _REFUSALS):
            found = re.search(r"GLOBAL [\w.]+", str(exc))
            return None, (f"refused: it holds code or objects that are not weights{f': {found[0]}' if found else ''} "
                          "(not written by mmcore: was it tampered with?); it was not loaded")
        return None, f"damaged (UnpicklingError: {_first_line(exc)})"
    except OSError as exc:
        return None, f"unreadable ({exc.strerror or exc})"
    except Exception as exc:  # noqa: BLE001 - whatever torch's reader says of a damaged file, it is damaged
        return None, f"damaged ({type(exc).__name__}: {_first_line(exc)})"
    missing = [key for key in TRAINING_KEYS if not isinstance(state, dict) or key not in state]
    if missing:
        return None, f"not a training checkpoint (no {', '.join(missing)})"
    try:
        return _facts(state), ""
    except (AttributeError, KeyError, TypeError, ValueError) as exc:
        return None, f"not a training checkpoint ({type(exc).__name__}: {_first_line(exc)})"


_REFUSALS = ("GLOBAL", "Can only create new object", "Can only build")
"""What torch's weights-only unpickler says when it refuses an object (code, a class), not a damaged byte."""


def _facts(state: dict) -> dict:
    """The global step, epoch and (for a checkpoint saved mid-epoch) the training batches done in that epoch, of
    a loaded checkpoint (:func:`mmcore.train.data.resume_position` reads where its fit goes on)."""
    _, done = resume_position(state)
    return {"global_step": int(state["global_step"]), "epoch": int(state["epoch"]), "batches": done or None}


def checkpoint_policy(run_dir: str | Path) -> str | None:
    """The ``trainer.checkpoint`` setting a run was trained with (``"best_and_last"``, ``"last"``, ``"none"``), read
    from its ``recipe.toml``; None when that cannot be read. For messages about checkpoints that are missing because
    the run never wrote them."""
    import tomllib

    try:
        with open(Path(run_dir) / "recipe.toml", "rb") as file:
            value = tomllib.load(file).get("trainer", {}).get("checkpoint", "best_and_last")
    except (OSError, ValueError, AttributeError):
        return None
    return value if isinstance(value, str) else None


def not_written(run_dir: str | Path, wanted: str) -> str:
    """``"; the run was trained with trainer.checkpoint = ..."`` when that setting explains why ``wanted``
    (``"any"`` checkpoint or ``"best"``) is missing, else ``""``."""
    policy = checkpoint_policy(run_dir)
    if policy == "none":
        return ('; the run was trained with trainer.checkpoint = "none", which writes no checkpoint (train with '
                '"last" or "best_and_last" to resume, evaluate, embed or export it)')
    if policy == "last" and wanted == "best":
        return '; the run was trained with trainer.checkpoint = "last", which keeps no best checkpoint'
    return ""


def resume_checkpoint(run_dir: str | Path) -> tuple:
    """The checkpoint to resume ``run_dir`` from -> ``(path, note)``: the whole one with the highest global step
    among ``last.ckpt``, ``interrupted.ckpt`` and ``best-*.ckpt`` (``last.ckpt`` on a tie). ``note`` is None for
    ``last.ckpt`` when nothing else is to be said, else one line ``resuming from PATH: ...`` saying why another
    file was chosen (which files are damaged or refused, and why) and, for a checkpoint saved mid-epoch, after
    how many batches of its epoch it goes on. Reads only; raises :class:`RunDirectoryError` naming each
    file and its fault when there is nothing to resume from."""
    folder = Path(run_dir) / "checkpoints"
    candidates = _candidates(folder) if folder.is_dir() else []
    if not candidates:
        why = not_written(run_dir, "any")
        if why:
            raise RunDirectoryError(f"nothing to resume: {folder} holds no checkpoint{why}")
        raise RunDirectoryError(
            f"nothing to resume: {folder} holds no checkpoint (the run stopped before its first checkpoint was "
            f"written); start it again (mmcore run RECIPE --out {run_dir} --overwrite replaces this folder)")
    whole, faults = [], []
    for rank, path in enumerate(candidates):
        facts, why = inspect_checkpoint(path)
        if facts is None:
            faults.append(f"{path.name} {'was ' + why if why.startswith('refused') else 'is ' + why}")
        else:
            whole.append(((facts["global_step"], -rank), path, facts))
    if not whole:
        raise RunDirectoryError(f"nothing to resume in {run_dir}: no whole checkpoint: {'; '.join(faults)}")
    _, chosen, facts = max(whole, key=lambda item: item[0])
    parts = list(faults)
    last = next((f for _, p, f in whole if p.name == "last.ckpt"), None)
    if chosen.name != "last.ckpt" and last is not None:
        parts.append(f"it is newer than last.ckpt (step {facts['global_step']}, last.ckpt step {last['global_step']})")
    if facts["batches"] is not None:
        parts.append(f"it was saved during epoch {facts['epoch']} after {facts['batches']} batches; the run goes on "
                     "from the next batch")
    if chosen.name == "last.ckpt" and not parts:
        return chosen, None
    return chosen, f"resuming from {chosen}: " + "; ".join(parts)
