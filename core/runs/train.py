"""Training a recipe into a run directory: the Trainer (callbacks, logger), fit, test, and the run's files.

Lightning owns the loop, devices (``accelerator = "auto"``), DDP, checkpoints, progress bars and logging.
A run directory holds ``recipe.toml`` (resolved), ``sources/`` (the files of the extends chain), ``plugins.json``,
``environment.json``, ``metrics.json``, ``checkpoints/`` (unless ``trainer.checkpoint = "none"``), ``tb/``
(TensorBoard events) and the ``[logger]`` section's ``csv/``, ``mlflow/``, ``wandb/``. It is never reused
silently.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shutil
import sys
import warnings
from pathlib import Path

import lightning as L
from lightning.pytorch.loggers import MLFlowLogger

from ..recipe import Recipe, dump_toml, recipe_to_dict
from ..registry import Registry, get_registry
from ..train.build import assemble
from ..train.callbacks import CpuCudaProbe, DropOrphanBest, InterruptCheckpoint, RandomState, RunProgressBar
from ..train.data import resume_position
from ..train.settings import lightning_logs_at
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


def mlflow_metric_name(name: str) -> str:
    """``name`` as MLflow's file store can keep it: the stage's ``/`` kept, the rest of the path joined with ``.``
    (the store keeps a metric in a file whose path is its name, so ``train/loss`` and ``train/loss/text-image``
    cannot both be ``/`` paths), and the characters MLflow refuses left out as Lightning's MLFlowLogger does:
    ``test/retrieval/text->audio/R@1`` -> ``test/retrieval.text-audio.R1``."""
    stage, slash, rest = name.partition("/")
    return re.sub("[^a-zA-Z0-9_/. -]+", "", stage + slash + rest.replace("/", "."))


class FileStoreMLFlowLogger(MLFlowLogger):
    """Lightning's MLFlowLogger with the metric names of :func:`mlflow_metric_name`."""

    def log_metrics(self, metrics, step: int | None = None) -> None:
        super().log_metrics({mlflow_metric_name(k): v for k, v in metrics.items()}, step)


def make_loggers(recipe: Recipe, run_dir: Path) -> list:
    """TensorBoard (``tb/``, first: ``trainer.logger``, where the figures and the HParams view go), then the
    ``[logger]`` section's (:class:`mmcore.recipe.schema.LoggerSettings`), each writing inside ``run_dir`` only and
    never online."""
    from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

    s = recipe.logger
    tensorboard = TensorBoardLogger(save_dir=str(run_dir), name="", version="tb", default_hp_metric=False)
    # tb/hparams.yaml: the flattened recipe, as the HParams tab shows it (Lightning writes the file once, at its
    # first save during training, from the hyperparameters it holds then: `{}` unless given here)
    tensorboard.log_hyperparams(_flatten(recipe_to_dict(recipe)))
    loggers = [tensorboard]
    if s.csv:  # csv/version_<n>/: a resumed run writes a new version rather than replacing the first's metrics.csv
        loggers.append(CSVLogger(save_dir=str(run_dir), name="csv"))
    if s.mlflow:
        # a file store needs no server or database; MLflow 3 keeps it in maintenance mode and refuses it unless
        # allowed (an explicit MLFLOW_ALLOW_FILE_STORE=false of the user's is left as it is)
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        loggers.append(FileStoreMLFlowLogger(experiment_name=recipe.name, run_name=run_dir.name,
                                             tracking_uri=(run_dir / "mlflow").resolve().as_uri()))
    if s.wandb:
        from lightning.pytorch.loggers import WandbLogger

        import wandb

        # offline: nothing leaves the machine (`wandb sync RUN_DIR/wandb/offline-run-*` uploads it later); the
        # console is not captured (mmcore's own output stays as it is) and W&B's banners are kept quiet
        loggers.append(WandbLogger(name=run_dir.name, project=recipe.name, save_dir=str(run_dir), offline=True,
                                   settings=wandb.Settings(console="off", silent=True)))
    return loggers


