"""Dataset ``features``: your own precomputed features, one ``.npy`` per modality, streamed from disk.

The format is in :mod:`mmcore_features.layout` (and the plugin's README). Nothing is loaded into memory: each batch is
read from the files when the DataLoader asks for it (:class:`mmcore_features.stream.FeatureSplit`), so a set far
larger than RAM trains. What is held: each split's row numbers (8 bytes per row) and, while building, the split of
every row (1 byte per row) and the ids (8 bytes per row, to check they are unique).

Splits: ``split.npy`` when the directory has one, else a seeded random split by ``val_fraction`` and
``test_fraction``. The pairing plan (``observed_pairs``) is read from the presence files of the training rows.
``check_values`` scans every present row for NaN/inf once at build time (bounded memory, about the time of reading
the files once); every batch is checked again as its rows are read (a bad row met in training stops the run with
:class:`mmcore.DataError`, exit 1). Each file is opened once, at build, and checked before every read to be still the
same file (:mod:`mmcore_features.reader`).
"""

from __future__ import annotations

import attrs

import mmcore

from .layout import discover

IO_MODES = ("pread", "mmap")  # see mmcore_features.reader (not imported here: it imports numpy)


def _fraction(instance, attribute, value):
    if not 0.0 < value < 1.0:
        raise ValueError(f"'{attribute.name}' must be between 0 and 1 (exclusive), got {value}")


@attrs.frozen
class FeaturesConfig:
    """``path``: the directory; ``modalities``: which ``<name>.npy`` files are modalities (``[]``: all of them);
    ``val_fraction``, ``test_fraction``, ``seed``: the random split used when there is no split.npy;
    ``check_values``: scan the files for NaN/inf in present rows when building; ``io``: ``"pread"`` (default; reads
    rows into the batch only) or ``"mmap"`` (fancy indexing of memory maps; see :mod:`mmcore_features.reader`)."""

    path: str
    modalities: list[str] = attrs.field(factory=list)
    val_fraction: float = attrs.field(default=0.1, validator=_fraction)
    test_fraction: float = attrs.field(default=0.1, validator=_fraction)
    seed: int = 0
    check_values: bool = True
    io: str = attrs.field(default="pread", validator=attrs.validators.in_(IO_MODES))


def random_split(rows: int, val_fraction: float, test_fraction: float, seed: int):
    """``[rows]`` int8 split (0 train, 1 val, 2 test) of a seeded permutation: ``round(rows * fraction)`` rows each
    for test and val (at least one), the rest train."""
    import numpy as np

    n_test, n_val = max(1, round(rows * test_fraction)), max(1, round(rows * val_fraction))
    if n_test + n_val >= rows:
        raise mmcore.ConfigError("val_fraction", f"{rows} rows leave none for training with val_fraction = "
                                                 f"{val_fraction} and test_fraction = {test_fraction}")
    order = np.random.default_rng(seed).permutation(rows)
    split = np.zeros(rows, dtype=np.int8)
    split[order[:n_test]] = 2
    split[order[n_test:n_test + n_val]] = 1
    return split


def build_features(config: FeaturesConfig, context=None):
    """The splits of the directory; a file that changes while being checked here is a recipe error naming it."""
    try:
        return _build(config)
    except mmcore.DataError as exc:
        raise mmcore.ConfigError("path", str(exc)) from exc


def _build(config: FeaturesConfig):
    import numpy as np

    from . import checks
    from .stream import FeatureSplit

    layout = discover(config.path, config.modalities, config.io)
    checks.load_ids(layout)  # unique ids (raises naming ids.npy)
    num_classes = checks.check_labels(layout) if layout.labels is not None else 0
    if config.check_values:
        checks.check_finite(layout)
    if layout.split is not None:
        split = checks.load_split(layout)
    else:
        split = random_split(layout.rows, config.val_fraction, config.test_fraction, config.seed)
    parts = {name: FeatureSplit(layout, np.flatnonzero(split == k))
             for k, name in enumerate(("train", "val", "test"))}
    class_names = layout.class_names or tuple(f"class {k}" for k in range(num_classes))
    return mmcore.DatasetSplits(
        train=parts["train"], val=parts["val"], test=parts["test"],
        inputs={m: spec[2] for m, spec in layout.modalities.items()},
        observed_pairs=checks.observed_pairs(layout, split),
        class_names=class_names,
    )


@mmcore.hookimpl
def mmcore_datasets():
    return [mmcore.Component("features", FeaturesConfig, build_features,
                             "your own features: one .npy per modality, presence masks, streamed from disk")]
