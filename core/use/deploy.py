"""Using a trained run: embed arrays, build and query a faiss index, export encoders that run without mmcore.

Inputs are ``.npy`` files read as memory maps, so files bigger than RAM stream through in batches. Outputs are
written to a temporary name and renamed, and never replace an existing file or directory unless asked.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import torch

from ..builtins.evaluators import unit_rows
from ..files import OutputExists, atomic_output, check_output  # noqa: F401 - OutputExists: raised here

INDEX_FILE = "index.faiss"
RECALL_SAMPLE = 1000
"""Queries used to measure an approximate index's recall@10 against exact search when it is built."""


def _progress(total: int, label: str):
    """A tqdm bar on stderr (off when stderr is not a terminal or CI is set); returns ``(callback, close)``."""
    import sys

    from tqdm import tqdm

    bar = tqdm(total=total, desc=label, unit="rows", disable=not sys.stderr.isatty() or bool(os.environ.get("CI")))

    def update(done: int, _total: int) -> None:
        bar.update(done - bar.n)

    return update, bar.close


def read_array(path: str | Path, spec=None) -> np.ndarray:
    """A ``.npy`` file as a read-only memory map ``[N, *shape]``, checked against the modality's input spec
    (``[N, input_dim]`` for feature vectors; a 2-D array when no spec is given)."""
    array = np.load(path, mmap_mode="r")
    expected = spec.shape if spec is not None and not spec.fields else (None,)
    if spec is not None and spec.fields:
        raise ValueError(f"{path}: this modality takes a dict input {spec.describe()}; embed it from Python with "
                         "mmcore.load(RUN_DIR).encode(modality, {name: array, ...})")
    if array.ndim != len(expected) + 1 or any(e is not None and e != s for e, s in zip(expected, array.shape[1:])):
        want = ", ".join("*" if e is None else str(e) for e in expected)
        raise ValueError(f"{path}: expected an array [rows, {want}], got shape {list(array.shape)}")
    return array


MEDIA_SUFFIXES = {
    "image": (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"),
    "audio": (".wav", ".flac", ".ogg", ".mp3", ".aiff", ".aif"),
    "text": (".txt",),
}
"""File name endings read from a folder, per raw-media kind."""
MANIFEST_SUFFIXES = (".csv", ".jsonl", ".parquet")


def _manifest_rows(path: Path) -> list:
    import csv

    if path.suffix == ".csv":
        with open(path, newline="", encoding="utf-8") as handle:
            return list(csv.DictReader(handle))
    if path.suffix == ".jsonl":
        return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    try:
        import pyarrow.parquet as pq
    except ImportError as exc:
        raise ValueError(f"{path}: reading Parquet needs pyarrow (pip install pyarrow)") from exc
    return pq.read_table(path).to_pylist()


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
        lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
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


def embed_file(model, modality: str, input_path: Path, out: Path, batch_size: int = 4096,
               overwrite: bool = False) -> np.ndarray:
    """Embed ``input_path`` with the run's encoder for ``modality`` into ``out`` (``.npy``, ``[N, dim]`` float32):
    an array file, or for raw media a folder, manifest, text file or media file (rows in :func:`read_raw`'s
    order)."""
    inputs, _ = read_inputs(model, modality, input_path)
    check_output(out, overwrite)
    with atomic_output(out, suffix=".npy") as tmp:
        target = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=(len(inputs), model.dim))
        update, close = _progress(len(inputs), f"embed {modality}")
        for start in range(0, len(inputs), batch_size):
            chunk = inputs[start:start + batch_size]
            target[start:start + len(chunk)] = model.encode(modality, chunk, batch_size=batch_size)
            update(start + len(chunk), len(inputs))
        close()
        target.flush()
        del target
    return np.load(out, mmap_mode="r")


