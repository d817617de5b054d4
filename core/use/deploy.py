"""Using a trained run: embed arrays, build and query a faiss index, export encoders that run without mmcore.

Inputs are ``.npy`` files read as memory maps, so files bigger than RAM stream through in batches. Outputs are
written to a temporary name and renamed, and never replace an existing file or directory unless asked.
"""

from __future__ import annotations

import json
import math
import os
import re
import struct
import warnings
from pathlib import Path

import numpy as np
import torch

from ..builtins.evaluators import unit_rows
from ..files import OutputExists, atomic_output, file_kind, replace_refusal

INDEX_FILE = "index.faiss"
INDEX_FILES = frozenset({INDEX_FILE, "ids.npy", "items.json", "meta.json"})
"""What an index directory holds; ``--overwrite`` replaces only a folder holding these alone (and meta.json)."""
META_LIMIT = 1 << 20
"""Largest ``meta.json`` read (bytes): it holds a dozen keys."""
RECALL_SAMPLE = 1000
"""Queries used to measure an approximate index's recall@10 against exact search when it is built."""


class IndexWarning(UserWarning):
    """An index whose origin cannot be checked (made before indexes recorded their run's fingerprint)."""


def _kind_of(path: Path) -> str:
    return file_kind(path.stat().st_mode)


def regular_file(path: str | Path, what: str = "file") -> Path:
    """``path`` when it is an existing regular file (symbolic links followed). ``FileNotFoundError`` or
    ``ValueError`` naming it otherwise: a FIFO would block the read forever, a device such as /dev/zero read
    without end, a folder is not an array."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such {what}")
    if not path.is_file():
        raise ValueError(f"{path}: {_kind_of(path)}, not a regular file (only regular files are read)")
    return path


def _taken(out: Path, overwrite: bool) -> bool:
    """Whether ``out`` exists (so the caller decides whether it may be replaced). ``ValueError`` unless its parent
    is an existing folder (mmcore does not create it); :class:`OutputExists` when it exists and ``overwrite`` is
    false."""
    if not out.parent.is_dir():
        raise ValueError(f"--out {out}: {out.parent} " + ("is not a folder" if out.parent.exists() else
                                                            "does not exist"))
    if not (out.exists() or out.is_symlink()):
        return False
    if not overwrite:
        raise OutputExists(f"{out} already exists; pass --overwrite or choose another --out")
    return True


def check_output_file(out: str | Path, overwrite: bool = False, inputs: tuple = ()) -> None:
    """Before any work: ``out`` can take a new file. Its folder exists, and it is free, or (``overwrite``) a
    regular file, which is replaced once the new one is complete; never a folder, a FIFO or a device, never one
    of the command's ``inputs``, and never a file of a run or an index directory (:func:`_part_of`)."""
    out = Path(out)
    if not _taken(out, overwrite):
        return
    if not out.is_file():
        raise OutputExists(f"--out {out} is {_kind_of(out) if out.exists() else 'a broken link'}; --overwrite replaces "
                           "only a file: remove it yourself or choose another --out")
    if any(Path(i).exists() and out.samefile(i) for i in inputs):
        raise OutputExists(f"--out {out} is this command's input; --overwrite would replace it: choose another --out")
    owner = _part_of(out)
    if owner:
        raise OutputExists(f"--out {out} is part of {owner}; --overwrite never replaces it: choose another --out")


def _part_of(path: Path) -> str:
    """What ``path`` belongs to when mmcore wrote it as part of something that would break without it: a run
    directory (a ``recipe.toml`` beside one of :data:`mmcore.runs.directory.RUN_ENTRIES`, anything under its
    ``checkpoints/``, ``tb/``, ``sources/``) or an index directory (its ``meta.json`` files); else ``""``."""
    from ..runs.directory import RUN_ENTRIES

    path = Path(path).resolve()
    for folder in list(path.parents)[:3]:
        if (folder / "recipe.toml").is_file() and path.relative_to(folder).parts[0] in RUN_ENTRIES:
            return f"the run directory {folder}"
    if (path.parent / "meta.json").is_file() and path.name in INDEX_FILES:
        return f"the index directory {path.parent}"
    return ""


def check_output_dir(out: str | Path, overwrite: bool, marker: str, owned, what: str) -> None:
    """Before any work: ``out`` can take a new directory. Its folder exists, and it is free, or (``overwrite``) an
    empty folder or one that mmcore wrote as ``what``: it holds ``marker`` and only names ``owned(name)`` accepts
    (:func:`mmcore.files.replace_refusal`). Never a file, a folder holding anything else, the working directory or
    a folder above it."""
    out = Path(out)
    if not _taken(out, overwrite):
        return
    problem = replace_refusal(out, marker, owned, what)
    if problem:
        raise OutputExists(problem)


