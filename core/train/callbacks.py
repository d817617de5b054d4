"""Lightning callbacks mmcore adds: RNG state in checkpoints, a checkpoint on interruption, stale best files, the
progress bar, and no CUDA probe per optimizer step on a CPU run."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import TQDMProgressBar

from .module import NonFiniteLoss


class RandomState(L.Callback):
    """Saves the torch/numpy/python RNG states in every checkpoint and restores them when training resumes, at
    ``on_train_start`` (after Lightning's sanity check, which may draw random numbers)."""

    def __init__(self):
        self.pending = None

    def state_dict(self) -> dict:
        import random

        numpy_state = np.random.get_state()
        return {
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "numpy": [numpy_state[0], numpy_state[1].tolist(), *numpy_state[2:]],
            "python": [random.getstate()[0], list(random.getstate()[1]), random.getstate()[2]],
        }

    def load_state_dict(self, state: dict) -> None:
        self.pending = state

    def on_train_start(self, trainer, module) -> None:
        import random

        if self.pending is None:
            return
        state, self.pending = self.pending, None
        torch.set_rng_state(state["torch"])
        if state["cuda"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda"])
        numpy_state = state["numpy"]
        np.random.set_state((numpy_state[0], np.array(numpy_state[1], dtype=np.uint32), *numpy_state[2:]))
        python_state = state["python"]
        random.setstate((python_state[0], tuple(python_state[1]), python_state[2]))


class InterruptCheckpoint(L.Callback):
    """Saves ``interrupted.ckpt`` when a run stops on SIGTERM, Ctrl-C or an error (not a non-finite loss, whose
    message names the last good checkpoint instead), once training has started: before that the model holds no
    trained state (a checkpoint that failed to load would be saved as untrained weights). A failure to write it
    (a full disk) is reported on stderr and does not replace the error that stopped the run.

    Lightning's own ``OnExceptionCheckpoint`` is not used: its presence makes ``fit(ckpt_path=None)`` silently
    resume from the newest checkpoint in the directory (Lightning#19827); mmcore resumes only when asked.
    """

    def __init__(self, path: Path):
        self.path = path
        self.started = False

    def on_train_start(self, trainer, module) -> None:
        self.started = True

    def on_exception(self, trainer, module, exception) -> None:
        if isinstance(exception, NonFiniteLoss) or not self.started:  # NaN: the weights may hold the bad step
            return
        try:
            # a whole training checkpoint, said explicitly: Lightning would note that it defaults to it
            trainer.save_checkpoint(self.path, weights_only=False)
        except Exception as exc:  # noqa: BLE001 - the error that stopped the run is the one to report
            print(f"mmcore: warning: could not write {self.path}: {type(exc).__name__}: {exc}", file=sys.stderr)


class DropOrphanBest(L.Callback):
    """On resume, deletes the ``best-*.ckpt`` files that the restored best-checkpoint callback does not track.

    A kill between an epoch's best and last checkpoint writes leaves a best file that ``last.ckpt`` (from the
    epoch before) does not know: the resumed run would never delete it and would write its own copy of that epoch
    under a ``-v1`` name. Nothing is deleted when the callback's state was not restored (a moved run directory).
    At the end, a ``best-*.ckpt`` the run was resumed from is deleted once a better one has replaced it."""

    def __init__(self, best):
        self.best = best

    def on_train_start(self, trainer, module) -> None:
        if trainer.ckpt_path is None or not trainer.is_global_zero or not self.best.best_k_models:
            return
        keep = {Path(path).resolve() for path in self.best.best_k_models}
        for path in Path(self.best.dirpath).glob("best-*.ckpt"):
            if path.resolve() not in keep:
                path.unlink(missing_ok=True)

    def on_train_end(self, trainer, module) -> None:
        """A run resumed from a ``best-*.ckpt`` (newer than ``last.ckpt`` when a kill fell between the two writes):
        Lightning never deletes the file it resumed from, even once a better one replaces it. Delete it then."""
        if trainer.ckpt_path is None or not trainer.is_global_zero:
            return
        resumed = Path(trainer.ckpt_path).resolve()
        tracked = {Path(path).resolve() for path in self.best.best_k_models}
        if resumed.name.startswith("best-") and resumed.parent == Path(self.best.dirpath).resolve() \
                and tracked and resumed not in tracked:
            resumed.unlink(missing_ok=True)


class RunProgressBar(TQDMProgressBar):
    """Lightning's tqdm progress bar (the loss, the rate) without ``v_num``: the loggers' version, which for an
    mmcore run is the name of its TensorBoard folder (``tb``), the same for every run, and tells a user nothing."""

    def get_metrics(self, trainer, pl_module) -> dict:
        metrics = super().get_metrics(trainer, pl_module)
        metrics.pop("v_num", None)
        return metrics


NVML_CHECK = "PYTORCH_NVML_BASED_CUDA_CHECK"
"""Set to 1 by Lightning's import: ``torch.cuda.is_available()`` then asks NVML rather than the CUDA runtime, so
that the check never initialises CUDA in a process that may still fork (``ddp_fork``, notebooks)."""


class CpuCudaProbe(L.Callback):
    """On a CPU run, training without Lightning's NVML-based CUDA check (:data:`NVML_CHECK`), which it is restored
    to when training ends.

    Every optimizer step asks ``torch.cuda.is_available()`` (``Optimizer._cuda_graph_capture_health_check``). On a
    CUDA build of torch with CUDA never initialised (any CPU run), the NVML-based answer is not cached: each step
    loads the NVML library again (``dlopen``), about 0.2 ms on the project's CPU machine, a tenth of a small
    model's step. Without the variable, torch asks the CUDA runtime once and caches the count. By
    ``on_train_start`` every process a strategy forks or spawns exists, and a CPU run's DataLoader workers never use
    CUDA, so the fork safety the variable buys is not needed while training. GPU runs are left as they are (CUDA
    is initialised there, and torch caches the count)."""

    def __init__(self):
        self.saved = None

    def on_train_start(self, trainer, module) -> None:
        if trainer.strategy.root_device.type == "cpu" and os.environ.get(NVML_CHECK) == "1":
            self.saved = os.environ.pop(NVML_CHECK)

    def _restore(self) -> None:
        if self.saved is not None:
            os.environ[NVML_CHECK], self.saved = self.saved, None

    def on_train_end(self, trainer, module) -> None:
        self._restore()

    def on_exception(self, trainer, module, exception) -> None:
        self._restore()
