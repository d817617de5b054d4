"""Recipe settings for small studies and experiment tracking (issue 17): how often to validate and checkpoint,
drop_last, the Lightning limits (max_steps, limit_*_batches, val_check_interval), Adam's betas/eps, and the
[logger] section's CSV, MLflow (local file store) and W&B (offline) loggers. Bad values are covered by
tests/bad_recipes/ (trainer-*, optimizer-*, logger-*)."""

import csv
import json
import math
from pathlib import Path

import pytest
import torch

from mmcore.recipe import dump_toml
from mmcore.testing import run_recipe, tiny_recipe


def _steps(ckpt: Path) -> int:
    from mmcore.runs.checkpoints import load_checkpoint

    return load_checkpoint(ckpt)["global_step"]


def _rows(path: Path) -> list:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def _recipe_file(tmp_path: Path, **changes) -> Path:
    path = tmp_path / "tiny.toml"
    path.write_text(dump_toml(tiny_recipe(**changes)))
    return path


def test_a_run_without_validation_or_checkpoints_still_writes_its_metrics_logs_and_figures(cli, tmp_path, recwarn):
    """val_every_n_epochs = 0: no validation (no val/loss anywhere); checkpoint = "none": no checkpoints/ at all,
    yet metrics.json, TensorBoard and the CSV log are written. log_every_n_steps (5) above the 4 batches per epoch
    logs every 5 steps across epochs, without Lightning's warning that it would not. Commands that need a
    checkpoint refuse such a run cleanly."""
    run = tmp_path / "run"
    metrics = run_recipe(tiny_recipe(trainer={"max_epochs": 2, "val_every_n_epochs": 0, "checkpoint": "none",
                                              "log_every_n_steps": 5}, logger={"csv": True}), run)
    assert json.loads((run / "metrics.json").read_text()) == pytest.approx(metrics)
    assert not (run / "checkpoints").exists()
    assert any((run / "tb").glob("events.out.tfevents.*"))
    rows = _rows(run / "csv" / "version_0" / "metrics.csv")
    assert [r["step"] for r in rows if r.get("train/loss")] == ["4"]  # the 5th of 8 steps: across the epochs
    assert not any(key.startswith("val/") for key in rows[0])
    assert any(r.get("test/retrieval/trained/R@1") for r in rows)
    assert not [w for w in recwarn if "logging interval" in str(w.message)]
    for command in (("eval", run), ("run", "--resume", run), ("embed", run, "--modality", "image", run / "x.npy",
                                                               "--out", tmp_path / "e.npy")):
        status, _, err = cli(*command)
        assert status == 2 and "no checkpoint" in err and "Traceback" not in err, err
        # the reason, not a guess that the run stopped early
        assert 'trained with trainer.checkpoint = "none", which writes no checkpoint' in err, err


def test_last_checkpoint_every_n_epochs_holds_the_final_state_and_resumes_exactly(cli, tmp_path, recwarn):
    """checkpoint_every_n_epochs = 2 over 3 epochs: last.ckpt still holds the final step (it is written at the end
    of training too). drop_last = false trains the partial batch: 500 rows of 128 are 4 steps an epoch, not 3.
    Resumed with validation switched off (--set trainer.val_every_n_epochs=0, allowed) to a 4th epoch, the run
    reaches the metrics of an uninterrupted 4-epoch run, with no warning about the best checkpoint's callback."""
    trainer = {"max_epochs": 3, "checkpoint_every_n_epochs": 2, "drop_last": False}
    recipe = _recipe_file(tmp_path, dataset={"train_size": 500}, optimizer={"schedule": "constant"},
                          trainer=trainer)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # exact comparison: see tests/test_reliability.py's ONE_THREAD
    try:
        status, _, err = cli("run", recipe, "--out", tmp_path / "run")
        assert status == 0, err
        checkpoints = tmp_path / "run" / "checkpoints"
        assert _steps(checkpoints / "last.ckpt") == 12
        assert len(list(checkpoints.glob("best-*.ckpt"))) == 1
        status, _, err = cli("run", "--resume", tmp_path / "run", "--set", "trainer.max_epochs=4",
                             "--set", "trainer.val_every_n_epochs=0")
        assert status == 0, err
        status, _, err = cli("run", recipe, "--set", "trainer.max_epochs=4", "--out", tmp_path / "whole")
        assert status == 0, err
    finally:
        torch.set_num_threads(threads)
    assert _steps(checkpoints / "last.ckpt") == 16
    resumed = json.loads((tmp_path / "run" / "metrics.json").read_text())
    whole = json.loads((tmp_path / "whole" / "metrics.json").read_text())
    assert resumed == pytest.approx(whole, abs=1e-6)
    assert not [w for w in recwarn if "callbacks used to create the checkpoint" in str(w.message)]


