"""Run directories: choosing a fresh one, writing files atomically, and what a run records about its setting."""

from __future__ import annotations

import os
import platform
import shutil
import sys
from pathlib import Path

import attrs

from ..files import replace_refusal, temporary_target
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
    """A fresh run directory: ``--out DIR`` (refused if it holds anything, unless ``overwrite`` and it holds a run
    that :func:`check_replaceable` allows replacing: that run is deleted), else the first free
    ``<output_dir>/<recipe name>-<n>``.

    Only rank 0 chooses. Other ranks use the directory rank 0 exported (Lightning's DDP launcher starts them
    after the choice) or ``--out``; processes started independently by torchrun or SLURM must be given ``--out``.
    The CLI replaces a run more carefully (:func:`set_aside`: the old run is kept until the new one has started).
    """
    if launcher_rank() > 0:
        if os.environ.get(RUN_DIR_ENV):
            return Path(os.environ[RUN_DIR_ENV])
        if out is None:
            raise RunDirectoryError("with several processes started by a launcher (torchrun, SLURM), give every "
                                     "process the same run directory with --out DIR")
        Path(out).mkdir(parents=True, exist_ok=True)
        return Path(out)
    if out is not None and check_replaceable(out, overwrite) is not None:
        shutil.rmtree(out)
    path = _fresh_run_dir(recipe, out)
    os.environ[RUN_DIR_ENV] = str(path.resolve())
    return path


def _fresh_run_dir(recipe: Recipe, out: str | Path | None) -> Path:
    if out is not None:
        path = Path(out)
        path.mkdir(parents=True, exist_ok=True)
        return path
    base = Path(recipe.output_dir)
    base.mkdir(parents=True, exist_ok=True)
    n = 1
    while True:
        path = base / f"{recipe.name}-{n}"
        if path.resolve().parent != base.resolve():  # the schema allows one path component only; never trust it
            raise RunDirectoryError(f"name: {recipe.name!r} would put the run outside output_dir {base}")
        try:
            path.mkdir()
            return path
        except FileExistsError:
            n += 1


RUN_ENTRIES = frozenset({
    "recipe.toml", "sources", "plugins.json", "environment.json", "model.json", "metrics.json", "pairs.json",
    "checkpoints", "tb", "csv", "mlflow", "wandb", "recall_heatmap.png", "embeddings_2d.png", ".write-test",
})
"""Everything ``mmcore run`` writes at the top of a run directory; ``--overwrite`` replaces only such folders."""


def _written_by_run(name: str) -> bool:
    """Whether ``mmcore run`` writes ``name`` at the top of a run directory (its own ``.<name>.tmp-<pid>`` too)."""
    return name in RUN_ENTRIES or temporary_target(name) is not None


def check_replaceable(out: str | Path, overwrite: bool) -> Path | None:
    """Check ``--out`` before anything is built or written. Returns the existing run to replace (``overwrite``
    and ``out`` holds one), else None (``out`` is free, or an empty directory). Raises
    :class:`RunDirectoryExists` when ``out`` holds something and ``overwrite`` is false, and
    :class:`RunDirectoryError` when ``overwrite`` would delete what is not a finished or stopped run: a file, a
    folder with files mmcore did not write, the working directory or one above it, a run still training."""
    path = Path(out)
    if not (path.exists() or path.is_symlink()) or (path.is_dir() and not path.is_symlink()
                                                     and not any(path.iterdir())):
        return None
    if not overwrite:
        raise RunDirectoryExists(
            f"{path} already exists and is not empty; pass --overwrite to replace it, or choose another --out")
    problem = replace_refusal(path, "recipe.toml", _written_by_run, "a run directory")
    if problem:
        raise RunDirectoryError(problem)
    check_unlocked(path)
    return path


def set_aside(run: Path) -> Path:
    """Rename the run ``--overwrite`` replaces to a hidden sibling, so that the new run starts in an empty folder
    while the old one can still come back (:func:`restore`); :func:`discard` deletes it once training started."""
    aside = run.with_name(f".{run.name}.replaced-{os.getpid()}")
    if aside.exists():
        shutil.rmtree(aside)
    os.replace(run, aside)
    return aside


def restore(aside: Path, run: Path) -> None:
    """Put back a run set aside: the new run's folder (made by this process, not started) is removed first."""
    if run.is_dir():
        shutil.rmtree(run)
    os.replace(aside, run)


def discard(aside: Path) -> None:
    shutil.rmtree(aside, ignore_errors=True)


