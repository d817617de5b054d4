"""Embedding a split of a trained run with its reference set, through the same Lightning test loop as the end of
training (:meth:`BindingModule.on_test_epoch_end`): one way to embed a split everywhere (in batches, absent rows never
encoded, gathered across ranks), used by :meth:`TrainedModel.embed_split` and ``mmcore eval``."""

from __future__ import annotations

import lightning as L


def embed_and_evaluate(model, split: str = "test", overrides: list = (), evaluate: bool = True):
    """``(EmbeddedSplit, metrics)`` of split ``split`` of a trained run's data (``overrides``: see
    :meth:`TrainedModel.data`); metrics are ``{}`` unless ``evaluate``."""
    data = model.data(overrides)
    if split not in ("train", "val", "test"):
        raise ValueError(f"split must be train, val or test, got {split!r}")
    data.test_split = split
    module = model.module
    module.embed_only = not evaluate
    try:
        trainer = L.Trainer(accelerator="gpu" if model.device.type == "cuda" else "cpu", devices=1, logger=False,
                            enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False)
        trainer.test(module, datamodule=data, verbose=False)
    finally:
        module.embed_only = False
    return module.test_split, (module.test_metrics if evaluate else {})
