"""Chunked scans of a features directory's values: bounded memory (``chunk`` rows at a time), errors name the file.

Headers and row counts are checked by :func:`mmcore_features.layout.discover`; these functions read the values.
"""

from __future__ import annotations

import mmcore

from .reader import NpyRows

CHUNK = 65536


def _bad(path, message: str):
    return mmcore.ConfigError("path", f"{path}: {message}")


def _chunks(rows: int, chunk: int):
    for start in range(0, rows, chunk):
        yield start, min(start + chunk, rows)


def presence(layout, name: str, start: int, stop: int, io: str = "pread"):
    """``[stop - start]`` bool presence of modality ``name`` (all True without a presence file)."""
    import numpy as np

    path = layout.modalities[name][1]
    if path is None:
        return np.ones(stop - start, dtype=bool)
    return NpyRows(path, io).read_range(start, stop)


def check_finite(layout, io: str = "pread", chunk: int = CHUNK) -> None:
    """Every present row of every modality is finite (absent rows are not looked at)."""
    import numpy as np

    for name, (path, _, _) in layout.modalities.items():
        reader = NpyRows(path, io)
        for start, stop in _chunks(layout.rows, chunk):
            x = reader.read_range(start, stop)
            bad = ~np.isfinite(x).all(1) & presence(layout, name, start, stop, io)
            if bad.any():
                row = start + int(np.flatnonzero(bad)[0])
                count = int(bad.sum())
                raise _bad(path, f"row {row} is present but holds NaN or infinite values ({count} such rows in "
                                 f"rows {start}..{stop - 1}); mark missing samples False in {name}.present.npy")


def load_ids(layout):
    """``[N]`` int64 sample ids (the file's, checked unique, or ``0..N-1``)."""
    import numpy as np

    if layout.ids is None:
        return np.arange(layout.rows, dtype=np.int64)
    ids = np.load(layout.ids).astype(np.int64)
    unique, counts = np.unique(ids, return_counts=True)
    if len(unique) != len(ids):
        raise _bad(layout.ids, f"ids must be unique; id {int(unique[counts > 1][0])} appears "
                               f"{int(counts[counts > 1][0])} times")
    return ids


def check_labels(layout, chunk: int = CHUNK) -> int:
    """Labels are ``>= 0`` (and name a class of classes.json when there is one). Returns the number of classes."""
    reader, low, high = NpyRows(layout.labels), None, None
    for start, stop in _chunks(layout.rows, chunk):
        part = reader.read_range(start, stop)
        low = part.min() if low is None else min(low, part.min())
        high = part.max() if high is None else max(high, part.max())
    if low < 0:
        raise _bad(layout.labels, f"labels must be >= 0, found {int(low)}")
    if layout.class_names and high >= len(layout.class_names):
        raise _bad(layout.labels, f"label {int(high)} has no name: classes.json lists {len(layout.class_names)} "
                                  "classes")
    return max(int(high) + 1, len(layout.class_names))


def load_split(layout):
    """``[N]`` int8 split of each row from split.npy: 0 train, 1 val, 2 test; each split must be non-empty."""
    import numpy as np

    split = np.load(layout.split)
    if split.min() < 0 or split.max() > 2:
        value = int(split.min()) if split.min() < 0 else int(split.max())
        raise _bad(layout.split, f"values must be 0 (train), 1 (val) or 2 (test); found {value}")
    split = split.astype(np.int8)
    counts = np.bincount(split, minlength=3)
    for k, name in enumerate(("train", "val", "test")):
        if counts[k] == 0:
            raise _bad(layout.split, f"the {name} split is empty (no row holds {k})")
    return split


def observed_pairs(layout, split, io: str = "pread", chunk: int = CHUNK) -> frozenset:
    """Unordered modality pairs present together in at least one training row (``split == 0``)."""
    import numpy as np

    names = list(layout.modalities)
    together = np.zeros((len(names), len(names)), dtype=np.int64)
    for start, stop in _chunks(layout.rows, chunk):
        train = split[start:stop] == 0
        table = np.stack([presence(layout, m, start, stop, io)[train] for m in names], 1).astype(np.int64)
        together += table.T @ table
    return frozenset(frozenset((names[a], names[b])) for a in range(len(names)) for b in range(a + 1, len(names))
                     if together[a, b] > 0)
