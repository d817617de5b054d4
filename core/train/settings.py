"""Checking ``[trainer]`` against Lightning (and ``[logger]``'s packages) before anything is built or written.

The schema checks types; whether Lightning can run ``accelerator``, ``devices``, ``strategy``, ``num_nodes`` and
``precision`` on this machine (a GPU present, DeepSpeed installed, a precision name it knows) only Lightning can
say. :func:`check_trainer` asks it, by constructing a bare ``lightning.Trainer`` with those settings: a few
milliseconds, no logger, no checkpoints, nothing written (a DDP strategy starts its processes in ``fit``, not in the
constructor). Two things Lightning accepts are refused too: ``num_nodes > 1`` with no cluster to join, which would
wait for the other nodes forever, and ``drop_last = false`` in several processes (ranks' batches of unequal size).
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import tempfile
import warnings

from ..recipe import Recipe, RecipeError

KEYS = ("accelerator", "devices", "num_nodes", "strategy", "precision")
"""The ``[trainer]`` settings Lightning checks, in the order each is added when looking for the culprit."""


@contextlib.contextmanager
def lightning_logs_at(level: int):
    """Lightning's loggers (``lightning.pytorch``, ``lightning.fabric``) at ``level`` inside the block, as they
    were after it."""
    loggers = [logging.getLogger(name) for name in ("lightning.pytorch", "lightning.fabric")]
    levels = [logger.level for logger in loggers]
    try:
        for logger in loggers:
            logger.setLevel(level)
        yield
    finally:
        for logger, previous in zip(loggers, levels):
            logger.setLevel(previous)


@contextlib.contextmanager
def _quiet():
    """Lightning's notes and warnings of the constructor (``GPU available: ...``) are printed once, by the run's
    own Trainer, not by this check too."""
    with lightning_logs_at(logging.ERROR), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def construct_trainer(settings: dict) -> tuple:
    """``(trainer, None)`` for a bare Trainer with ``settings`` (Lightning's notes and warnings silenced, nothing
    written, no process started), or ``(None, the exception Lightning raises)``."""
    import lightning as L

    with tempfile.TemporaryDirectory(prefix="mmcore-check-") as root, _quiet():
        try:
            trainer = L.Trainer(**settings, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                                enable_model_summary=False, default_root_dir=root)
        except Exception as exc:  # noqa: BLE001 - MisconfigurationException, ValueError, TypeError, ImportError...
            return None, exc
    error = _lonely_node(trainer)
    return (None, error) if error else (trainer, None)


def _lonely_node(trainer) -> Exception | None:
    """Several nodes with no cluster to join: no launcher (SLURM, torchrun, MPI, ...) was detected and no
    ``MASTER_ADDR`` is set for a manual launch, so the first process would wait for the others forever."""
    import os

    from lightning.fabric.plugins.environments import LightningEnvironment

    environment = getattr(trainer.strategy, "cluster_environment", None)
    if trainer.num_nodes > 1 and isinstance(environment, LightningEnvironment) and "MASTER_ADDR" not in os.environ:
        return ValueError(f"{trainer.num_nodes} nodes, but this process was not started by a cluster launcher "
                          "(SLURM, torchrun, MPI) and MASTER_ADDR / NODE_RANK are not set: it would wait for the "
                          "other nodes forever")
    return None


LOGGER_PACKAGES = (("mlflow", "mlflow", "mlflow-skinny"), ("wandb", "wandb", "wandb"))
"""``[logger]`` keys whose Lightning logger needs a package mmcore does not install: (key, module, pip name)."""


def _check_drop_last(recipe: Recipe, trainer) -> None:
    """``drop_last = false`` needs a single process: the last, smaller batch of one rank would meet full batches of
    the others in the cross-rank gather of the embeddings, which needs every rank's batch to have one shape."""
    from lightning.pytorch.strategies import ParallelStrategy

    t = recipe.trainer
    if t.drop_last or (trainer.world_size == 1 and not isinstance(trainer.strategy, ParallelStrategy)):
        return
    raise RecipeError([f"trainer.drop_last: false needs a single process without a distributed strategy; this "
                       f"recipe trains in {trainer.world_size} process{'es' if trainer.world_size > 1 else ''} with "
                       f"{type(trainer.strategy).__name__} (devices = "
                       f"{t.devices!r}, num_nodes = {t.num_nodes}, strategy = {t.strategy!r}): the cross-rank gather "
                       "of each step's embeddings needs every process's batch to have the same shape, so the last "
                       "partial batch is always left out there"])


def check_trainer(recipe: Recipe) -> None:
    """RecipeError ``trainer.<key>: <value>: <Lightning's message>`` unless Lightning accepts the recipe's
    accelerator, devices, num_nodes, strategy and precision on this machine (and, for several nodes, there is a
    cluster to join); that ``drop_last = false`` runs in one process; that the ``[logger]``'s packages are
    installed. The key is the first of :data:`KEYS`
    whose addition makes the construction fail (``strategy = "fsdp"`` with ``accelerator = "cpu"`` names the
    strategy)."""
    t = recipe.trainer
    if t.embed_chunk and str(t.precision) in ("16", "16-mixed"):
        raise RecipeError([f"trainer.embed_chunk: {t.embed_chunk} (the cached step) cannot run with precision = "
                           f"{t.precision!r}: it back-propagates its chunks inside the step, outside Lightning's fp16 "
                           'loss scaler; use precision = "bf16-mixed" or "32-true"'])
    missing = [f"logger.{key}: true needs {module}, which is not installed: pip install {package}"
               for key, module, package in LOGGER_PACKAGES
               if getattr(recipe.logger, key) and importlib.util.find_spec(module) is None]
    if missing:
        raise RecipeError(missing)
    settings = {key: getattr(t, key) for key in KEYS}
    trainer, error = construct_trainer(settings)
    if error is None:
        _check_drop_last(recipe, trainer)
        return
    culprit = KEYS[-1]
    for i, key in enumerate(KEYS):
        _, failed = construct_trainer({k: settings[k] for k in KEYS[:i + 1]})
        if failed is not None:
            culprit, error = key, failed
            break
    message = " ".join(str(error).split()) or type(error).__name__
    raise RecipeError([f"trainer.{culprit}: {settings[culprit]!r} is refused by Lightning on this machine: {message}"])
