"""The on-disk format of a ``features`` directory, and its validation.

::

    DIR/
      <modality>.npy           [N, d_m] float16/32/64, C order   one per modality (any number of modalities)
      <modality>.present.npy   [N] bool                          optional; absent file = every row present
      ids.npy                  [N] integer, unique               optional; default 0..N-1
      labels.npy               [N] integer >= 0                  optional; enables zero-shot and kNN evaluation
      classes.json             ["name of class 0", ...]          optional; needs labels.npy
      split.npy                [N] integer: 0 train, 1 val, 2 test  optional; default: a seeded random split

Row ``i`` of every file is sample ``i``. A sample lacks modality ``m`` where ``m.present.npy`` is False: the values of
such rows are never read into a batch (they may hold anything, NaN included, and come out as zeros). Present rows
must be finite. Every problem is a :class:`mmcore.ConfigError` on ``path`` that names the file.
"""

from __future__ import annotations

import json
from pathlib import Path

import attrs

import mmcore

RESERVED = ("ids", "labels", "split")
PRESENT = ".present"


def _bad(path, message: str):
    return mmcore.ConfigError("path", f"{path}: {message}")


@attrs.frozen
class Layout:
    """The files of a validated directory. ``rows``: N; ``modalities``: name -> ``(features path, presence path or
    None, width)``; the optional files are paths or None; ``class_names`` from classes.json (or ``()``)."""

    root: Path
    rows: int
    modalities: dict
    ids: Path | None = None
    labels: Path | None = None
    split: Path | None = None
    class_names: tuple = ()


def _open(path: Path):
    """The header of an ``.npy`` file as a read-only memory map (nothing is read yet)."""
    import numpy as np

    try:
        array = np.load(path, mmap_mode="r")
    except ValueError as exc:
        raise _bad(path, f"cannot be memory-mapped ({exc}); save a plain numeric array with np.save") from exc
    except OSError as exc:
        raise _bad(path, f"not a readable .npy file: {exc}") from exc
    if not isinstance(array, np.ndarray):
        raise _bad(path, "expected one array saved with np.save, not an .npz archive")
    if array.ndim >= 2 and array.flags.f_contiguous and not array.flags.c_contiguous:
        raise _bad(path, "stored in Fortran order; save np.ascontiguousarray(x) so that rows are contiguous")
    return array


def _vector(path: Path, rows: int, kinds: str, what: str, reference: Path):
    array = _open(path)
    if array.ndim != 1:
        raise _bad(path, f"expected a 1-D array [{rows}], got shape {array.shape}")
    if array.dtype.kind not in kinds:
        raise _bad(path, f"expected {what}, got dtype {array.dtype}")
    if len(array) != rows:
        raise _bad(path, f"has {len(array)} rows but {reference.name} has {rows}; row i of every file is sample i")
    return array


def discover(root, modalities: list | None = None) -> Layout:
    """Check the directory's files (headers, dtypes, row counts, classes.json) without reading their values."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise mmcore.ConfigError("path", f"{root} is not a directory (expected one <modality>.npy per modality)")
    found = sorted(p.name[:-4] for p in root.glob("*.npy")
                   if p.name[:-4] not in RESERVED and not p.name.endswith(PRESENT + ".npy"))
    if modalities:
        missing = [m for m in modalities if m not in found]
        if missing:
            raise mmcore.ConfigError("modalities", f"{root / (missing[0] + '.npy')} not found; modality files in "
                                                   f"{root}: {', '.join(found) or 'none'}")
        names = list(modalities)
    else:
        names = found
    if not names:
        raise mmcore.ConfigError("path", f"{root} holds no <modality>.npy file (ids.npy, labels.npy, split.npy and "
                                         "*.present.npy are not modalities)")
    for orphan in sorted(root.glob(f"*{PRESENT}.npy")):
        if orphan.name[:-len(PRESENT + ".npy")] not in found:
            raise _bad(orphan, f"a presence file for a modality with no {orphan.name[:-len(PRESENT + '.npy')]}.npy")

    first, rows, specs = root / f"{names[0]}.npy", None, {}
    for name in names:
        path = root / f"{name}.npy"
        array = _open(path)
        if array.ndim != 2:
            raise _bad(path, f"expected a 2-D array [rows, features], got shape {array.shape}")
        if array.dtype.kind != "f":
            raise _bad(path, f"features must be floating point (float16/32/64), got dtype {array.dtype}; "
                             "convert with x.astype(np.float32)")
        if rows is None:
            rows = array.shape[0]
            if rows == 0:
                raise _bad(path, "has zero rows")
        elif array.shape[0] != rows:
            raise _bad(path, f"has {array.shape[0]} rows but {first.name} has {rows}; row i of every file is sample i")
        if array.shape[1] == 0:
            raise _bad(path, "has zero features per row")
        presence = root / f"{name}{PRESENT}.npy"
        if presence.exists():
            _vector(presence, rows, "b", "a bool array (True = the sample has this modality)", first)
        specs[name] = (path, presence if presence.exists() else None, int(array.shape[1]))

    optional = {}
    for name, kinds, what in (("ids", "iu", "integer sample ids"), ("labels", "iu", "integer class labels"),
                              ("split", "iu", "integers 0 (train), 1 (val), 2 (test)")):
        path = root / f"{name}.npy"
        if path.exists():
            _vector(path, rows, kinds, what, first)
        optional[name] = path if path.exists() else None

    class_names = ()
    classes = root / "classes.json"
    if classes.exists():
        if optional["labels"] is None:
            raise _bad(classes, "class names need labels.npy")
        try:
            class_names = json.loads(classes.read_text())
        except ValueError as exc:
            raise _bad(classes, f"not valid JSON: {exc}") from exc
        if not isinstance(class_names, list) or not all(isinstance(c, str) for c in class_names):
            raise _bad(classes, "expected a JSON list of class names (strings), index = label")
        class_names = tuple(class_names)
    return Layout(root, rows, specs, class_names=class_names, **optional)