def make_trainer(recipe: Recipe, run_dir: Path, **overrides) -> L.Trainer:
    """The run's ``lightning.Trainer``: the recipe's ``[trainer]`` settings, its loggers (:func:`make_loggers`) and
    checkpoints (``trainer.checkpoint``): ``last.ckpt`` at the end of every ``checkpoint_every_n_epochs``-th epoch
    (:func:`train` writes it at the end of training too) and ``interrupted.ckpt`` when a run stops, unless
    ``"none"``; the best by ``val/loss`` for ``"best_and_last"`` when the run validates. ``overrides``: any other
    ``lightning.Trainer`` arguments."""
    from lightning.pytorch.callbacks import ModelCheckpoint

    t = recipe.trainer
    folder = run_dir / "checkpoints"
    interactive = sys.stdout.isatty() and os.environ.get("CI", "").lower() not in ("1", "true")
    best = last = None
    if t.checkpoint == "best_and_last" and t.validates:
        # best-by-validation-loss, and last.ckpt below. Not `save_last=True` on the monitored checkpoint: Lightning
        # rewrites that last.ckpt only in epochs where the best one changes, so it goes stale.
        best = ModelCheckpoint(
            dirpath=folder, filename="best-epoch{epoch}-step{step}", auto_insert_metric_name=False,
            monitor="val/loss", mode="min", save_top_k=1,
        )
    if t.checkpoint != "none":
        # at an epoch's end whatever the validation frequency (Lightning would otherwise save it after validation)
        last = ModelCheckpoint(dirpath=folder, filename="last", monitor=None, save_top_k=1,
                               every_n_epochs=t.checkpoint_every_n_epochs, save_on_train_epoch_end=True,
                               enable_version_counter=False)
    callbacks = [c for c in (best, last) if c is not None] + [RandomState(), CpuCudaProbe()]
    if last is not None:  # interrupted.ckpt when a run stops on SIGTERM/Ctrl-C/error
        callbacks.append(InterruptCheckpoint(folder / "interrupted.ckpt"))
    if best is not None:
        callbacks.append(DropOrphanBest(best))
    options = dict(
        max_epochs=t.max_epochs,
        max_steps=t.max_steps,
        limit_train_batches=t.limit_train_batches,
        # no validation at all (nor Lightning's sanity check) with val_every_n_epochs = 0
        limit_val_batches=t.limit_val_batches if t.validates else 0,
        check_val_every_n_epoch=max(1, t.val_every_n_epochs),
        # None: Lightning's default, 1.0, without its note that validation runs at each epoch's end
        val_check_interval=None if t.val_check_interval == 1.0 else t.val_check_interval,
        accelerator=t.accelerator,
        devices=t.devices,
        strategy=t.strategy,
        num_nodes=t.num_nodes,
        precision=t.precision,
        log_every_n_steps=t.log_every_n_steps,
        gradient_clip_val=t.gradient_clip_val or None,
        deterministic=t.deterministic,
        logger=make_loggers(recipe, run_dir),
        callbacks=callbacks,
        enable_checkpointing=t.checkpoint != "none",  # else Lightning adds a ModelCheckpoint of its own
        # checkpoints written next to their target and renamed (not staged in $TMPDIR), loaded with weights_only
        plugins=[CheckpointFiles()],
        default_root_dir=str(run_dir),
        enable_progress_bar=interactive,
        enable_model_summary=interactive,
    )
    options.update(overrides)
    if options["enable_progress_bar"]:  # Lightning's own bar shows v_num (the loggers' version: "tb")
        options["callbacks"] = [*options["callbacks"], RunProgressBar()]
    return L.Trainer(**options)


def _last_checkpoint(trainer: L.Trainer):
    """The Trainer's ``last.ckpt`` callback, or None (``trainer.checkpoint = "none"``)."""
    from lightning.pytorch.callbacks import ModelCheckpoint

    return next((c for c in trainer.callbacks if isinstance(c, ModelCheckpoint) and c.monitor is None), None)


def train(recipe: Recipe, sources: list, run_dir: Path, registry: Registry | None = None,
          module_data: tuple | None = None, resume: Path | bool = False, callbacks: tuple = ()) -> dict:
    """Train and evaluate a recipe into ``run_dir`` (already created). Returns the test metrics.

    ``resume``: continue from a checkpoint of ``run_dir`` with the optimizer, schedule, temperatures, strategy
    parameters, epoch and RNG states it holds: the path the CLI chose with
    :func:`mmcore.runs.checkpoints.resume_checkpoint`, or True to choose it here (its note goes to stderr). From
    an epoch-end checkpoint (``last.ckpt``, written at the end of every ``trainer.checkpoint_every_n_epochs``-th
    epoch and of training) the resumed run reaches the same final
    state as an uninterrupted one, as the data order depends only on (seed, epoch). A run with
    ``trainer.checkpoint = "none"`` writes no checkpoint, so it cannot be resumed.
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

    data.drop_last = recipe.trainer.drop_last
    with lightning_notes_hidden():
        trainer = make_trainer(recipe, run_dir)
        trainer.callbacks.extend(callbacks)
        try:
            metrics = _fit_and_test(recipe, run_dir, module, data, trainer, ckpt_path)
        except BaseException:
            _finish_wandb(trainer, exit_code=1)
            raise
    _finish_wandb(trainer, exit_code=0)
    return metrics


NOTES_SHOWN = "MMCORE_LIGHTNING_NOTES"
"""Environment variable: set to 1 to see Lightning's own notes during a run again."""