def check_index_out(out: str | Path, overwrite: bool = False) -> None:
    """:func:`check_output_dir` for an index directory (``meta.json``, ``index.faiss``, ``ids.npy``,
    ``items.json``)."""
    check_output_dir(out, overwrite, "meta.json", INDEX_FILES.__contains__, "an index directory")


def _export_files(out: Path):
    """``owned`` for :func:`check_output_dir`: the files an export's ``manifest.json`` lists (none when it is not
    an export's manifest)."""
    try:
        manifest = json.loads(regular_file(out / "manifest.json").read_text())
        encoders = manifest["encoders"] if isinstance(manifest, dict) else None
        stems = set(encoders) if isinstance(encoders, dict) else set()
    except (OSError, ValueError, KeyError):
        stems = set()
    return lambda name: name == "manifest.json" or (bool(stems) and name.split(".")[0] in stems)


def check_export_out(out: str | Path, overwrite: bool = False) -> None:
    """:func:`check_output_dir` for an export directory (``manifest.json`` and the files it lists)."""
    check_output_dir(out, overwrite, "manifest.json", _export_files(Path(out)), "an export directory")


def _progress(total: int, label: str):
    """A tqdm bar on stderr (off when stderr is not a terminal or CI is set); returns ``(callback, close)``."""
    import sys

    from tqdm import tqdm

    bar = tqdm(total=total, desc=label, unit="rows", disable=not sys.stderr.isatty() or bool(os.environ.get("CI")))

    def update(done: int, _total: int) -> None:
        bar.update(done - bar.n)

    return update, bar.close


NPY_MAGIC = b"\x93NUMPY"


def open_npy(path: str | Path, what: str = "array file") -> np.ndarray:
    """A regular ``.npy`` file as a read-only memory map (no pickled objects). ``ValueError`` naming the file for
    anything else: another file type (an ``.npz`` archive, text), a truncated file, an object array."""
    path = regular_file(path, what)
    with open(path, "rb") as handle:
        head = handle.read(len(NPY_MAGIC))
    if head != NPY_MAGIC:
        hint = ": an .npz archive holds several arrays; save the one to use with numpy.save" if head[:2] == b"PK" \
            else ""
        raise ValueError(f"{path}: not a .npy {what} (it does not begin with the .npy header){hint}")
    try:
        return np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise ValueError(f"{path}: not a readable .npy {what}: {exc}") from exc


def read_array(path: str | Path, spec=None) -> np.ndarray:
    """A ``.npy`` file as a read-only memory map ``[N, *shape]`` of real numbers, ``N >= 1``, checked against the
    modality's input spec (``[N, input_dim]`` for feature vectors; a 2-D array when no spec is given)."""
    if spec is not None and spec.fields:
        raise ValueError(f"{path}: this modality takes a dict input {spec.describe()}; embed it from Python with "
                         "mmcore.load(RUN_DIR).encode(modality, {name: array, ...})")
    array = open_npy(path)
    expected = spec.shape if spec is not None else (None,)
    if array.ndim != len(expected) + 1 or any(e is not None and e != s for e, s in zip(expected, array.shape[1:])):
        want = ", ".join("*" if e is None else str(e) for e in expected)
        raise ValueError(f"{path}: expected an array [rows, {want}], got shape {list(array.shape)}")
    if array.dtype.kind not in "biuf":
        raise ValueError(f"{path}: holds {array.dtype} values; expected real numbers"
                         f"{f' ({spec.dtype})' if spec is not None else ''}")
    if len(array) == 0:
        raise ValueError(f"{path}: no rows (shape {list(array.shape)}): nothing to embed")
    return array