def test_checkpoint_last_keeps_only_last_and_the_lightning_limits_shape_the_run(tmp_path):
    """checkpoint = "last": no best file. max_steps = 5 with max_epochs = -1 and limit_train_batches = 2 stops
    after 5 steps (mid-epoch); the cosine schedule spans those 5 steps (estimated_stepping_batches);
    val_check_interval = 0.5 of a 2-batch epoch validates after every batch, on limit_val_batches = 1 batch."""
    run = tmp_path / "run"
    run_recipe(tiny_recipe(trainer={"max_epochs": -1, "max_steps": 5, "limit_train_batches": 2,
                                    "limit_val_batches": 1, "val_check_interval": 0.5, "checkpoint": "last"},
                           logger={"csv": True}), run)
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["last.ckpt"]
    from mmcore.runs.load import RunLoadError, checkpoint_file

    with pytest.raises(RunLoadError, match='trainer.checkpoint = "last", which keeps no best checkpoint'):
        checkpoint_file(run, "best")
    assert _steps(run / "checkpoints" / "last.ckpt") == 5
    rows = _rows(run / "csv" / "version_0" / "metrics.csv")
    lrs = [float(r["train/lr"]) for r in rows if r.get("train/lr")]
    assert lrs == pytest.approx([0.003 * 0.5 * (1 + math.cos(math.pi * k / 5)) for k in range(5)])
    assert len([r for r in rows if r.get("val/loss")]) == 5


def test_adam_betas_and_eps_reach_the_optimizer_and_biases_norms_temperatures_never_decay():
    import lightning as L

    from mmcore.recipe import structure_recipe
    from mmcore.registry import get_registry
    from mmcore.train.build import assemble

    raw = tiny_recipe(optimizer={"betas": [0.8, 0.95], "eps": 1e-6, "weight_decay": 0.1})
    module, data = assemble(structure_recipe(raw, get_registry()))
    trainer = L.Trainer(max_steps=1, limit_val_batches=0, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, accelerator="cpu", devices=1)
    trainer.fit(module, datamodule=data)
    groups = trainer.optimizers[0].param_groups
    assert {(tuple(g["betas"]), g["eps"]) for g in groups} == {((0.8, 0.95), 1e-6)}
    norms = {id(p) for m in module.modules() if isinstance(m, torch.nn.LayerNorm) for p in m.parameters()}
    assert norms
    names = {id(p): name for name, p in module.named_parameters()}
    undecayed = {names[id(p)] for g in groups if g["weight_decay"] == 0.0 for p in g["params"]}
    decayed = {names[id(p)] for g in groups if g["weight_decay"] == 0.1 for p in g["params"]}
    assert "loss.log_logit_scale" in undecayed  # the learnable temperature
    assert {names[i] for i in norms} <= undecayed
    assert {n for n in names.values() if n.endswith(".bias")} <= undecayed
    assert decayed == {n for n, p in module.named_parameters() if p.ndim >= 2} and decayed
    assert decayed | undecayed == set(names.values())


def test_a_logger_whose_package_is_missing_is_a_recipe_error_naming_the_key(cli, tmp_path, monkeypatch):
    import importlib.util

    from mmcore.train import settings

    real = importlib.util.find_spec
    monkeypatch.setattr(settings.importlib.util, "find_spec", lambda name, *a: None if name == "wandb" else
                        real(name, *a))
    recipe = _recipe_file(tmp_path, logger={"wandb": True})
    for command in ("validate", "run"):
        status, _, err = cli(command, recipe, "--out", tmp_path / "run") if command == "run" else cli(command, recipe)
        assert status == 2, err
        assert "logger.wandb: true needs wandb, which is not installed: pip install wandb" in err, err
    assert not (tmp_path / "run").exists()


