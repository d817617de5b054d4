"""A seeded, stratified train/val/test split of a dataset's rows (numpy only), for dataset plugins."""

from __future__ import annotations


def stratified_split(labels, *, val_fraction: float, test_fraction: float, seed: int) -> dict:
    """Rows of each split, stratified by class: ``labels [N] -> {"train"|"val"|"test": sorted int64 row indices}``.

    Within each class ``c`` (``n_c`` rows) a permutation seeded by ``seed`` gives ``round(n_c * test_fraction)``
    rows to test, the next ``round(n_c * val_fraction)`` to val and the rest to train: the splits are disjoint,
    cover every row, and depend only on ``(labels, fractions, seed)``, never on the global RNG.
    """
    import numpy as np

    labels = np.asarray(labels, dtype=np.int64)
    rng = np.random.default_rng(seed)
    parts: dict = {"train": [], "val": [], "test": []}
    for c in np.unique(labels):
        rows = rng.permutation(np.flatnonzero(labels == c))
        n_test, n_val = round(len(rows) * test_fraction), round(len(rows) * val_fraction)
        parts["test"].append(rows[:n_test])
        parts["val"].append(rows[n_test:n_test + n_val])
        parts["train"].append(rows[n_test + n_val:])
    return {name: np.sort(np.concatenate(chunks) if chunks else np.zeros(0, np.int64)).astype(np.int64)
            for name, chunks in parts.items()}
