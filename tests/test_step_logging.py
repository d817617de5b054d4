"""A training step's overhead around the math: step-level logging costs nothing between its intervals (and the
loggers still get every interval's values), and a CPU run's batches are not walked over to be "moved" to the CPU."""

from __future__ import annotations

import lightning as L

from mmcore.testing import run_recipe, tiny_recipe


def _steps_by_tag(run) -> dict:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    steps = {}
    for events in sorted(run.rglob("events.out.tfevents.*")):
        acc = EventAccumulator(str(events))
        acc.Reload()
        for tag in acc.Tags()["scalars"]:
            steps.setdefault(tag, []).extend(e.step for e in acc.Scalars(tag))
    return steps


def test_training_values_are_logged_on_logging_steps_only_and_all_reach_tensorboard(tmp_path, monkeypatch):
    # 512 samples in batches of 128: 4 steps an epoch, 16 in all; every 3rd step is a logging step
    calls = []
    log, log_dict = L.LightningModule.log, L.LightningModule.log_dict

    def counted_log(self, name, value, *args, **kwargs):
        if self.trainer.training:
            calls.append((self.global_step, name))
        return log(self, name, value, *args, **kwargs)

    def counted_log_dict(self, values, *args, **kwargs):
        if self.trainer.training:
            calls.extend((self.global_step, name) for name in values)
        return log_dict(self, values, *args, **kwargs)

    monkeypatch.setattr(L.LightningModule, "log", counted_log)
    monkeypatch.setattr(L.LightningModule, "log_dict", counted_log_dict)
    raw = tiny_recipe(trainer={"log_every_n_steps": 3, "val_every_n_epochs": 0, "checkpoint": "none"},
                      loss={"name": "infonce", "learnable": True})
    run_recipe(raw, tmp_path / "run")

    # Lightning writes step values when (step + 1) % 3 == 0: steps 2, 5, 8, 11, 14 (and nothing logged between)
    logging_steps = [2, 5, 8, 11, 14]
    assert sorted({step for step, _ in calls}) == logging_steps
    names = {name for _, name in calls}
    assert {"train/loss", "train/lr", "train/temperature"} <= names
    assert any(name.startswith("train/loss/") for name in names)  # one per term

    steps = _steps_by_tag(tmp_path / "run")
    for tag in ("train/loss", "train/lr", "train/temperature"):
        assert steps[tag] == logging_steps, tag
    terms = [tag for tag in steps if tag.startswith("train/loss/")]
    assert terms and all(steps[tag] == logging_steps for tag in terms)


def test_a_cpu_runs_batches_are_used_as_they_are_and_other_devices_get_lightnings_transfer():
    import torch

    from mmcore.recipe import structure_recipe
    from mmcore.registry import get_registry
    from mmcore.train.build import assemble

    _, data = assemble(structure_recipe(tiny_recipe(), get_registry(), "<test>"), get_registry())
    batch = data.on_before_batch_transfer(next(iter(data.train_dataloader())), 0)
    assert data.transfer_batch_to_device(batch, torch.device("cpu"), 0) is batch
    moved = data.transfer_batch_to_device(batch, torch.device("meta"), 0)  # Lightning's own walk, for any device
    assert moved is not batch and moved["inputs"]["image"].device.type == "meta"
    assert moved["rows"]["image"] == "all" and moved["present"]["text"].device.type == "meta"
