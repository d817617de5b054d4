"""Streaming read throughput of training batches (samples/s), next to the training step's own rate.

    python benchmarks/streaming_throughput.py                              # 50,000 samples x 3 x 256 float32
    python benchmarks/streaming_throughput.py --quick                      # 5,000 samples: a few seconds a reader
    python benchmarks/streaming_throughput.py --samples 200000 --dim 512 --workers 0,2,4
    python benchmarks/streaming_throughput.py --media 100                  # and raw media: manifest vs shards
    nice -n 10 python benchmarks/streaming_throughput.py                   # on a shared machine

The same generated data (``--samples`` x 3 modalities x ``--dim`` float32; modality ``m0`` present in every sample,
``m1`` and ``m2`` in about 3/4 of them; ids and labels) is read as shuffled training batches of ``--batch`` (256)
by each of these, with ``num_workers`` 0 and 2 (``--workers``):

- ``shards``: written with the ``mmcore_shards`` writer (litdata ``BinaryWriter``, one safetensors+JSON sample
  each, :mod:`mmcore_shards.codec`), read with ``ShardSplit.training_loader`` (litdata ``StreamingDataset`` +
  ``StreamingDataLoader``) and the core's ``ModalityCollate({})``: exactly what ``[dataset] name = "shards"`` trains.
- ``features``: the same arrays as ``.npy`` files in the ``features`` layout (``split.npy`` puts all but two rows
  in train), built through the registry and read through ``BindingData(splits, batch).train_dataloader()``, the
  runner's path (whole batches through ``get_batch``; the io mode ``pread``).
- ``tensor``: an in-memory ``mmcore.TensorSplit`` through the same ``BindingData`` path: the ceiling.
- ``webdataset``: the same samples as tar shards (``webdataset.ShardWriter``; one ``.npy`` per modality and a
  ``meta.json`` of presence, id and label per sample), read by ``WebDataset(shardshuffle=100).shuffle(1000)
  .decode().map(item).batched(batch, ModalityCollate({}))`` and a ``WebLoader`` (the library's recommended form;
  each worker batches on its own, so with workers an epoch can lose up to one partial batch per worker).
- ``webdataset-st``: the same, but each sample is the shards' own stored sample (``meta.json`` and
  ``tensors.safetensors`` from :func:`mmcore_shards.codec.encode_item`, decoded by ``decode_item``): two tar members
  a sample instead of four, and the same decoding as ``shards``, so the two differ in the container alone.

Both shard writers use the same shard size (``--shard-mb``, default: a size giving about 8 shards, at most 64 MB),
so each of two workers reads several shards. Every data rate is steady state: ``--repeats`` (2) epochs are read,
each with a new loader, the table gives their median and range, and the clock runs from the first batch to the
last (the start, forks and first batch are in "first batch s"); samples counted from the batches yielded.
"step" is a forward + backward + AdamW step of the core's default encoders for this data
(per modality ``Linear(dim, 256)-LayerNorm-GELU-Linear(256, 128)``, ``m0`` the anchor, symmetric InfoNCE of the
present rows with a learnable temperature) on this machine's CPU, timed over ``--steps`` steps after 3 warm-up
steps. "data / step" > 1 means that reader keeps this model busy (with workers the two also share the CPU cores,
so on a CPU-only machine the real training rate is lower than either). The step is timed with 1 thread and with
torch's default, before and after the readers; the best of these is the "step" rate of the ratio. On a machine
whose cores other processes also use, torch's intra-op threads contend: a [256]-row gather from a [50000, 256]
tensor took 0.5 ms with 2 threads against 0.12 ms with 1 on a 2-core machine at load 3.8, which is why
``tensor`` without workers (its gather runs in this process) can read slower than ``features`` there
(``--threads 1`` shows the uncontended figure).

Library choice (measured by the second table: write time, bytes on disk per sample). Mid-epoch resume: litdata's
``StreamingDataLoader`` has ``state_dict()`` / ``load_state_dict()`` (samples yielded per worker, epoch), which
Lightning saves in every checkpoint and restores on ``--resume``; webdataset has none built in (its loaders are
plain ``IterableDataset`` pipelines; a resumed run would have to skip batches itself, or reseed and accept
repeats). mosaicml-streaming 0.13 (which has resume too) could not be installed beside this stack: it pins
``numpy<2.2``, ``transformers<5`` and ``xxhash<4``.

Every file is written under a ``tempfile.TemporaryDirectory`` (``--tmp``: its parent), removed at the end; one
reader's files at a time exist on disk (about ``samples x 3 x dim x 4`` bytes each).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

MODALITIES = ("m0", "m1", "m2")


def make_data(samples: int, dim: int, seed: int = 0) -> dict:
    """``{"inputs": {m: [N, dim] float32}, "present": {m: [N] bool}, "labels": [N] int64}`` (absent rows zero)."""
    rng = np.random.default_rng(seed)
    inputs, present = {}, {}
    for k, m in enumerate(MODALITIES):
        present[m] = np.ones(samples, dtype=bool) if k == 0 else rng.random(samples) < 0.75
        x = rng.standard_normal((samples, dim), dtype=np.float32)
        x[~present[m]] = 0.0
        inputs[m] = x
    return {"inputs": inputs, "present": present, "labels": np.arange(samples, dtype=np.int64) % 10}


def tensor_split(data: dict, rows=None):
    import mmcore

    rows = slice(None) if rows is None else rows
    return mmcore.TensorSplit({m: torch.from_numpy(x[rows]) for m, x in data["inputs"].items()},
                              {m: torch.from_numpy(p[rows]) for m, p in data["present"].items()},
                              labels=torch.from_numpy(data["labels"][rows]))


def splits_of(train, val, test, dim: int):
    import mmcore

    return mmcore.DatasetSplits(train=train, val=val, test=test, inputs={m: dim for m in MODALITIES},
                                observed_pairs=frozenset({frozenset(("m0", "m1")), frozenset(("m0", "m2"))}))


def dir_bytes(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file())


def timed_epoch(loader) -> dict:
    """Read one epoch: samples/s from the first batch to the last, and the time to the first batch."""
    started = time.perf_counter()
    first = None
    samples = counted = 0
    for batch in loader:
        n = len(batch["id"])
        samples += n
        if first is None:
            first = time.perf_counter()
        else:
            counted += n
    end = time.perf_counter()
    rate = counted / (end - first) if counted else float("nan")
    return {"rate": rate, "first": first - started, "samples": samples}


# --- the readers -----------------------------------------------------------------------------------------------


def write_shards(data: dict, root: Path, shard_bytes: int) -> float:
    from mmcore_shards.writer import write_split

    split = tensor_split(data)
    started = time.perf_counter()
    write_split(split, root, {}, f"{shard_bytes}b")
    return time.perf_counter() - started


def read_shards(root: Path, samples: int, batch: int, workers: int) -> dict:
    from mmcore_shards.reader import ShardSplit

    from mmcore.train.data import ModalityCollate

    loader = ShardSplit(root, samples).training_loader(
        batch_size=batch, collate_fn=ModalityCollate({}, train=True), num_workers=workers, drop_last=True, seed=0,
        pin_memory=False)
    return timed_epoch(loader)


def write_features(data: dict, root: Path) -> float:
    started = time.perf_counter()
    for m in MODALITIES:
        np.save(root / f"{m}.npy", data["inputs"][m])
        if not data["present"][m].all():
            np.save(root / f"{m}.present.npy", data["present"][m])
    np.save(root / "labels.npy", data["labels"])
    split = np.zeros(len(data["labels"]), dtype=np.int8)
    split[-2:] = (1, 2)  # one val and one test row: every other row trains
    np.save(root / "split.npy", split)
    return time.perf_counter() - started


def read_features(root: Path, batch: int, workers: int) -> dict:
    from mmcore_features.plugin import FeaturesConfig

    import mmcore
    from mmcore.train.data import BindingData

    splits = mmcore.get_registry().build("datasets", "features", FeaturesConfig(path=str(root)),
                                         mmcore.DatasetContext(0, MODALITIES), "dataset")
    return timed_epoch(BindingData(splits, batch, num_workers=workers).train_dataloader())


def read_tensor(data: dict, batch: int, workers: int) -> dict:
    from mmcore.train.data import BindingData

    small = tensor_split(data, slice(0, 2))
    splits = splits_of(tensor_split(data), small, small, data["inputs"]["m0"].shape[1])
    return timed_epoch(BindingData(splits, batch, num_workers=workers).train_dataloader())


def _npy_bytes(x: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, x)
    return buffer.getvalue()


def write_webdataset(data: dict, root: Path, shard_bytes: int) -> float:
    import webdataset as wds

    started = time.perf_counter()
    with wds.ShardWriter(str(root / "shard-%06d.tar"), maxsize=shard_bytes, verbose=0) as sink:
        for i in range(len(data["labels"])):
            sample = {"__key__": f"{i:09d}",
                      "meta.json": json.dumps({"present": {m: bool(data["present"][m][i]) for m in MODALITIES},
                                               "id": i, "label": int(data["labels"][i])}).encode()}
            for m in MODALITIES:
                sample[f"{m}.npy"] = _npy_bytes(data["inputs"][m][i])
            sink.write(sample)
    return time.perf_counter() - started


def _wds_item(sample: dict) -> dict:
    meta = sample["meta.json"]
    return {"inputs": {m: torch.from_numpy(sample[f"{m}.npy"]) for m in MODALITIES},
            "present": meta["present"], "id": meta["id"], "label": meta["label"]}


def _wds_stored_item(sample: dict) -> dict:
    from mmcore_shards.codec import decode_item

    return decode_item({"meta": sample["meta.json"], "tensors": sample["tensors.safetensors"]})


def write_webdataset_stored(data: dict, root: Path, shard_bytes: int) -> float:
    """The shards' own stored samples (:func:`mmcore_shards.codec.encode_item`) as two tar members each."""
    import webdataset as wds
    from mmcore_shards.codec import encode_item

    split = tensor_split(data)
    started = time.perf_counter()
    with wds.ShardWriter(str(root / "shard-%06d.tar"), maxsize=shard_bytes, verbose=0) as sink:
        for i in range(len(split)):
            stored = encode_item(split[i], {})
            sink.write({"__key__": f"{i:09d}", "meta.json": stored["meta"].encode(),
                        "tensors.safetensors": stored["tensors"]})
    return time.perf_counter() - started