@contextlib.contextmanager
def lightning_notes_hidden():
    """Lightning's info lines during a run (``GPU available: ...``, ``TPU available``, its advert for litlogger,
    ``Loading train_dataloader to estimate ...``, ``Trainer.fit stopped: max_epochs reached``, the model summary)
    are left out: mmcore prints the run directory, the progress bar and the metrics. Lightning's warnings stay,
    except its own deprecation warning about PyTorch's ``LeafSpec``, which names a site-packages file and is no
    user's to act on. ``MMCORE_LIGHTNING_NOTES=1`` shows them all."""
    if os.environ.get(NOTES_SHOWN) == "1":
        yield
        return
    with lightning_logs_at(logging.WARNING), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)` is deprecated")
        yield


def _fit_and_test(recipe: Recipe, run_dir: Path, module, data, trainer: L.Trainer, ckpt_path) -> dict:
    """Fit (from ``ckpt_path`` if given), make sure ``last.ckpt`` holds the final state, test, and write the
    metrics, pairs, figures and hyperparameters (rank 0). Returns the test metrics."""
    with warnings.catch_warnings():
        # mmcore's sampler goes on from the checkpoint's batch (BindingData.resume_position): Lightning's warning
        # that a mid-epoch checkpoint of a non-resumable loader is unreliable does not apply
        warnings.filterwarnings("ignore", message=".*resuming from a checkpoint that ended before the epoch ended")
        # Lightning counts log_every_n_steps over optimizer steps across epochs, so an epoch with fewer batches than
        # the interval still logs every n steps: its warning that the epoch will show no logs does not apply
        warnings.filterwarnings("ignore", message=".*is smaller than the logging interval")
        # a streaming split's loader (DatasetSplits: training_loader) gives each worker its own samples, so
        # Lightning's warning that an IterableDataset's len() may count duplicates across workers does not apply
        warnings.filterwarnings("ignore", message=".*`IterableDataset` has `__len__` defined")
        if ckpt_path is not None:
            # a resumed run writes into its own checkpoints/ again: Lightning's note that the folder is not empty
            # (it names a site-packages line) is expected
            warnings.filterwarnings("ignore", message=".*Checkpoint directory .* exists and is not empty")
        if ckpt_path is not None and not recipe.trainer.validates:
            # validation switched off on --resume: the checkpoint holds the best-by-val/loss callback's state, and
            # that callback is rightly absent now (the best file written before stays as it is)
            warnings.filterwarnings("ignore", message=".*callbacks used to create the checkpoint need to be provided")
        trainer.fit(module, datamodule=data, ckpt_path=ckpt_path, weights_only=True if ckpt_path else None)
        last = _last_checkpoint(trainer)
        if last is not None and trainer.current_epoch % recipe.trainer.checkpoint_every_n_epochs:
            # the final epoch was not an every-n-th one: last.ckpt would hold an earlier state than the one tested
            trainer.save_checkpoint(Path(last.dirpath) / "last.ckpt", weights_only=False)
        trainer.test(module, datamodule=data, verbose=False)
    metrics = module.test_metrics
    if trainer.is_global_zero:
        from .figures import have_matplotlib, write_run_pictures

        write_atomic(run_dir / "metrics.json", json.dumps(metrics, indent=2, sort_keys=True))
        pairs = {"trained": sorted(sorted(p) for p in module.trained_pairs),
                 "observed": sorted(sorted(p) for p in module.observed_pairs)}
        write_atomic(run_dir / "pairs.json", json.dumps(pairs, indent=2))
        if recipe.logger.figures:
            write_run_pictures(run_dir, module.test_split, metrics, trainer.logger.experiment, trainer.global_step,
                               module.summary_metrics)
        if recipe.logger.figures and not have_matplotlib():
            print("mmcore: figures skipped (pip install matplotlib to get PNGs)", file=sys.stderr)
        hyperparameters = _flatten(recipe_to_dict(recipe))
        _write_hparams_view(trainer.logger, hyperparameters, [f"test/{k}" for k in metrics], trainer.global_step)
        for logger in trainer.loggers[1:]:  # the [logger] section's: the test metrics were logged by the test loop
            logger.log_hyperparams(hyperparameters)
        for logger in trainer.loggers:
            logger.finalize("success")
    return metrics


def _write_hparams_view(tensorboard, hyperparameters: dict, metric_names: list, step: int) -> None:
    """TensorBoard's HParams view of the run: ``hyperparameters`` (flat) and the names of the scalars that are its
    metrics, whose values TensorBoard takes from the scalars the test loop logged (once, at the last step:
    Lightning's ``log_hyperparams(metrics=...)`` would log them all again, at step 0). ``tb/hparams.yaml`` is
    rewritten with ``hyperparameters``: Lightning writes it only when absent (:func:`make_loggers` gives it the
    recipe for that first write), and a resumed run's recipe may differ from the one that wrote it."""
    from lightning.pytorch.core.saving import save_hparams_to_yaml
    from torch.utils.tensorboard.summary import hparams

    writer = tensorboard.experiment._get_file_writer()  # as Lightning's log_hyperparams does
    for summary in hparams(hyperparameters, dict.fromkeys(metric_names)):
        writer.add_summary(summary, step)
    save_hparams_to_yaml(Path(tensorboard.log_dir) / tensorboard.NAME_HPARAMS_FILE, hyperparameters)


def _finish_wandb(trainer: L.Trainer, exit_code: int) -> None:
    """End this run's W&B run, however the run ended: Lightning's WandbLogger leaves it open, and the next run of
    the same process (a study's) would log into it."""
    from lightning.pytorch.loggers import WandbLogger

    if any(isinstance(logger, WandbLogger) for logger in trainer.loggers):
        import wandb

        wandb.finish(exit_code=exit_code)
