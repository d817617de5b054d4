"""Checking ``[trainer]`` against Lightning before anything is built or written.

The schema checks types; whether Lightning can run ``accelerator``, ``devices``, ``strategy``, ``num_nodes`` and
``precision`` on this machine (a GPU present, DeepSpeed installed, a precision name it knows) only Lightning can
say. :func:`check_trainer` asks it, by constructing a bare ``lightning.Trainer`` with those settings: a few
milliseconds, no logger, no checkpoints, nothing written (a DDP strategy starts its processes in ``fit``, not in the
constructor). One thing Lightning accepts is refused too: ``num_nodes > 1`` with no cluster to join, which would
wait for the other nodes forever.
"""

from __future__ import annotations

import contextlib
import logging
import tempfile
import warnings

from ..recipe import Recipe, RecipeError

KEYS = ("accelerator", "devices", "num_nodes", "strategy", "precision")
"""The ``[trainer]`` settings Lightning checks, in the order each is added when looking for the culprit."""


@contextlib.contextmanager
def _quiet():
    """Lightning's notes and warnings of the constructor (``GPU available: ...``) are printed once, by the run's
    own Trainer, not by this check too."""
    loggers = [logging.getLogger(name) for name in ("lightning.pytorch", "lightning.fabric")]
    levels = [logger.level for logger in loggers]
    try:
        for logger in loggers:
            logger.setLevel(logging.ERROR)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


def _construct(settings: dict) -> Exception | None:
    """The exception Lightning raises for a bare Trainer with ``settings``, or None."""
    import lightning as L

    with tempfile.TemporaryDirectory(prefix="mmcore-check-") as root, _quiet():
        try:
            trainer = L.Trainer(**settings, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                                enable_model_summary=False, default_root_dir=root)
        except Exception as exc:  # noqa: BLE001 - MisconfigurationException, ValueError, TypeError, ImportError...
            return exc
    return _lonely_node(trainer)


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


def check_trainer(recipe: Recipe) -> None:
    """RecipeError ``trainer.<key>: <value>: <Lightning's message>`` unless Lightning accepts the recipe's
    accelerator, devices, num_nodes, strategy and precision on this machine (and, for several nodes, there is a
    cluster to join). The key is the first of :data:`KEYS`
    whose addition makes the construction fail (``strategy = "fsdp"`` with ``accelerator = "cpu"`` names the
    strategy)."""
    t = recipe.trainer
    if t.embed_chunk and str(t.precision) in ("16", "16-mixed"):
        raise RecipeError([f"trainer.embed_chunk: {t.embed_chunk} (the cached step) cannot run with precision = "
                           f"{t.precision!r}: it back-propagates its chunks inside the step, outside Lightning's fp16 "
                           'loss scaler; use precision = "bf16-mixed" or "32-true"'])
    settings = {key: getattr(t, key) for key in KEYS}
    error = _construct(settings)
    if error is None:
        return
    culprit = KEYS[-1]
    for i, key in enumerate(KEYS):
        failed = _construct({k: settings[k] for k in KEYS[:i + 1]})
        if failed is not None:
            culprit, error = key, failed
            break
    message = " ".join(str(error).split()) or type(error).__name__
    raise RecipeError([f"trainer.{culprit}: {settings[culprit]!r} is refused by Lightning on this machine: {message}"])