def build_index_dir(model, modality: str, input_path: Path, out: Path, factory: str = "Flat", nprobe: int = 16,
                    ids_path: Path | None = None, batch_size: int = 4096, overwrite: bool = False) -> dict:
    """Embed ``input_path`` and write a faiss index directory: ``index.faiss``, ``ids.npy``, ``meta.json``.

    For an approximate ``factory`` the recall@10 against exact search on a sample of the gallery's own items is
    measured and stored in ``meta.json`` (and returned).
    """
    import faiss

    from ..builtins.evaluators import build_index

    check_output(out, overwrite)
    inputs, names = read_inputs(model, modality, input_path)
    update, close = _progress(len(inputs), f"embed {modality}")
    vectors = model.encode(modality, inputs, batch_size=batch_size, progress=update)
    close()
    ids = np.arange(len(vectors)) if ids_path is None else np.load(ids_path)
    if len(ids) != len(vectors):
        raise ValueError(f"{ids_path}: {len(ids)} ids for {len(vectors)} rows")
    index = build_index(vectors, factory, nprobe)
    meta = {"run": str(Path(model.run_dir).resolve()), "modality": modality, "dim": model.dim, "count": len(vectors),
            "factory": factory, "nprobe": nprobe if "IVF" in factory else None}
    if factory != "Flat":
        sample = vectors[np.random.default_rng(0).choice(len(vectors), min(RECALL_SAMPLE, len(vectors)), False)]
        _, exact = build_index(vectors).search(sample, 10)
        _, approx = index.search(sample, 10)
        meta["recall@10_vs_exact"] = float(np.mean([len(set(a) & set(b)) / 10 for a, b in zip(exact, approx)]))
    with atomic_output(out, directory=True) as tmp:
        faiss.write_index(index, str(tmp / INDEX_FILE))
        np.save(tmp / "ids.npy", ids)
        if names is not None:
            (tmp / "items.json").write_text(json.dumps(names, indent=1))
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2))
    return meta


def item_names(index_dir: Path):
    """The source of each indexed row (file paths, manifest rows) for an index of raw media, else None."""
    path = Path(index_dir) / "items.json"
    return json.loads(path.read_text()) if path.is_file() else None


def search_index(index_dir: Path, model, modality: str, queries_path, k: int = 10,
                 batch_size: int = 4096) -> tuple[np.ndarray, np.ndarray]:
    """Embed queries of ``modality`` with ``model`` and search the index: ``(ids [n, k], scores [n, k])``.

    ``queries_path``: an array file, raw media as :func:`read_raw` reads them, or a list of raw items (e.g. a
    typed text query)."""
    import faiss

    if not (Path(index_dir) / "meta.json").is_file():
        raise FileNotFoundError(f"{index_dir} is not an index directory (no meta.json): make one with mmcore index")
    meta = json.loads((Path(index_dir) / "meta.json").read_text())
    if meta["dim"] != model.dim:
        raise ValueError(f"index {index_dir} holds {meta['dim']}-d embeddings but run {model.run_dir} makes "
                         f"{model.dim}-d ones: embed queries with the run that built the index")
    index = faiss.read_index(str(index_dir / INDEX_FILE))
    if meta.get("nprobe"):
        faiss.extract_index_ivf(index).nprobe = meta["nprobe"]
    ids = np.load(index_dir / "ids.npy")
    raw = queries_path if isinstance(queries_path, list) else read_inputs(model, modality, queries_path)[0]
    queries = model.encode(modality, raw, batch_size=batch_size)
    scores, rows = index.search(queries, min(k, index.ntotal))
    return ids[rows], scores


def export_encoders(model, fmt: str, out: Path, overwrite: bool = False) -> list:
    """Write each encoder (with the final L2 normalisation) so it runs without mmcore.

    ``torchscript``: ``<modality>.pt``, load with ``torch.jit.load``. ``onnx``: ``<modality>.onnx`` (needs the
    ``onnx`` package). ``safetensors``: ``<modality>.safetensors`` weights plus ``<modality>.json`` describing the
    layers (needs ``safetensors``). A ``manifest.json`` lists input widths and the embedding width.
    """
    check_output(out, overwrite)
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
