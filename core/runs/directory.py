"""Run directories: choosing a fresh one, writing files atomically, and what a run records about its setting."""

from __future__ import annotations

import os
import platform
import shutil
import sys
from pathlib import Path

import attrs

from ..files import write_atomic  # noqa: F401 - re-exported: the run's files are written with it
from ..recipe import Recipe
from ..registry import Registry


class RunDirectoryError(Exception):
    """The run directory cannot be used: it holds a run already, is not writable, or lacks room; a launcher
    started several processes without ``--out``; there is nothing to resume."""


class RunDirectoryExists(RunDirectoryError):
    """The requested run directory already holds something (``--overwrite`` replaces it)."""


RUN_DIR_ENV = "MMCORE_RUN_DIR"
"""Set by the process that chose the run directory, so the processes Lightning starts for DDP use the same one."""


def launcher_rank() -> int:
    """This process's global rank as set by a launcher (Lightning's DDP children, torchrun, SLURM), else 0."""
    for name in ("RANK", "SLURM_PROCID", "LOCAL_RANK", "NODE_RANK"):
        value = os.environ.get(name, "")
        if value.isdigit() and int(value) > 0:
            return int(value)
    return 0


def make_run_dir(recipe: Recipe, out: str | Path | None = None, overwrite: bool = False) -> Path:
    """A fresh run directory: ``--out DIR`` (refused if it holds anything, unless ``overwrite``), else the first
    free ``<output_dir>/<recipe name>-<n>``.

    Only rank 0 chooses. Other ranks use the directory rank 0 exported (Lightning's DDP launcher starts them
    after the choice) or ``--out``; processes started independently by torchrun or SLURM must be given ``--out``.
    """
    if launcher_rank() > 0:
        if os.environ.get(RUN_DIR_ENV):
            return Path(os.environ[RUN_DIR_ENV])
        if out is None:
            raise RunDirectoryError("with several processes started by a launcher (torchrun, SLURM), give every "
                                     "process the same run directory with --out DIR")
        Path(out).mkdir(parents=True, exist_ok=True)
        return Path(out)
    path = _fresh_run_dir(recipe, out, overwrite)
    os.environ[RUN_DIR_ENV] = str(path.resolve())
    return path


def _fresh_run_dir(recipe: Recipe, out: str | Path | None, overwrite: bool) -> Path:
    if out is not None:
        path = Path(out)
        if path.exists() and (not path.is_dir() or any(path.iterdir())):
            if not overwrite:
                raise RunDirectoryExists(
                    f"{path} already exists and is not empty; pass --overwrite to replace it, or choose another --out")
            shutil.rmtree(path) if path.is_dir() else path.unlink()
        path.mkdir(parents=True, exist_ok=True)
        return path
    base = Path(recipe.output_dir)
    base.mkdir(parents=True, exist_ok=True)
    n = 1
    while True:
        path = base / f"{recipe.name}-{n}"
        try:
            path.mkdir()
            return path
        except FileExistsError:
            n += 1


def environment_record() -> dict:
    import lightning
    import torch

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "lightning": lightning.__version__,
        "platform": platform.platform(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "argv": sys.argv,
    }


def plugins_record(registry: Registry) -> list:
    return [attrs.asdict(p) for p in registry.plugins]


MODEL_FILE = "model.json"
"""What a run's model needs besides its recipe and weights, so it loads without its training data."""


def model_record(module) -> dict:
    """The ``model.json`` of a run: each modality's input spec, the observed and trained pairs, the class names
    and the evaluators' summary metrics."""
    return {
        "inputs": {m: spec.to_dict() for m, spec in module.inputs.items()},
        "observed_pairs": sorted(sorted(p) for p in module.observed_pairs),
        "trained_pairs": sorted(sorted(p) for p in module.trained_pairs),
        "class_names": list(module.class_names),
        "prompts": list(module.prompts),
        "summary_metrics": list(module.summary_metrics),
    }


def check_writable(run_dir: Path, module) -> None:
    """Fail before training, not after an hour: the run directory must be writable and have room for two
    checkpoints (weights plus Adam's two moments) and a margin."""
    probe = run_dir / ".write-test"
    try:
        probe.write_bytes(b"0" * 4096)
        probe.unlink()
    except OSError as exc:
        raise RunDirectoryError(f"cannot write to {run_dir}: {exc.strerror or exc}") from exc
    params = sum(p.numel() * p.element_size() for p in module.parameters())
    need = 2 * 3 * params + 64 * 2**20
    free = shutil.disk_usage(run_dir).free
    if free < need:
        raise RunDirectoryError(f"not enough free space in {run_dir}: {free / 2**20:.0f} MiB free, about "
                                 f"{need / 2**20:.0f} MiB needed for checkpoints")
