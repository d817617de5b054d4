"""Chunked scans of a features directory's values: bounded memory (``chunk`` rows at a time), errors name the file
and the first offending row.

Headers and row counts are checked by :func:`mmcore_features.layout.discover`; these functions read the values
through the layout's readers (which raise :class:`mmcore.DataError` if a file changes meanwhile).
"""

from __future__ import annotations

import mmcore

CHUNK = 65536
UNNAMED_CLASSES = 65536
"""Without classes.json, labels must be below ``max(N, UNNAMED_CLASSES)``: the classes are ``0..largest label``, and
one stray huge label must not make a billion class names."""
FLOAT32_MAX = 3.4028234663852886e38


def _bad(path, message: str):
    return mmcore.ConfigError("path", f"{path}: {message}")


def _chunks(rows: int, chunk: int):
    for start in range(0, rows, chunk):
        yield start, min(start + chunk, rows)


def presence(layout, name: str, start: int, stop: int):
    """``[stop - start]`` bool presence of modality ``name`` (all True without a presence file)."""
    import numpy as np

    reader = layout.modalities[name][1]
    if reader is None:
        return np.ones(stop - start, dtype=bool)
    return reader.read_range(start, stop)


def bad_rows(x):
    """``[n]`` bool: rows of ``x`` ``[n, d]`` that hold NaN, inf, or a value that becomes inf as float32 (batches
    are float32)."""
    import numpy as np

    if x.dtype.itemsize > 4:
        return ~(np.abs(x) <= FLOAT32_MAX).all(1)  # NaN compares False
    return ~np.isfinite(x).all(1)


def check_finite(layout, chunk: int = CHUNK) -> None:
    """Every present row of every modality is finite in float32 (absent rows are not looked at)."""
    import numpy as np

    for name, (reader, _, _) in layout.modalities.items():
        for start, stop in _chunks(layout.rows, chunk):
            bad = bad_rows(reader.read_range(start, stop)) & presence(layout, name, start, stop)
            if bad.any():
                row = start + int(np.flatnonzero(bad)[0])
                count = int(bad.sum())
                raise _bad(reader.path, f"row {row} is present but holds NaN, infinite or out-of-float32-range "
                                        f"values ({count} such rows in rows {start}..{stop - 1}); mark missing "
                                        f"samples False in {name}.present.npy")


def load_ids(layout):
    """``[N]`` int64 sample ids (the file's, checked unique and within int64, or ``0..N-1``)."""
    import numpy as np

    if layout.ids is None:
        return np.arange(layout.rows, dtype=np.int64)
    raw = layout.ids.read_range(0, layout.rows)
    if raw.dtype == np.uint64 and (raw > np.iinfo(np.int64).max).any():
        row = int(np.flatnonzero(raw > np.iinfo(np.int64).max)[0])
        raise _bad(layout.ids.path, f"id {int(raw[row])} at row {row} does not fit in int64")
    ids = raw.astype(np.int64)
    unique, counts = np.unique(ids, return_counts=True)
    if len(unique) != len(ids):
        raise _bad(layout.ids.path, f"ids must be unique; id {int(unique[counts > 1][0])} appears "
                                    f"{int(counts[counts > 1][0])} times")
    return ids


def check_labels(layout, chunk: int = CHUNK) -> int:
    """Labels are ``>= 0`` and name a class of classes.json when there is one, else are below
    ``max(N, UNNAMED_CLASSES)``. Returns the number of classes. Errors name the smallest or largest label and the
    first row that holds it."""
    import numpy as np

    reader, named = layout.labels, len(layout.class_names)
    low = high = None  # (value, first row)
    for start, stop in _chunks(layout.rows, chunk):
        part = reader.read_range(start, stop)
        at_min, at_max = int(np.argmin(part)), int(np.argmax(part))
        if low is None or part[at_min] < low[0]:
            low = (int(part[at_min]), start + at_min)
        if high is None or part[at_max] > high[0]:
            high = (int(part[at_max]), start + at_max)
    if low[0] < 0:
        raise _bad(reader.path, f"labels must be >= 0, found {low[0]} at row {low[1]}")
    if layout.class_names and high[0] >= named:
        raise _bad(reader.path, f"label {high[0]} has no name (row {high[1]}): classes.json lists {named} classes")
    limit = max(layout.rows, UNNAMED_CLASSES)
    if not layout.class_names and high[0] >= limit:
        raise _bad(reader.path, f"label {high[0]} (row {high[1]}) is too large: without classes.json the classes are "
                                f"0..largest label, at most max(rows, {UNNAMED_CLASSES}) = {limit} of them; renumber "
                                "the labels 0..K-1 (np.unique(labels, return_inverse=True)[1]) or name the classes "
                                "in classes.json")
    return max(high[0] + 1, named)


def load_split(layout):
    """``[N]`` int8 split of each row from split.npy: 0 train, 1 val, 2 test; each split must be non-empty."""
    import numpy as np

    split = layout.split.read_range(0, layout.rows)
    wrong = (split < 0) | (split > 2)
    if wrong.any():
        row = int(np.flatnonzero(wrong)[0])
        raise _bad(layout.split.path, f"values must be 0 (train), 1 (val) or 2 (test); found {int(split[row])} at "
                                      f"row {row}")
    split = split.astype(np.int8)
    counts = np.bincount(split, minlength=3)
    for k, name in enumerate(("train", "val", "test")):
        if counts[k] == 0:
            raise _bad(layout.split.path, f"the {name} split is empty (no row holds {k})")
    return split


def observed_pairs(layout, split, chunk: int = CHUNK) -> frozenset:
    """Unordered modality pairs present together in at least one training row (``split == 0``)."""
    import numpy as np

    names = list(layout.modalities)
    together = np.zeros((len(names), len(names)), dtype=np.int64)
    for start, stop in _chunks(layout.rows, chunk):
        train = split[start:stop] == 0
        table = np.stack([presence(layout, m, start, stop)[train] for m in names], 1).astype(np.int64)
        together += table.T @ table
    return frozenset(frozenset((names[a], names[b])) for a in range(len(names)) for b in range(a + 1, len(names))
                     if together[a, b] > 0)