def read_webdataset(root: Path, batch: int, workers: int, stored: bool = False) -> dict:
    """``stored``: the tar members are the shards' safetensors + JSON sample (no ``decode()``: the codec decodes)."""
    import webdataset as wds

    from mmcore.train.data import ModalityCollate

    urls = sorted(str(p) for p in root.glob("shard-*.tar"))
    dataset = wds.WebDataset(urls, shardshuffle=100, seed=0, empty_check=False).shuffle(1000)
    dataset = dataset.map(_wds_stored_item) if stored else dataset.decode().map(_wds_item)
    dataset = dataset.batched(batch, collation_fn=ModalityCollate({}, train=True), partial=False)
    return timed_epoch(wds.WebLoader(dataset, batch_size=None, num_workers=workers))


# --- the training step ----------------------------------------------------------------------------------------


def step_rate(data: dict, batch: int, steps: int) -> float:
    """Samples/s of forward + backward + AdamW steps of 3 MLP encoders and anchor InfoNCE on one batch."""
    import torch.nn.functional as F
    from torch import nn

    torch.manual_seed(0)
    dim = data["inputs"]["m0"].shape[1]
    encoders = nn.ModuleDict({m: nn.Sequential(nn.Linear(dim, 256), nn.LayerNorm(256), nn.GELU(), nn.Linear(256, 128))
                              for m in MODALITIES})
    log_scale = nn.Parameter(torch.tensor(float(np.log(1 / 0.07))))
    optimizer = torch.optim.AdamW([*encoders.parameters(), log_scale], lr=1e-3)
    rows = slice(0, batch)
    inputs = {m: torch.from_numpy(x[rows]) for m, x in data["inputs"].items()}
    present = {m: torch.from_numpy(p[rows]) for m, p in data["present"].items()}

    def step():
        z = {m: F.normalize(encoders[m](inputs[m]), dim=-1) for m in MODALITIES}
        scale = log_scale.clamp(max=np.log(100.0)).exp()
        loss = 0.0
        for m in MODALITIES[1:]:
            keep = present[m].nonzero().squeeze(1)
            logits = scale * z["m0"][keep] @ z[m][keep].T
            target = torch.arange(len(keep))
            loss = loss + (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    for _ in range(3):
        step()
    started = time.perf_counter()
    for _ in range(steps):
        step()
    return steps * batch / (time.perf_counter() - started)


# --- the run --------------------------------------------------------------------------------------------------


def _ids(items: list) -> dict:
    """A collate for raw media items (decoded images, waveforms, strings): only what ``timed_epoch`` counts."""
    return {"id": [item["id"] for item in items]}


def media_rows(per_class: int, batch: int, workers: list, tmp: Path, repeats: int) -> tuple:
    """Raw media: the media plugin's demo set (``mmcore media-demo``: PNG scans, spoken words as WAV, captions) read
    as training items by the ``manifest`` dataset (each file decoded in the loader) and from ``mmcore shard``'s
    shards of it (stored decoded). Items only: the towers' preprocessing, the same for both, is left out.
    Returns (rows as in the main table, {reader: bytes on disk}, training samples)."""
    import mmcore
    from mmcore.testing import cli
    from mmcore_shards.plugin import ShardsConfig
    from torch.utils.data import DataLoader

    recipe = Path(__file__).resolve().parents[1] / "recipes" / "media_imagebind.toml"
    demo = tmp / "demo"
    status, _, err = cli("media-demo", demo, "--per-class", str(per_class))
    if status:
        raise SystemExit(f"mmcore media-demo failed (needs the media plugin and espeak-ng): {err}")
    override = f"dataset.path={demo / 'manifest.csv'}"
    status, _, err = cli("shard", recipe, "--out", tmp / "media-shards", "--set", override)
    if status:
        raise SystemExit(f"mmcore shard failed: {err}")
    registry = mmcore.get_registry()
    config = mmcore.load_recipe(recipe, [override])[0].dataset.config
    manifest = registry.build("datasets", "manifest", config, mmcore.DatasetContext(), "dataset")
    shards = registry.build("datasets", "shards", ShardsConfig(path=str(tmp / "media-shards")),
                            mmcore.DatasetContext(), "dataset")
    rows = []
    for w in workers:
        loader = DataLoader(manifest.train, batch_size=batch, shuffle=True, num_workers=w, collate_fn=_ids)
        rows.append(("manifest (media files)", w, [timed_epoch(loader) for _ in range(repeats)], load()))
        loader = shards.train.training_loader(batch_size=batch, collate_fn=_ids, num_workers=w, drop_last=False,
                                              seed=0, pin_memory=False)
        rows.append(("shards of it", w, [timed_epoch(loader) for _ in range(repeats)], load()))
    files = [p for p in demo.rglob("*") if p.is_file() and p.suffix in (".png", ".wav", ".csv")]
    sizes = {"manifest (media files)": sum(p.stat().st_size for p in files),
             "shards of it": dir_bytes(tmp / "media-shards")}
    return rows, sizes, len(manifest.train) + len(manifest.val) + len(manifest.test)


def rate_cells(reader: str, workers: int, results: list) -> str:
    """The first six cells of a table row: reader, workers, median samples/s, range, first batch s, samples."""
    rates = sorted(r["rate"] for r in results)
    first = statistics.median(r["first"] for r in results)
    return (f"| {reader} | {workers} | {statistics.median(rates):,.0f} | {rates[0]:,.0f}-{rates[-1]:,.0f} | "
            f"{first:.2f} | {results[0]['samples']:,} |")


def load() -> str:
    return " ".join(open("/proc/loadavg").read().split()[:3])


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--samples", type=int, default=50_000)
    p.add_argument("--dim", type=int, default=256)
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--workers", default="0,2", help="comma-separated num_workers values (default 0,2)")
    p.add_argument("--readers", default="shards,features,tensor,webdataset,webdataset-st")
    p.add_argument("--repeats", type=int, default=2, help="epochs read per reader and workers (median)")
    p.add_argument("--shard-mb", type=float, default=None,
                   help="shard size of both shard writers in MB (default: about 8 shards, at most 64 MB)")
    p.add_argument("--steps", type=int, default=20, help="timed training steps (default 20)")
    p.add_argument("--quick", action="store_true", help="5,000 samples, 5 steps: a few seconds a reader")
    p.add_argument("--threads", type=int, default=None,
                   help="torch intra-op threads of this process while reading (default: torch's, all cores)")
    p.add_argument("--tmp", default=None, help="parent of the temporary directory (default: the system's)")
    p.add_argument("--media", type=int, default=0, metavar="PER_CLASS",
                   help="also read the media demo set (PER_CLASS scans per digit, 10 digits) through the manifest "
                        "dataset and through shards of it (needs the media plugin and espeak-ng; default: not)")
    args = p.parse_args(argv)
    if args.quick:
        args.samples, args.steps = min(args.samples, 5000), 5
    workers = [int(w) for w in args.workers.split(",")]
    readers = args.readers.split(",")
    raw = args.samples * len(MODALITIES) * args.dim * 4
    shard_bytes = int(args.shard_mb * 1e6) if args.shard_mb else max(1 << 20, min(64_000_000, raw // 8))

    data = make_data(args.samples, args.dim)
    if args.threads:
        torch.set_num_threads(args.threads)
    threads = torch.get_num_threads()
    print(f"# {args.samples} samples x {len(MODALITIES)} modalities x {args.dim} float32 ({raw / 1e6:.0f} MB), "
          f"batch {args.batch}, shards of {shard_bytes / 1e6:.1f} MB, {args.repeats} epochs each; torch threads "
          f"{threads}, {os.cpu_count()} CPUs, load {load()}")
    steps = {n: [] for n in sorted({1, threads})}  # measured before and after the readers: samples/s

    def measure_steps():
        for n in steps:
            torch.set_num_threads(n)
            steps[n].append(step_rate(data, args.batch, args.steps))
        torch.set_num_threads(threads)

    measure_steps()
    rows, library = [], []
    with tempfile.TemporaryDirectory(prefix="mmcore-streaming-", dir=args.tmp) as tmp:
        for reader in readers:
            root = Path(tmp) / reader
            root.mkdir()
            written = None
            if reader == "shards":
                written = write_shards(data, root, shard_bytes)
                read = lambda w: read_shards(root, args.samples, args.batch, w)  # noqa: E731
            elif reader == "features":
                written = write_features(data, root)
                read = lambda w: read_features(root, args.batch, w)  # noqa: E731
            elif reader == "tensor":
                read = lambda w: read_tensor(data, args.batch, w)  # noqa: E731
            elif reader == "webdataset":
                written = write_webdataset(data, root, shard_bytes)
                read = lambda w: read_webdataset(root, args.batch, w)  # noqa: E731
            elif reader == "webdataset-st":
                written = write_webdataset_stored(data, root, shard_bytes)
                read = lambda w: read_webdataset(root, args.batch, w, stored=True)  # noqa: E731
            else:
                raise SystemExit(f"unknown reader {reader!r}")
            if written is not None:
                size = dir_bytes(root)
                files = sum(1 for f in root.iterdir() if f.suffix in (".bin", ".tar", ".npy"))
                library.append((reader, written, size, files))
            for w in workers:
                results = [read(w) for _ in range(args.repeats)]
                rows.append((reader, w, results, load()))
            for f in sorted(root.rglob("*"), reverse=True):
                f.unlink() if not f.is_dir() else f.rmdir()  # one reader's files on disk at a time
        media = media_rows(args.media, args.batch, workers, Path(tmp), args.repeats) if args.media else None
    measure_steps()
    step = max(max(rates) for rates in steps.values())

    print()
    print("| reader | workers | samples/s (median) | range | first batch s | samples an epoch | data / step | "
          "load after |")
    print("|---|---:|---:|---:|---:|---:|---:|---|")
    for reader, w, results, when in rows:
        median = statistics.median(r["rate"] for r in results)
        print(f"{rate_cells(reader, w, results)} {median / step:.1f} | {when} |")
    for n, rates in steps.items():
        print(f"| training step, {n} thread{'s' if n > 1 else ''} (before, after) | - | "
              f"{' / '.join(f'{r:,.0f}' for r in rates)} | | | | {max(rates) / step:.1f} | |")
    print()
    print("| format | write s | samples/s written | bytes / sample | raw bytes / sample | files | mid-epoch resume |")
    print("|---|---:|---:|---:|---:|---:|---|")
    resume = {"shards": "yes: StreamingDataLoader.state_dict", "webdataset": "none built in",
              "webdataset-st": "none built in", "features": "yes: the core's EpochShuffle (index-based)"}
    per_sample = len(MODALITIES) * args.dim * 4
    for reader, written, size, files in library:
        print(f"| {reader} | {written:.2f} | {args.samples / written:,.0f} | {size / args.samples:,.0f} | "
              f"{per_sample:,} | {files} | {resume[reader]} |")
    if media:
        rows, sizes, samples = media
        print()
        print(f"Raw media (`--media {args.media}`: the demo set's {samples} samples, PNG scans, WAV speech, captions; "
              "items only, no tower preprocessing):")
        print()
        print("| reader | workers | samples/s (median) | range | first batch s | samples an epoch | bytes on disk / "
              "sample |")
        print("|---|---:|---:|---:|---:|---:|---:|")
        for reader, w, results, _ in rows:
            print(f"{rate_cells(reader, w, results)} {sizes[reader] / samples:,.0f} |")
    print(f"\nload at the end: {load()}")


if __name__ == "__main__":
    main()