MEDIA_SUFFIXES = {
    "image": (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"),
    "audio": (".wav", ".flac", ".ogg", ".mp3", ".aiff", ".aif"),
    "text": (".txt",),
}
"""File name endings read from a folder, per raw-media kind."""
MANIFEST_SUFFIXES = (".csv", ".jsonl", ".parquet")


def _manifest_rows(path: Path) -> list:
    """The rows of a manifest (dicts); ``ValueError`` naming the file when it cannot be read as one."""
    import csv

    try:
        if path.suffix == ".csv":
            with open(path, newline="", encoding="utf-8") as handle:
                rows = list(csv.DictReader(handle))
        elif path.suffix == ".jsonl":
            rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        else:
            try:
                import pyarrow.parquet as pq
            except ImportError as exc:
                raise ValueError("reading Parquet needs pyarrow (pip install pyarrow)") from exc
            rows = pq.read_table(path).to_pylist()
    except (ValueError, csv.Error, OSError) as exc:
        raise ValueError(f"{path}: not a readable {path.suffix[1:]} manifest: {exc}") from exc
    if not all(isinstance(row, dict) for row in rows):
        raise ValueError(f"{path}: every manifest row must be an object with a column per modality")
    return rows


def read_raw(path: str | Path, kind: str, modality: str) -> tuple:
    """Raw items of one media ``kind`` and a name for each: ``(items, names)``, from

    - a folder: every file ending in one of :data:`MEDIA_SUFFIXES` below it, sorted by relative path (for text,
      each ``.txt`` file is one text);
    - a manifest (``.csv``, ``.jsonl``, ``.parquet``): the column named ``modality``, rows with an empty cell left
      out; file paths are relative to the manifest's folder;
    - a ``.txt`` file, for text: one text per non-empty line;
    - one media file.
    """
    path = Path(path)
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in MEDIA_SUFFIXES[kind])
        if not files:
            raise ValueError(f"{path}: no {kind} files ({', '.join(MEDIA_SUFFIXES[kind])}) in this folder")
        names = [str(p.relative_to(path)) for p in files]
        items = [p.read_text(encoding="utf-8").strip() for p in files] if kind == "text" else [str(p) for p in files]
        return items, names
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file or folder")
    regular_file(path, "input file")
    if path.suffix.lower() in MANIFEST_SUFFIXES:
        rows = _manifest_rows(path)
        if rows and modality not in rows[0]:
            raise ValueError(f"{path}: no column {modality!r}; its columns: {', '.join(rows[0])}")
        items, names = [], []
        for number, row in enumerate(rows, 1):
            cell = row.get(modality)
            if cell is None or (isinstance(cell, str) and not cell.strip()):
                continue
            cell = str(cell)
            items.append(cell if kind == "text" else str(path.parent / cell))
            names.append(cell if kind != "text" else f"row {number}")
        if not items:
            raise ValueError(f"{path}: the column {modality!r} is empty in every row")
        return items, names
    if kind == "text" and path.suffix.lower() == ".txt":
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError as exc:
            raise ValueError(f"{path}: not UTF-8 text ({exc})") from exc
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        if not lines:
            raise ValueError(f"{path}: no text in this file")
        return lines, [f"line {i}" for i in range(1, len(lines) + 1)]
    return [str(path)], [path.name]


def read_inputs(model, modality: str, path: str | Path) -> tuple:
    """What ``path`` holds for ``modality``: ``(inputs, names)``; an array memory map (names None) for tensor
    inputs, a list of raw items for raw media (see :func:`read_raw`)."""
    if modality not in model.modalities:
        raise KeyError(f"no encoder for modality {modality!r}; this run has: {', '.join(model.modalities)}")
    spec = model.inputs.get(modality)
    if spec is not None and spec.media:
        return read_raw(path, spec.media, modality)
    return read_array(path, spec), None


def _encode(model, modality: str, inputs, source, **kwargs) -> np.ndarray:
    """``model.encode``, its ``ValueError`` (a bad row, a bad value) naming ``source``, the file read."""
    try:
        return model.encode(modality, inputs, **kwargs)
    except ValueError as exc:
        raise ValueError(f"{source}: {exc}") from exc


def embed_file(model, modality: str, input_path: Path, out: Path, batch_size: int = 4096,
               overwrite: bool = False) -> np.ndarray:
    """Embed ``input_path`` with the run's encoder for ``modality`` into ``out`` (``.npy``, ``[N, dim]`` float32):
    an array file, or for raw media a folder, manifest, text file or media file (rows in :func:`read_raw`'s
    order). ``out`` is checked before anything is read and written whole or not at all."""
    check_output_file(out, overwrite, inputs=(input_path,))
    inputs, _ = read_inputs(model, modality, input_path)
    with atomic_output(out, suffix=".npy") as tmp:
        target = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=(len(inputs), model.dim))
        update, close = _progress(len(inputs), f"embed {modality}")
        try:
            _encode(model, modality, inputs, input_path, batch_size=batch_size, progress=update, out=target)
        finally:
            close()
        target.flush()
        del target
    return np.load(out, mmap_mode="r")


def read_ids(path: str | Path, rows: int | None = None) -> np.ndarray:
    """``--ids``: a ``.npy`` of one integer or string id per row ``[rows]``."""
    ids = open_npy(path, "ids file")
    if ids.ndim != 1 or ids.dtype.kind not in "iuUS":
        raise ValueError(f"{path}: expected one id per row, a 1-d array of integers or strings, got "
                         f"{ids.dtype} of shape {list(ids.shape)}")
    if rows is not None and len(ids) != rows:
        raise ValueError(f"{path}: {len(ids)} ids for {rows} rows")
    ids = np.asarray(ids)
    values, first, counts = np.unique(ids, return_index=True, return_counts=True)
    if len(values) < len(ids):  # a hit could not say which item it is
        twice = int(np.argmax(counts > 1))
        again = int(np.flatnonzero(ids == values[twice])[1])
        raise ValueError(f"{path}: ids must be unique; {values[twice]!r} is the id of rows {int(first[twice])} and "
                         f"{again}")
    return ids