class HandOver:
    """The replacement of a run set aside by ``--overwrite`` (:func:`set_aside`; ``aside`` None when nothing is
    replaced): once training has started the old run is deleted; when the new one fails before that, it comes
    back (:meth:`settle`, called however ``mmcore run`` ends)."""

    def __init__(self, aside: Path | None):
        self.aside = aside
        self.started = False

    def callbacks(self) -> list:
        """A Lightning callback that discards the old run at ``on_train_start`` (none when nothing is replaced)."""
        if self.aside is None:
            return []
        import lightning as L

        handover = self

        class DiscardReplacedRun(L.Callback):
            def on_train_start(self, trainer, module) -> None:
                handover.started = True
                discard(handover.aside)

        return [DiscardReplacedRun()]

    def settle(self, run_dir: Path) -> None:
        if self.aside is None or not self.aside.exists():
            return
        if self.started:
            discard(self.aside)
        else:
            restore(self.aside, run_dir)
            print(f"mmcore: the new run did not start; the run that was in {run_dir} is back", file=sys.stderr)


_LOCKS: dict = {}
"""Open file descriptors of the run directories this process holds locked (released when it exits)."""


def _try_lock(path: Path):
    try:
        import fcntl
    except ImportError:  # Windows: no advisory locks; a second trainer is not detected there
        return None
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise RunDirectoryError(f"{path} is in use by another mmcore process (a run still training or resuming "
                                "there); wait for it to end, or stop it first") from None
    return fd


def lock_run_dir(path: str | Path) -> None:
    """Hold an exclusive advisory lock (``flock``) on the run directory until :func:`unlock_run_dir`, so that a
    second ``--resume`` or ``--overwrite`` of a run that is still training is refused instead of putting two
    trainers in one folder. The lock goes with the process, however it ends (SIGKILL included)."""
    key = str(Path(path).resolve())
    if key not in _LOCKS:
        _LOCKS[key] = _try_lock(Path(path))


def unlock_run_dir(path: str | Path) -> None:
    fd = _LOCKS.pop(str(Path(path).resolve()), None)
    if fd is not None:
        os.close(fd)


def check_unlocked(path: str | Path) -> None:
    """Raise :class:`RunDirectoryError` when another process holds ``path``'s lock."""
    if str(Path(path).resolve()) in _LOCKS:
        return
    fd = _try_lock(Path(path))
    if fd is not None:
        os.close(fd)


RESUMABLE_CHANGES = ("trainer.max_epochs", "trainer.accelerator", "trainer.devices", "trainer.num_nodes",
                     "trainer.strategy", "trainer.num_workers", "trainer.log_every_n_steps", "trainer.on_nonfinite",
                     "trainer.deterministic", "trainer.embed_chunk", "trainer.val_every_n_epochs", "logger",
                     "output_dir", "evaluators")
"""What ``--resume --set`` may change: where and how long the run goes on, how often it validates (the best
checkpoint is the best of the validations there were), where it also logs (each logger of ``[logger]`` logs what
follows), and what it measures at the end. Everything else (data, encoders, anchor, loss, optimizer, seed, batch
size, precision, drop_last, limit_train_batches, ...) shapes the checkpoint or the trajectory it continues, and a
changed value would silently make another run under the old one's name. Not resumable either: ``max_steps`` (a
run it stopped ended mid-epoch), ``limit_val_batches`` and ``val_check_interval`` (the best checkpoint compares
``val/loss`` of one kind of validation), ``checkpoint`` and ``checkpoint_every_n_epochs`` (Lightning restores the
checkpoint callbacks' state by their settings: changed, the best one would restart and leave its old file)."""


def _flat(data, prefix: str = "") -> dict:
    if isinstance(data, dict):
        out = {}
        for key, value in data.items():
            out.update(_flat(value, f"{prefix}{key}."))
        return out
    return {prefix[:-1]: data}


def refused_resume_changes(stored: dict, resumed: dict) -> list:
    """The ``"<key>: <old> -> <new>"`` lines for settings of a resumed recipe (``resumed``) that differ from the
    run's own (``stored``, both as plain dicts) and that a resume may not change (not in
    :data:`RESUMABLE_CHANGES`)."""
    old, new = _flat(stored), _flat(resumed)
    allowed = lambda key: any(key == a or key.startswith(a + ".") for a in RESUMABLE_CHANGES)  # noqa: E731
    return [f"{key}: {old.get(key, '(unset)')!r} -> {new.get(key, '(unset)')!r}"
            for key in sorted(set(old) | set(new)) if old.get(key) != new.get(key) and not allowed(key)]


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
