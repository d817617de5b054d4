"""Training a recipe into a run directory: the Trainer (callbacks, logger), fit, test, and the run's files.

Lightning owns the loop, devices (``accelerator = "auto"``), DDP, checkpoints, progress bars and logging.
A run directory holds ``recipe.toml`` (resolved), ``sources/`` (the files of the extends chain), ``plugins.json``,
``environment.json``, ``metrics.json``, ``checkpoints/`` and ``tb/`` (TensorBoard events). It is never reused
silently.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import warnings
from pathlib import Path

import lightning as L

from ..recipe import Recipe, dump_toml, recipe_to_dict
from ..registry import Registry, get_registry
from ..train.build import assemble
from ..train.callbacks import DropOrphanBest, InterruptCheckpoint, RandomState
from ..train.data import resume_position
from .checkpoints import (CheckpointFiles, load_checkpoint, remove_stale_temporaries,
                          resume_checkpoint)
from .directory import (MODEL_FILE, check_writable, environment_record, launcher_rank, model_record,
                        plugins_record, write_atomic)


def _flatten(data, prefix: str = "") -> dict:
    out = {}
    if isinstance(data, dict):
        for key, value in data.items():
            out.update(_flatten(value, f"{prefix}{key}."))
    elif isinstance(data, list) and data and all(isinstance(v, dict) for v in data):
        for i, value in enumerate(data):
            out.update(_flatten(value, f"{prefix}{i}."))
    else:
        out[prefix[:-1]] = data if isinstance(data, (int, float, str, bool)) else str(data)
    return out


def make_trainer(recipe: Recipe, run_dir: Path, **overrides) -> L.Trainer:
    from lightning.pytorch.callbacks import ModelCheckpoint
    from lightning.pytorch.loggers import TensorBoardLogger

    t = recipe.trainer
    interactive = sys.stdout.isatty() and os.environ.get("CI", "").lower() not in ("1", "true")
    # best-by-validation-loss, and last.ckpt at every epoch end. Not `save_last=True` on the monitored checkpoint:
    # Lightning rewrites that last.ckpt only in epochs where the best one changes, so it goes stale.
    best = ModelCheckpoint(
        dirpath=run_dir / "checkpoints", filename="best-epoch{epoch}-step{step}", auto_insert_metric_name=False,
        monitor="val/loss", mode="min", save_top_k=1,
    )
    last = ModelCheckpoint(dirpath=run_dir / "checkpoints", filename="last", monitor=None, save_top_k=1,
                           every_n_epochs=1, enable_version_counter=False)
    options = dict(
        max_epochs=t.max_epochs,
        accelerator=t.accelerator,
        devices=t.devices,
        strategy=t.strategy,
        num_nodes=t.num_nodes,
        precision=t.precision,
        log_every_n_steps=t.log_every_n_steps,
        gradient_clip_val=t.gradient_clip_val or None,
        deterministic=t.deterministic,
        logger=TensorBoardLogger(save_dir=str(run_dir), name="", version="tb", default_hp_metric=False),
        # last.ckpt at every epoch end (exact resume); interrupted.ckpt when a run stops on SIGTERM/Ctrl-C/error
        callbacks=[best, last, RandomState(), InterruptCheckpoint(run_dir / "checkpoints" / "interrupted.ckpt"),
                   DropOrphanBest(best)],
        # checkpoints written next to their target and renamed (not staged in $TMPDIR), loaded with weights_only
        plugins=[CheckpointFiles()],
        default_root_dir=str(run_dir),
        enable_progress_bar=interactive,
        enable_model_summary=interactive,
    )
    options.update(overrides)
    return L.Trainer(**options)


def train(recipe: Recipe, sources: list, run_dir: Path, registry: Registry | None = None,
          module_data: tuple | None = None, resume: Path | bool = False, callbacks: tuple = ()) -> dict:
    """Train and evaluate a recipe into ``run_dir`` (already created). Returns the test metrics.

    ``resume``: continue from a checkpoint of ``run_dir`` with the optimizer, schedule, temperatures, strategy
    parameters, epoch and RNG states it holds: the path the CLI chose with
    :func:`mmcore.runs.checkpoints.resume_checkpoint`, or True to choose it here (its note goes to stderr). From
    an epoch-end checkpoint (``last.ckpt``, written at every epoch end) the resumed run reaches the same final
    state as an uninterrupted one, as the data order depends only on (seed, epoch).
    ``callbacks``: Lightning callbacks added to mmcore's own (the CLI's hands over a replaced run once training
    has started).
    """
    registry = registry or get_registry()
    module, data = module_data or assemble(recipe, registry)
    ckpt_path = None
    if resume is True:
        ckpt_path, note = resume_checkpoint(run_dir)
        if note:
            print(f"mmcore: {note}", file=sys.stderr)
    elif resume:
        ckpt_path = Path(resume)
    if ckpt_path is not None:
        data.resume_position = resume_position(load_checkpoint(ckpt_path, mmap=True))
    if launcher_rank() == 0:
        check_writable(run_dir, module)
        write_atomic(run_dir / "recipe.toml", dump_toml(recipe_to_dict(recipe)))
        if resume:
            remove_stale_temporaries(run_dir / "checkpoints")  # of a writer killed mid-write
        else:
            (run_dir / "sources").mkdir(exist_ok=True)
            for i, source in enumerate(sources):
                shutil.copyfile(source, run_dir / "sources" / f"{i}-{Path(source).name}")
        write_atomic(run_dir / "plugins.json", json.dumps(plugins_record(registry), indent=2))
        write_atomic(run_dir / MODEL_FILE, json.dumps(model_record(module), indent=2))
        write_atomic(run_dir / "environment.json", json.dumps(environment_record(), indent=2))

    trainer = make_trainer(recipe, run_dir)
    trainer.callbacks.extend(callbacks)
    with warnings.catch_warnings():
        # mmcore's sampler goes on from the checkpoint's batch (BindingData.resume_position): Lightning's warning
        # that a mid-epoch checkpoint of a non-resumable loader is unreliable does not apply
        warnings.filterwarnings("ignore", message=".*resuming from a checkpoint that ended before the epoch ended")
        trainer.fit(module, datamodule=data, ckpt_path=ckpt_path, weights_only=True if ckpt_path else None)
    trainer.test(module, datamodule=data, verbose=False)
    metrics = module.test_metrics
    if trainer.is_global_zero:
        from .figures import have_matplotlib, write_run_pictures

        write_atomic(run_dir / "metrics.json", json.dumps(metrics, indent=2, sort_keys=True))
        pairs = {"trained": sorted(sorted(p) for p in module.trained_pairs),
                 "observed": sorted(sorted(p) for p in module.observed_pairs)}
        write_atomic(run_dir / "pairs.json", json.dumps(pairs, indent=2))
        write_run_pictures(run_dir, module.test_split, metrics, trainer.logger.experiment, trainer.global_step,
                           module.summary_metrics)
        if not have_matplotlib():
            print("mmcore: figures skipped (pip install matplotlib to get PNGs)", file=sys.stderr)
        trainer.logger.log_hyperparams(_flatten(recipe_to_dict(recipe)),
                                       metrics={f"test/{k}": v for k, v in metrics.items()})
        trainer.logger.finalize("success")
    return metrics