def _faiss_reason(exc: Exception) -> str:
    """The gist of a faiss error (its last line, without the C++ function and source location)."""
    line = (str(exc).strip().splitlines() or [""])[-1]
    return re.sub(r"^Error in .*? at \S+:\d+: (Error: )?", "", line)


def _suggested_nlist(rows: int) -> int:
    """About 4 sqrt(rows) lists, at most rows / 39 (faiss's minimum of 39 training points per list)."""
    return max(1, min(int(4 * math.sqrt(rows)), rows // 39))


def _ivf_of(index):
    """The IVF part of a faiss index (whose ``nlist``/``nprobe`` matter), or None for a flat, HNSW, ... index."""
    import faiss

    try:
        return faiss.extract_index_ivf(index)
    except RuntimeError:
        return None


def new_index(factory: str, dim: int, rows: int):
    """An empty inner-product faiss index for ``factory``, checked before anything is embedded: ``ValueError`` for
    a string faiss cannot build, or an IVF index with more lists than there are ``rows`` to train them on."""
    import faiss

    if not isinstance(factory, str) or not factory.strip():
        raise ValueError(f"--factory {factory!r}: give a faiss index factory string, e.g. Flat, IVF256,Flat, "
                         "HNSW32,Flat")
    try:
        index = faiss.IndexFlatIP(dim) if factory == "Flat" else faiss.index_factory(dim, factory,
                                                                                       faiss.METRIC_INNER_PRODUCT)
    except RuntimeError as exc:
        raise ValueError(f"--factory {factory!r}: faiss cannot build this index for {dim}-d embeddings: "
                         f"{_faiss_reason(exc)}") from exc
    nlist = _ivf_of(index).nlist if _ivf_of(index) is not None else None
    if nlist is not None and rows < nlist:
        raise ValueError(f"--factory {factory!r}: {nlist} inverted lists need at least {nlist} rows to train (faiss "
                         f"asks for {39 * nlist}); the input has {rows}: use IVF{_suggested_nlist(rows)},Flat "
                         "(about 4 sqrt(rows) lists) or Flat")
    return index


def _fill_index(index, vectors: np.ndarray, factory: str, nprobe: int):
    """Train (if needed) and fill ``index``; a faiss failure (too few rows for PQ, an IDMap) is a ``ValueError``."""
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    try:
        if not index.is_trained:
            index.train(vectors)
        if _ivf_of(index) is not None:
            _ivf_of(index).nprobe = nprobe
        index.add(vectors)
    except RuntimeError as exc:
        raise ValueError(f"--factory {factory!r}: faiss could not build it from {len(vectors)} rows: "
                         f"{_faiss_reason(exc)}; approximate indexes need rows to train on (IVF<n>: n rows or more, "
                         "PQ: 256 or more): use fewer lists or Flat") from exc
    return index


def build_index_dir(model, modality: str, input_path: Path, out: Path, factory: str = "Flat", nprobe: int = 16,
                    ids_path: Path | None = None, batch_size: int = 4096, overwrite: bool = False) -> dict:
    """Embed ``input_path`` and write a faiss index directory: ``index.faiss``, ``ids.npy``, ``meta.json``.

    ``meta.json`` records the run and its weights' :attr:`~mmcore.runs.load.TrainedModel.fingerprint`, so that
    :func:`search_index` refuses queries embedded by another run. For an approximate ``factory`` the recall@10
    against exact search on a sample of the gallery's own items is measured and stored in ``meta.json`` (and
    returned). Everything (``out``, the ids, the factory against the number of rows) is checked before embedding.
    """
    import faiss

    from ..builtins.evaluators import build_index

    check_index_out(out, overwrite)
    if isinstance(nprobe, bool) or not isinstance(nprobe, int) or nprobe < 1:
        raise ValueError(f"--nprobe must be a positive integer, got {nprobe!r}")
    inputs, names = read_inputs(model, modality, input_path)
    ids = np.arange(len(inputs)) if ids_path is None else read_ids(ids_path, len(inputs))
    index = new_index(factory, model.dim, len(inputs))
    update, close = _progress(len(inputs), f"embed {modality}")
    try:
        vectors = _encode(model, modality, inputs, input_path, batch_size=batch_size, progress=update)
    finally:
        close()
    index = _fill_index(index, vectors, factory, nprobe)
    meta = {"run": str(Path(model.run_dir).resolve()), "run_fingerprint": model.fingerprint,
            "checkpoint": Path(model.checkpoint).name if getattr(model, "checkpoint", None) else None,
            "modality": modality, "dim": model.dim, "count": len(vectors), "factory": factory,
            "nprobe": nprobe if _ivf_of(index) is not None else None}
    if factory != "Flat":
        sample = vectors[np.random.default_rng(0).choice(len(vectors), min(RECALL_SAMPLE, len(vectors)), False)]
        k = min(10, len(vectors))
        _, exact = build_index(vectors).search(sample, k)
        _, approx = index.search(sample, k)
        meta["recall@10_vs_exact"] = float(np.mean([len(set(a) & set(b)) / k for a, b in zip(exact, approx)]))
    with atomic_output(out, directory=True) as tmp:
        faiss.write_index(index, str(tmp / INDEX_FILE))
        np.save(tmp / "ids.npy", ids)
        if names is not None:
            (tmp / "items.json").write_text(json.dumps(names, indent=1))
        meta["index_bytes"] = (tmp / INDEX_FILE).stat().st_size
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2))
    return meta


