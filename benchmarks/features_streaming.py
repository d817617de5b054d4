"""Streaming a large on-disk feature set with the ``features`` dataset: resident memory and read speed.

Writes ``ROWS x MODALITIES x DIM`` float32 (default 2,000,000 x 4 x 64 = 2.05 GB) plus presence files into a temporary
directory with plain file writes (no memory map, so the writer's memory does not count), builds the dataset (which
scans every present row for NaN once), then reads random training batches through a DataLoader exactly as the runner
does (``__getitems__``, identity collate) and reports the process's resident memory (``/proc/self/status``):
``VmRSS`` after building, the peak ``VmHWM`` while iterating (reset first through ``/proc/self/clear_refs``), and
its anonymous / file-backed parts.

    python benchmarks/features_streaming.py                       # 2M rows, both io modes
    python benchmarks/features_streaming.py --rows 10000000       # 10M rows x 4 x 64 = 10.2 GB on disk
"""

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np


def memory() -> dict:
    """MiB of VmRSS, VmHWM, RssAnon and RssFile of this process."""
    out = {}
    for line in open("/proc/self/status"):
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM", "RssAnon", "RssFile"):
            out[key] = int(value.split()[0]) / 1024
    return out


def reset_peak() -> None:
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # resets VmHWM to the current VmRSS (Linux >= 4.0)


def write_npy(path: Path, rows: int, dim: int, dtype, fill) -> None:
    """An .npy file written block by block with plain writes: ``fill(start, stop) -> [stop - start, dim]``."""
    shape = (rows, dim) if dim else (rows,)
    with open(path, "wb") as f:
        np.lib.format.write_array_header_1_0(f, {"descr": np.lib.format.dtype_to_descr(np.dtype(dtype)),
                                                 "fortran_order": False, "shape": shape})
        for start in range(0, rows, 1 << 16):
            f.write(np.ascontiguousarray(fill(start, min(rows, start + (1 << 16))), dtype=dtype).tobytes())


def write_set(root: Path, rows: int, modalities: int, dim: int) -> int:
    """A feature set of random-looking float32 rows; every modality but the first is present in 3/4 of the rows."""
    rng = np.random.default_rng(0)
    block = rng.standard_normal((1 << 16, dim), dtype=np.float32)
    for m in range(modalities):
        write_npy(root / f"m{m}.npy", rows, dim, np.float32, lambda a, b, m=m: block[: b - a] + np.float32(a + m))
        if m:
            write_npy(root / f"m{m}.present.npy", rows, 0, np.bool_,
                      lambda a, b: rng.random(b - a) < 0.75)
    write_npy(root / "labels.npy", rows, 0, np.int64, lambda a, b: np.arange(a, b) % 10)
    return sum(p.stat().st_size for p in root.iterdir())


def stream(root: Path, io: str, batches: int, batch_size: int) -> dict:
    from torch.utils.data import DataLoader

    from mmcore_features.plugin import FeaturesConfig, build_features

    start = time.perf_counter()
    splits = build_features(FeaturesConfig(str(root), io=io))
    built = time.perf_counter() - start
    after_build = memory()
    reset_peak()
    # random rows drawn without listing the whole split: a full permutation as a Python list (what RandomSampler and
    # the runner's EpochShuffle build) costs about 36 bytes per training row, which is the sampler's, not the data's
    draws = np.random.default_rng(0).integers(0, len(splits.train), batches * batch_size)
    # whole batches, as the runner fetches a split that has get_batch (mmcore.train.data: one get_batch per batch)
    loader = DataLoader(range(batches), batch_size=None,
                        collate_fn=lambda i: splits.train.get_batch(draws[i * batch_size:(i + 1) * batch_size]))
    start = time.perf_counter()
    rows = 0
    for batch in loader:
        rows += len(batch["id"])
    elapsed = time.perf_counter() - start
    peak = memory()
    return {"io": io, "build_s": built, "rss_after_build": after_build["VmRSS"], "peak_rss": peak["VmHWM"],
            "anon": peak["RssAnon"], "file": peak["RssFile"], "rows_per_s": rows / elapsed, "train_rows": len(splits.train)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=2_000_000)
    parser.add_argument("--modalities", type=int, default=4)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--batches", type=int, default=50)
    parser.add_argument("--batch-size", type=int, default=4096)
    parser.add_argument("--io", nargs="+", default=["pread", "mmap"])
    parser.add_argument("--dir", default=None, help="where to write the set (default: a temporary directory)")
    args = parser.parse_args()

    import torch  # noqa: F401 - imported before the baseline so that its memory is not counted as the data's

    base = memory()["VmRSS"]
    root = Path(tempfile.mkdtemp(prefix="features-stream-", dir=args.dir))
    try:
        start = time.perf_counter()
        size = write_set(root, args.rows, args.modalities, args.dim)
        print(f"wrote {args.rows:,} rows x {args.modalities} modalities x {args.dim} float32: {size / 2**30:.2f} GiB "
              f"in {time.perf_counter() - start:.1f} s; baseline VmRSS {base:.0f} MiB (torch imported)")
        print(f"{'io':6} {'build s':>8} {'RSS built':>10} {'peak RSS':>9} {'anon':>7} {'file':>7} {'rows/s':>10}  "
              f"({args.batches} random batches of {args.batch_size}; MiB)")
        for io in args.io:
            r = stream(root, io, args.batches, args.batch_size)
            print(f"{r['io']:6} {r['build_s']:8.1f} {r['rss_after_build']:10.0f} {r['peak_rss']:9.0f} {r['anon']:7.0f} "
                  f"{r['file']:7.0f} {r['rows_per_s']:10,.0f}")
    finally:
        shutil.rmtree(root)


if __name__ == "__main__":
    main()
