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


def embed_file(model, modality: str, input_path: Path, out: Path, batch_size: int = 4096,
               overwrite: bool = False) -> np.ndarray:
    """Embed ``input_path`` with the run's encoder for ``modality`` into ``out`` (``.npy``, ``[N, dim]`` float32)."""
    inputs = read_array(input_path, model.inputs.get(modality))
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
    inputs = read_array(input_path, model.inputs.get(modality))
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
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2))
    return meta


def search_index(index_dir: Path, model, modality: str, queries_path: Path, k: int = 10,
                 batch_size: int = 4096) -> tuple[np.ndarray, np.ndarray]:
    """Embed queries of ``modality`` with ``model`` and search the index: ``(ids [n, k], scores [n, k])``."""
    import faiss

    meta = json.loads((index_dir / "meta.json").read_text())
    if meta["dim"] != model.dim:
        raise ValueError(f"index {index_dir} holds {meta['dim']}-d embeddings but run {model.run_dir} makes "
                         f"{model.dim}-d ones: embed queries with the run that built the index")
    index = faiss.read_index(str(index_dir / INDEX_FILE))
    if meta.get("nprobe"):
        faiss.extract_index_ivf(index).nprobe = meta["nprobe"]
    ids = np.load(index_dir / "ids.npy")
    queries = model.encode(modality, read_array(queries_path, model.inputs.get(modality)), batch_size=batch_size)
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
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2))
    model.module.to(model.device)
    return sorted(out.iterdir())


class Normalised(torch.nn.Module):
    """``encoder`` followed by L2 normalisation: ``[B, input_dim] -> [B, dim]`` unit vectors."""

    def __init__(self, encoder):
        super().__init__()
        self.encoder = encoder

    def forward(self, inputs):
        return unit_rows(self.encoder(inputs))