def _is_count(value, least: int = 1) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= least


META_FIELDS = {"run": "a string", "modality": "a string", "dim": "a positive integer", "count": "a positive integer",
               "factory": "a string"}
"""What every ``meta.json`` holds, and what each value is."""
META_OPTIONAL = {"nprobe": "a positive integer", "index_bytes": "a size in bytes", "run_fingerprint": "a string",
                 "checkpoint": "a string"}
"""What newer ``meta.json`` files add (null or absent in older ones)."""
_META_CHECKS = {"a string": lambda v: isinstance(v, str), "a positive integer": _is_count,
                "a size in bytes": lambda v: _is_count(v, 0)}


def read_meta(index_dir: Path) -> dict:
    """An index directory's ``meta.json``, checked: ``ValueError`` naming the file and the key for anything
    else than what :func:`build_index_dir` writes (:data:`META_FIELDS`, :data:`META_OPTIONAL`)."""
    index_dir = Path(index_dir)
    path = index_dir / "meta.json"
    if not index_dir.is_dir() or not path.exists():
        there = "no meta.json" if index_dir.is_dir() else "a file" if index_dir.exists() else "no such folder"
        raise ValueError(f"{index_dir} is not an index directory ({there}): make one with mmcore index")
    if regular_file(path, "meta.json").stat().st_size > META_LIMIT:
        raise ValueError(f"{path}: {path.stat().st_size} bytes, too big for an index's meta.json")
    try:
        meta = json.loads(path.read_bytes().decode("utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path}: damaged, not JSON ({exc}); rebuild the index with mmcore index") from exc
    if not isinstance(meta, dict):
        raise ValueError(f"{path}: damaged: expected a JSON object, got {type(meta).__name__}")
    for key, kind in {**META_FIELDS, **META_OPTIONAL}.items():
        value = meta.get(key)
        if value is None and key in META_FIELDS:
            raise ValueError(f"{path}: damaged: {key!r} is missing; rebuild the index with mmcore index")
        if value is not None and not _META_CHECKS[kind](value):
            raise ValueError(f"{path}: damaged: {key!r} should be {kind}, got {value!r}")
    return meta


class _Bounded:
    """Reads a file's fields in order; every length is checked against the bytes left first, so a damaged length
    cannot make anyone allocate (or seek) more than the file holds."""

    def __init__(self, handle, size: int):
        self.handle, self.size = handle, size

    def _fits(self, n: int) -> int:
        if n < 0 or self.handle.tell() + n > self.size:
            raise ValueError(f"a field of {n} bytes at offset {self.handle.tell()} runs past the end of the file "
                             f"({self.size} bytes)")
        return n

    def take(self, n: int) -> bytes:
        return self.handle.read(self._fits(n))

    def skip(self, n: int) -> None:
        self.handle.seek(self._fits(n), 1)

    def u64(self) -> int:
        return struct.unpack("<Q", self.take(8))[0]

    def header(self) -> tuple:
        """faiss's index header after the four-letter code: ``(d, ntotal)``."""
        d, ntotal = struct.unpack("<iq", self.take(12))
        self.take(17)  # two unused int64 and is_trained
        if struct.unpack("<i", self.take(4))[0] > 1:  # metric type; a metric argument follows for the others
            self.take(4)
        return d, ntotal

    def flat(self) -> tuple:
        """A flat index after its code: ``(d, ntotal)``; its vectors are checked to be ``ntotal x d`` floats."""
        d, ntotal = self.header()
        floats = self.u64()
        if floats != ntotal * d:
            raise ValueError(f"a flat index of {ntotal} x {d} claims {floats} values")
        self.skip(4 * floats)
        return d, ntotal


FLAT_CODES = (b"IxFI", b"IxF2", b"IxFl")


def faiss_layout_problem(path: Path, dim: int, count: int) -> str | None:
    """Why ``index.faiss`` does not hold what its header and ``meta.json`` say, or None. The indexes mmcore
    writes by default, flat and IVF-flat (with a flat quantizer), are walked field by field: every size in them
    must fit in and add up to the file's size, checked before faiss allocates what the header claims. Other
    index types (HNSW, PQ, ...): their header's ``d`` and ``ntotal`` only; the rest is faiss's to check."""
    size = path.stat().st_size
    with open(path, "rb") as handle:
        reader = _Bounded(handle, size)
        try:
            code = reader.take(4)
            d, ntotal = reader.flat() if code in FLAT_CODES else reader.header()
            if (d, ntotal) != (dim, count):
                return f"it holds {ntotal} x {d} embeddings; meta.json says {count} x {dim}"
            if code == b"IwFl":
                _walk_ivf_flat(reader, dim, ntotal)
            elif code not in FLAT_CODES:
                return None
        except (ValueError, struct.error) as exc:
            return str(exc)
        if handle.tell() != size:
            return f"{size - handle.tell()} bytes more than its header accounts for"
    return None


def _walk_ivf_flat(reader: _Bounded, dim: int, ntotal: int) -> None:
    """Read an IVF-flat index after its header (``ValueError`` where a part is not what mmcore writes or a size
    does not fit): nlist, nprobe, a flat quantizer of nlist centroids, no direct map, the inverted lists."""
    nlist = reader.u64()
    reader.u64()  # nprobe
    if reader.take(4) not in FLAT_CODES:
        raise ValueError("an IVF index whose quantizer is not flat (mmcore's default IVF indexes have a flat one)")
    if reader.flat() != (dim, nlist):
        raise ValueError(f"its quantizer does not hold its {nlist} list centroids of dimension {dim}")
    if reader.take(1) != b"\0" or reader.u64() != 0:
        raise ValueError("an IVF index with a direct map (mmcore writes none)")
    if reader.take(4) != b"ilar" or reader.u64() != nlist:
        raise ValueError("an IVF index whose inverted lists are not stored in it")
    code_size = reader.u64()
    if code_size != 4 * dim:
        raise ValueError(f"inverted-list codes of {code_size} bytes, not {4 * dim}")
    layout, entries = reader.take(4), reader.u64()
    sizes = np.frombuffer(reader.take(8 * entries), dtype="<u8")
    if layout == b"sprs":
        sizes = sizes[1::2]
    elif layout != b"full" or entries != nlist:
        raise ValueError("inverted lists of an unknown layout")
    held = sum(int(n) for n in sizes)
    if held != ntotal:
        raise ValueError(f"inverted lists holding {held} vectors, not {ntotal}")
    reader.skip(ntotal * (code_size + 8))


def read_faiss_bounded(path: Path):
    """``faiss.read_index`` with faiss's limit on the bytes of any one array it deserialises lowered to the file's
    size while it reads (no array in a file is bigger than the file), so that a size field of any index type
    cannot make it allocate more. faiss versions without that limit read as usual."""
    import faiss

    limit = getattr(faiss, "get_deserialization_vector_byte_limit", None)
    if limit is None:
        return faiss.read_index(str(path))
    before = limit()
    faiss.set_deserialization_vector_byte_limit(min(before, max(path.stat().st_size, 64)))
    try:
        return faiss.read_index(str(path))
    finally:
        faiss.set_deserialization_vector_byte_limit(before)


def open_index(index_dir: Path, meta: dict | None = None) -> tuple:
    """An index directory read and checked: ``(meta, index, ids, names)`` (names: ``items.json``, or None).
    ``ValueError`` naming the file for anything damaged: a bad ``meta.json``, an ``index.faiss`` whose size does
    not match what it claims (checked before faiss reads it: :func:`faiss_layout_problem`), ids or names of
    another length. ``meta``: the directory's :func:`read_meta`, when read already."""
    index_dir = Path(index_dir)
    meta = read_meta(index_dir) if meta is None else meta
    path = regular_file(index_dir / INDEX_FILE, "index file")
    if "index_bytes" in meta and path.stat().st_size != meta["index_bytes"]:
        raise ValueError(f"{path}: damaged: {path.stat().st_size} bytes, meta.json recorded {meta['index_bytes']}; "
                         "rebuild the index with mmcore index")
    problem = faiss_layout_problem(path, meta["dim"], meta["count"])
    if problem:
        raise ValueError(f"{path}: damaged: {problem}; rebuild the index with mmcore index")
    try:
        index = read_faiss_bounded(path)
    except (RuntimeError, MemoryError) as exc:
        raise ValueError(f"{path}: damaged, faiss cannot read it: {_faiss_reason(exc)}") from exc
    if (index.d, index.ntotal) != (meta["dim"], meta["count"]):
        raise ValueError(f"{path}: holds {index.ntotal} x {index.d} embeddings; meta.json says "
                         f"{meta['count']} x {meta['dim']}")
    if meta.get("nprobe") and _ivf_of(index) is not None:
        _ivf_of(index).nprobe = meta["nprobe"]
    ids = read_ids(index_dir / "ids.npy", meta["count"])
    return meta, index, ids, item_names(index_dir, meta["count"])


def item_names(index_dir: Path, count: int | None = None):
    """The source of each indexed row (file paths, manifest rows) for an index of raw media, else None."""
    path = Path(index_dir) / "items.json"
    if not (path.exists() or path.is_symlink()):
        return None
    regular_file(path, "items.json")
    try:
        names = json.loads(path.read_bytes().decode("utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path}: damaged, not JSON ({exc})") from exc
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names) or (
            count is not None and len(names) != count):
        raise ValueError(f"{path}: damaged: expected a list of {count or 'the'} item names")
    return names


def check_index_run(index_dir: Path, meta: dict, model) -> None:
    """Refuse (``ValueError``) an index built by another run or checkpoint than ``model``: its embeddings live in
    another space, and a search would return noise. The check compares the weights' fingerprint ``meta.json``
    recorded (a moved or copied run still matches); an index made before fingerprints were recorded gets an
    :class:`IndexWarning` when it names another run directory."""
    recorded = meta.get("run_fingerprint")
    if recorded is None:
        same = Path(meta["run"]) == Path(model.run_dir).resolve()
        warnings.warn(f"{index_dir} was built before indexes recorded their run's weights; cannot check that "
                      f"{model.run_dir} built it{'' if same else ' (its meta.json names ' + meta['run'] + ')'}: "
                      "rebuild it with mmcore index to have it checked", IndexWarning, stacklevel=3)
        return
    if recorded != model.fingerprint:
        built = meta["run"] + (f", checkpoint {meta['checkpoint']}" if meta.get("checkpoint") else "")
        used = str(model.run_dir) + (f", checkpoint {Path(model.checkpoint).name}"
                                     if getattr(model, "checkpoint", None) else "")
        raise ValueError(f"{index_dir} was built by another run or checkpoint ({built}) than the one searching it "
                         f"({used}): its embeddings live in another space; search it with the run that built it, "
                         "or index the gallery again with this one")


def search_index(index_dir: Path, model, modality: str, queries_path, k: int = 10,
                 batch_size: int = 4096) -> tuple:
    """Embed queries of ``modality`` with ``model`` and search the index: ``(ids [n, k], scores [n, k], names)``;
    ``names`` ``[n, k]`` are the indexed items' sources for an index of raw media (else None). Where an
    approximate index finds fewer than ``k`` hits, the id is -1 (an empty string for string ids), the score -inf
    and the name None.

    ``queries_path``: an array file, raw media as :func:`read_raw` reads them, or a list of raw items (e.g. a
    typed text query). The index must have been built by ``model``'s run and checkpoint (:func:`check_index_run`)."""
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"-k must be a positive integer, got {k!r}")
    index_dir = Path(index_dir)
    meta = read_meta(index_dir)
    if meta["dim"] != model.dim:
        raise ValueError(f"index {index_dir} holds {meta['dim']}-d embeddings but run {model.run_dir} makes "
                         f"{model.dim}-d ones: embed queries with the run that built the index")
    check_index_run(index_dir, meta, model)
    meta, index, ids, names = open_index(index_dir, meta)
    raw = queries_path if isinstance(queries_path, list) else read_inputs(model, modality, queries_path)[0]
    queries = _encode(model, modality, raw, queries_path if not isinstance(queries_path, list) else "queries",
                      batch_size=batch_size)
    if queries.shape[1] != index.d:
        raise ValueError(f"{modality} embeddings are {queries.shape[1]}-d; the index holds {index.d}-d ones")
    scores, rows = index.search(np.ascontiguousarray(queries, dtype=np.float32), min(int(k), index.ntotal))
    missing = rows < 0
    found = ids[np.where(missing, 0, rows)]
    found = found.astype(np.int64) if found.dtype.kind == "u" else found
    found[missing] = -1 if found.dtype.kind == "i" else ""
    scores[missing] = -np.inf
    hit_names = None
    if names is not None:
        hit_names = np.array([[None if r < 0 else names[r] for r in row] for row in rows], dtype=object)
    return found, scores, hit_names


