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

Every file is opened once here, by a :class:`~mmcore_features.reader.NpyRows` that records its header and identity;
the dataset reads through these readers, so a file changed after this check is detected, not read with a stale
header. Only regular files are opened (a FIFO, a device, a directory is refused by name); a dangling or looping
symlink is an error, not a missing optional file.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import attrs

import mmcore

RESERVED = ("ids", "labels", "split")
PRESENT = ".present"
MAX_CLASSES_JSON = 16 * 2**20  # bytes read from classes.json at most


def _bad(path, message: str):
    return mmcore.ConfigError("path", f"{path}: {message}")


@attrs.frozen
class Layout:
    """The files of a validated directory. ``rows``: N; ``modalities``: name -> ``(features reader, presence reader or
    None, width)``; the optional files are readers (:class:`~mmcore_features.reader.NpyRows`) or None;
    ``class_names`` from classes.json (or ``()``). Feature readers use the ``io`` given to :func:`discover`, the 1-D
    files a memory map."""

    root: Path
    rows: int
    modalities: dict
    ids: object = None
    labels: object = None
    split: object = None
    class_names: tuple = ()


def _exists(path: Path) -> bool:
    """Whether anything is at ``path``, a dangling or looping symlink included (opening it then says what is wrong)."""
    return os.path.lexists(path)


def _open(path: Path, io: str = "mmap"):
    """A reader of ``path`` (header read and checked, identity recorded; no values read yet)."""
    from .reader import NpyRows

    try:
        reader = NpyRows(path, io)
    except mmcore.DataError as exc:
        raise mmcore.ConfigError("path", str(exc)) from exc
    if len(reader.shape) >= 2 and reader.fortran:
        raise _bad(path, "stored in Fortran order; save np.ascontiguousarray(x) so that rows are contiguous")
    return reader


def _vector(path: Path, rows: int, kinds: str, what: str, reference: Path):
    reader = _open(path)
    if len(reader.shape) != 1:
        raise _bad(path, f"expected a 1-D array [{rows}], got shape {reader.shape}")
    if reader.dtype.kind not in kinds:
        raise _bad(path, f"expected {what}, got dtype {reader.dtype}")
    if len(reader) != rows:
        raise _bad(path, f"has {len(reader)} rows but {reference.name} has {rows}; row i of every file is sample i")
    return reader


def _class_names(path: Path) -> tuple:
    """The class names of classes.json: a JSON list of strings (at most :data:`MAX_CLASSES_JSON` bytes, UTF-8)."""
    from .reader import read_small

    try:
        text = read_small(path, MAX_CLASSES_JSON).decode("utf-8")
        names = json.loads(text)
    except mmcore.DataError as exc:
        raise mmcore.ConfigError("path", str(exc)) from exc
    except UnicodeDecodeError as exc:
        raise _bad(path, f"not UTF-8 text ({exc})") from exc
    except RecursionError as exc:
        raise _bad(path, "not a list of class names: nested too deeply") from exc
    except ValueError as exc:
        raise _bad(path, f"not valid JSON: {exc}") from exc
    if not isinstance(names, list) or not all(isinstance(c, str) for c in names):
        raise _bad(path, "expected a JSON list of class names (strings), index = label")
    return tuple(names)


def discover(root, modalities: list | None = None, io: str = "pread") -> Layout:
    """Check the directory's files (headers, dtypes, row counts, classes.json) without reading their values; the
    returned layout holds a reader of each file (features read with ``io``)."""
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
        reader = _open(path, io)
        if len(reader.shape) != 2:
            raise _bad(path, f"expected a 2-D array [rows, features], got shape {reader.shape}")
        if reader.dtype.kind != "f":
            raise _bad(path, f"features must be floating point (float16/32/64), got dtype {reader.dtype}; "
                             "convert with x.astype(np.float32)")
        if rows is None:
            rows = reader.shape[0]
            if rows == 0:
                raise _bad(path, "has zero rows")
        elif reader.shape[0] != rows:
            raise _bad(path, f"has {reader.shape[0]} rows but {first.name} has {rows}; row i of every file is "
                             "sample i")
        if reader.shape[1] == 0:
            raise _bad(path, "has zero features per row")
        presence = root / f"{name}{PRESENT}.npy"
        mask = (_vector(presence, rows, "b", "a bool array (True = the sample has this modality)", first)
                if _exists(presence) else None)
        specs[name] = (reader, mask, int(reader.shape[1]))

    optional = {}
    for name, kinds, what in (("ids", "iu", "integer sample ids"), ("labels", "iu", "integer class labels"),
                              ("split", "iu", "integers 0 (train), 1 (val), 2 (test)")):
        path = root / f"{name}.npy"
        optional[name] = _vector(path, rows, kinds, what, first) if _exists(path) else None

    class_names = ()
    classes = root / "classes.json"
    if _exists(classes):
        if optional["labels"] is None:
            raise _bad(classes, "class names need labels.npy")
        class_names = _class_names(classes)
    return Layout(root, rows, specs, class_names=class_names, **optional)
