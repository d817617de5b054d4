"""Helpers for testing plugins: a tiny complete recipe that needs no plugin, and one-call runs.

    from mmcore.testing import tiny_recipe, run_recipe

    def test_my_encoder_trains(tmp_path):
        metrics = run_recipe(tiny_recipe(encoders={"text": {"name": "my_encoder"}}), tmp_path / "run")
        assert metrics["retrieval/trained/R@1"] > 0.05        # chance is 1/256
"""

from __future__ import annotations

import copy
from pathlib import Path

TINY = {
    "name": "tiny",
    "seed": 0,
    "embed_dim": 32,
    "dataset": {"name": "synthetic", "train_size": 512, "val_size": 128, "test_size": 256,
                "modalities": {"image": {"input_dim": 24}, "text": {"input_dim": 16}, "audio": {"input_dim": 20}}},
    "encoders": {m: {"name": "mlp", "hidden": [64]} for m in ("image", "text", "audio")},
    "anchor": {"name": "pairwise"},
    "loss": {"name": "infonce"},
    "evaluators": [{"name": "retrieval"}, {"name": "zero_shot"}, {"name": "knn"}],
    "optimizer": {"lr": 0.003},
    "trainer": {"max_epochs": 4, "batch_size": 128, "log_every_n_steps": 1, "accelerator": "cpu", "devices": 1},
}
"""A recipe (raw dict) that trains in a few seconds on a CPU with built-in components only."""


def _merge(base: dict, changes: dict) -> dict:
    out = dict(base)
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict) and value.get("name", out[key].get("name")) == \
                out[key].get("name"):
            out[key] = _merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def tiny_recipe(**changes) -> dict:
    """:data:`TINY` with sections changed, merged like ``extends`` (a section whose ``name`` changes is replaced)."""
    return _merge(copy.deepcopy(TINY), changes)


def run_recipe(raw: dict, out: str | Path) -> dict:
    """Validate, train and evaluate a raw recipe dict into the fresh directory ``out``; returns the test metrics.
    Raises :class:`mmcore.RecipeError` for an invalid recipe, as ``mmcore run`` would report it."""
    from .recipe import structure_recipe
    from .registry import get_registry
    from .runs.directory import make_run_dir
    from .runs.train import train
    from .train.build import assemble

    registry = get_registry()
    recipe = structure_recipe(raw, registry, "<test recipe>")
    built = assemble(recipe, registry)
    run_dir = make_run_dir(recipe, out)
    return train(recipe, [], run_dir, registry, module_data=built)