EXPORT_FORMATS = ("torchscript", "onnx", "safetensors")


EXPORT_PACKAGES = {"onnx": ("onnx", "onnxscript"), "safetensors": ("safetensors",)}
"""What each export format needs installed besides torch (torch's ONNX exporter needs onnxscript as well)."""


def check_export_format(fmt: str) -> None:
    """``ValueError`` naming the format's missing packages and the pip line, before anything is loaded or
    written."""
    import importlib.util

    if fmt not in EXPORT_FORMATS:
        raise ValueError(f"unknown export format {fmt!r}; use {', '.join(EXPORT_FORMATS)}")
    missing = [name for name in EXPORT_PACKAGES.get(fmt, ()) if importlib.util.find_spec(name) is None]
    if missing:
        raise ValueError(f"--format {fmt} needs {' and '.join(missing)}: pip install {' '.join(missing)}")


def export_encoders(model, fmt: str, out: Path, overwrite: bool = False) -> list:
    """Write each encoder (with the final L2 normalisation) so it runs without mmcore.

    ``torchscript``: ``<modality>.pt``, load with ``torch.jit.load``. ``onnx``: ``<modality>.onnx`` (needs the
    ``onnx`` and ``onnxscript`` packages). ``safetensors``: ``<modality>.safetensors`` weights plus ``<modality>.json`` describing the
    layers (needs ``safetensors``). A ``manifest.json`` lists input widths and the embedding width. ``out`` and
    ``fmt`` are checked before anything is written (:func:`check_export_out`).
    """
    check_export_format(fmt)
    check_export_out(out, overwrite)
    manifest = {"run": str(Path(model.run_dir).resolve()), "format": fmt, "dim": model.dim, "encoders": {}}
    with atomic_output(out, directory=True) as tmp:
        for modality in model.modalities:
            encoder = model.module.encoders[modality].cpu().eval()
            spec = model.inputs[modality]
            wrapped = Normalised(encoder).eval()
            if spec.media and fmt != "safetensors":
                example = raw_example(model, modality)
            else:
                example = spec.example(2)
            if fmt == "torchscript":
                path = tmp / f"{modality}.pt"
                inputs = (example,) if isinstance(example, dict) else example
                torch.jit.trace(wrapped, inputs, strict=False).save(str(path))
            elif fmt == "onnx":
                path = tmp / f"{modality}.onnx"
                torch.onnx.export(wrapped, (example,), str(path), input_names=["inputs"], output_names=["embeddings"],
                                  dynamic_axes={"inputs": {0: "batch"}, "embeddings": {0: "batch"}})
            elif fmt == "safetensors":
                from safetensors.torch import save_file

                path = tmp / f"{modality}.safetensors"
                save_file({k: v.contiguous() for k, v in encoder.state_dict().items()}, str(path))
                (tmp / f"{modality}.json").write_text(json.dumps({"layers": repr(encoder)}, indent=2))
            else:
                raise ValueError(f"unknown export format {fmt!r}; use torchscript, onnx or safetensors")
            manifest["encoders"][modality] = {"file": path.name, "input": spec.to_dict(),
                                              **({"input_dim": spec.dim} if spec.is_vector else {})}
            if spec.media:
                manifest["encoders"][modality]["note"] = (
                    f"takes the tensors its preprocess makes from raw {spec.media} (not part of the export): "
                    "apply the same preprocessing, e.g. mmcore.load(RUN).module.encoders[m].preprocess")
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2))
    model.module.to(model.device)
    return sorted(out.iterdir())


RAW_EXAMPLES = {"text": lambda: "a photo", "audio": lambda: (np.zeros((1, 16000), np.float32), 16000)}


def raw_example(model, modality: str):
    """A batch of 2 preprocessed placeholder items (a grey image, a second of silence, a short text), the example
    input that traces a raw-media encoder after its preprocessing."""
    kind = model.inputs[modality].media
    if kind == "image":
        from PIL import Image

        item = Image.new("RGB", (224, 224), (128, 128, 128))
    else:
        item = RAW_EXAMPLES[kind]()
    encoder = model.module.encoders[modality]
    values = [encoder.preprocess(item, train=False) for _ in range(2)]
    from torch.utils.data import default_collate

    return (getattr(encoder, "collate", None) or default_collate)(values)


class Normalised(torch.nn.Module):
    """``encoder`` followed by L2 normalisation: ``[B, input_dim] -> [B, dim]`` unit vectors."""

    def __init__(self, encoder):
        super().__init__()
        self.encoder = encoder

    def forward(self, inputs):
        return unit_rows(self.encoder(inputs))