def test_resume_may_change_how_often_it_validates_and_where_it_logs_not_what_it_trains():
    from mmcore.runs.directory import refused_resume_changes

    def refused(key, old, new):
        section, name = key.split(".")
        return refused_resume_changes({section: {name: old}}, {section: {name: new}})

    assert not refused("trainer.val_every_n_epochs", 1, 0)
    assert not refused("logger.csv", False, True)
    assert not refused("trainer.max_epochs", 3, 6)
    for key, old, new in [("trainer.drop_last", True, False), ("optimizer.betas", [0.9, 0.999], [0.8, 0.99]),
                          ("optimizer.eps", 1e-8, 1e-6), ("trainer.checkpoint", "best_and_last", "last"),
                          ("trainer.checkpoint_every_n_epochs", 1, 2), ("trainer.max_steps", -1, 100),
                          ("trainer.limit_train_batches", None, 2), ("trainer.limit_val_batches", None, 2),
                          ("trainer.val_check_interval", 1.0, 0.5)]:
        assert refused(key, old, new), key


def test_mlflow_metric_names_fit_a_file_store():
    from mmcore.runs.train import mlflow_metric_name

    assert mlflow_metric_name("train/loss") == "train/loss"
    assert mlflow_metric_name("train/loss/text-image") == "train/loss.text-image"
    assert mlflow_metric_name("test/retrieval/text->audio/R@1") == "test/retrieval.text-audio.R1"
    assert mlflow_metric_name("epoch") == "epoch"


def test_mlflow_logger_writes_a_local_file_store_inside_the_run(tmp_path):
    pytest.importorskip("mlflow", reason="MLflow is not installed: pip install mlflow-skinny")
    from mlflow.tracking import MlflowClient

    from mmcore.runs.directory import check_replaceable

    run = tmp_path / "run"
    run_recipe(tiny_recipe(trainer={"max_epochs": 1, "checkpoint": "none"}, logger={"mlflow": True}), run)
    client = MlflowClient((run / "mlflow").resolve().as_uri())
    experiment = client.get_experiment_by_name("tiny")
    [found] = client.search_runs([experiment.experiment_id])
    assert found.info.run_name == "run" and found.info.status == "FINISHED"
    assert {"train/loss", "train/loss.image-text", "val/loss.image-text", "test/retrieval.trained.R1"} <= set(found.data.metrics)
    assert found.data.params["trainer.max_epochs"] == "1"
    assert sorted(p.name for p in run.iterdir() if p.is_dir()) == ["mlflow", "sources", "tb"]
    assert check_replaceable(run, overwrite=True) == run  # --overwrite may replace it: mlflow/ is a run's entry


def test_wandb_logger_runs_offline_inside_the_run_and_is_finished_for_the_next_run(tmp_path, monkeypatch):
    wandb = pytest.importorskip("wandb", reason="W&B is not installed: pip install wandb")
    monkeypatch.delenv("WANDB_MODE", raising=False)
    run = tmp_path / "run"
    run_recipe(tiny_recipe(trainer={"max_epochs": 1, "checkpoint": "none"}, logger={"wandb": True}), run)
    assert len(list((run / "wandb").glob("offline-run-*/run-*.wandb"))) == 1
    assert wandb.run is None  # the next run of this process (a study's) gets its own


def test_logger_figures_false_leaves_out_the_pictures_and_the_projector_only(tmp_path):
    """[logger] figures = false: no PNGs, no TensorBoard images, no projector; the metrics and scalars as always."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    def written(run):
        acc = EventAccumulator(str(run / "tb"))
        acc.Reload()
        return {"images": acc.Tags()["images"], "scalars": acc.Tags()["scalars"],
                "pngs": sorted(p.name for p in run.glob("*.png")),
                "projector": any((run / "tb").rglob("projector_config.pbtxt"))}

    settings = {"max_epochs": 1, "val_every_n_epochs": 0, "checkpoint": "none"}
    run_recipe(tiny_recipe(trainer=settings), tmp_path / "with")
    run_recipe(tiny_recipe(trainer=settings, logger={"figures": False}), tmp_path / "without")
    on, off = written(tmp_path / "with"), written(tmp_path / "without")
    assert on["pngs"] == ["embeddings_2d.png", "recall_heatmap.png"] and on["images"] and on["projector"]
    assert off["pngs"] == [] and off["images"] == [] and not off["projector"]
    assert off["scalars"] == on["scalars"]
    assert (tmp_path / "without" / "metrics.json").exists()
