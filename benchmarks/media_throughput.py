"""Training throughput of a real-media recipe: `mmcore run`'s code path against a hand-written PyTorch loop.

    python benchmarks/media_throughput.py                           # CPU, reduced size (recipes/media_imagebind.toml)
    python benchmarks/media_throughput.py --device cuda --size full # GPU: ViT-B/16 at 224 px, ResNet-50 audio, ...
    python benchmarks/media_throughput.py --workers 0,2 --rounds 4 --steps 20 --per-class 100

What is compared. Both arms train the recipe ``recipes/media_imagebind.toml`` (images the fixed anchor; text and
audio each bound to images with symmetric InfoNCE and one learnable, clamped temperature; AdamW with no decay on
parameters of fewer than 2 dimensions; cosine schedule) on the offline demo set (``mmcore media-demo``):

- ``mmcore``: what ``mmcore run`` does -- ``assemble`` (build, probe), ``make_run_dir``, then
  ``mmcore.runs.train.train``: the real Lightning Trainer with its checkpoint callbacks, TensorBoard logger
  (``log_every_n_steps`` from the recipe) and non-finite guard. ``make_trainer`` is wrapped to turn the progress
  bar and model summary off (as they are off whenever stdout is not a terminal) and to append a timing callback;
  that callback stops the run with an exception right after the timed window (what would follow -- the rest of
  the epoch, validation, ``last.ckpt``, the test evaluation -- cannot change the figures, and skipping it makes
  more alternated rounds affordable on a shared machine; the run writes ``interrupted.ckpt`` on the way out).
- ``hand``: the loop a user would write without the framework. The encoders come from the same registry builds
  (so the towers, heads, tokenizer and the ``preprocess(raw, train=True)`` transforms are the plugin's), the data
  from the same ``manifest`` dataset; a plain ``torch.utils.data.DataLoader`` (shuffled, ``drop_last``) with the
  same batch size, ``num_workers``, ``pin_memory`` (on when CUDA is available), ``persistent_workers`` (on with
  workers) and sample order (so the same batches), and a collate that preprocesses the present items of each
  modality and collates them (the encoder's ``collate``, else torch's default). It encodes the present rows, and
  for each non-anchor modality scores the rows that have it and the anchor: ``(CE(s q k^T) + CE(s k q^T)) / 2``
  with ``s = exp(clamp(log_scale))``, summed over modalities; AdamW with the same groups; the same LambdaLR
  cosine factor.

What is timed (the same in both arms, and only this): the wall time of ``--steps`` consecutive optimizer steps
after ``--warmup`` steps, from the end of step ``warmup - 1`` to the end of step ``warmup + steps - 1`` (in
mmcore: ``on_train_batch_end`` of a Callback; a CUDA sync at those two points only). Each window therefore holds
``steps`` whole cycles: fetching the next batch, moving it, forward, loss, backward, optimizer and schedule step
and, for mmcore, every per-step hook and logging call Lightning and mmcore make. Start-up (model build, probe,
worker start, sanity validation) lies before the window, evaluation and checkpointing after it: the benchmark
manifest lists the demo's training rows again and again so that one epoch holds ``warmup + steps + 2`` batches,
and the recipe trains one epoch, so no epoch end (validation, ``last.ckpt``, loader restart) falls inside the
window. (The files are the demo's own; repeats are read from the page cache in both arms alike.)

Background load: at both ends of each window the system's busy CPU time (``/proc/stat``) and this process tree's
own (``/proc/<pid>/stat`` of this process and its DataLoader workers) are read; their difference over the window is
the CPU other processes took, in cores ("other load"). It shows how far a round was disturbed.

Where the time goes: ``torch.utils.data``'s ``_BaseDataLoaderIter.__next__`` is wrapped to record how long the
main process is blocked in it; its overlap with the window is the "data wait" (with workers: time waiting for a
batch the workers have not finished; without: the loading itself). The hand loop also times its phases (host
time; on CUDA the forward/backward figures are launch times, not kernel times), and so does mmcore, from
Lightning's hooks: ``on_train_batch_start``, ``on_before_backward``, ``on_after_backward``, ``on_train_batch_end``
(its "between steps" also holds the scheduler step and logger work Lightning does after ``on_train_batch_end``;
its "forward+loss" also ``zero_grad``). "loader alone" is the hand arm's DataLoader iterated with no training
at all (samples/s): when it is not well above the training rate, the loader is the bottleneck.

Both arms run alternately in one process, for each ``--workers`` value, in the order hand, mmcore, mmcore, hand,
hand, mmcore, ... (round r is one run of each, adjacent in time), so background load and slow drift affect both
alike. The table gives the median samples/s, every round, and the median and range of the per-round ratios
(mmcore over hand within each round).
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import math
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "recipes" / "media_imagebind.toml"

SIZES = {
    # the recipe as shipped: timm resnet10t at 32 px, audio_cnn(resnet10t) on 1.5 s log-mels, frozen MiniLM
    "small": [],
    # a GPU-sized run: ViT-B/16 at 224 px, a ResNet-50 over 4 s of 128-bin log-mels, MiniLM trained end to end
    "full": ['encoders.image.model="vit_base_patch16_224"', "encoders.image.img_size=224",
             'encoders.audio.model="resnet50"', "encoders.audio.clip_seconds=4.0", "encoders.audio.n_mels=128",
             "encoders.audio.freq_mask=24", "encoders.audio.time_mask=40", 'encoders.text.tower="train"'],
}


# -- the data -------------------------------------------------------------------------------------------------------


def demo_set(folder: Path, per_class: int) -> Path:
    """``folder/manifest.csv`` of the demo set, built with ``mmcore media-demo`` if it is not there."""
    manifest = folder / "manifest.csv"
    if not manifest.is_file():
        subprocess.run([sys.executable, "-m", "mmcore.cli", "media-demo", str(folder), "--per-class",
                        str(per_class)], check=True)
    return manifest


def bench_manifest(demo_manifest: Path, out: Path, train_rows: int) -> Path:
    """A manifest of the demo's files (absolute paths) whose train split is the demo's training rows cycled to
    exactly ``train_rows`` rows; its val and test splits are the demo's."""
    with open(demo_manifest, newline="", encoding="utf-8") as file:
        reader = csv.DictReader(file)
        header, rows = reader.fieldnames, list(reader)
    base = demo_manifest.resolve().parent
    for row in rows:
        for column in ("image", "audio"):
            if row.get(column):
                row[column] = str(base / row[column])
    train = [r for r in rows if r["split"] == "train"]
    cycled = [train[i % len(train)] for i in range(train_rows)]
    path = out / f"manifest-{train_rows}.csv"
    with open(path, "w", newline="", encoding="utf-8") as file:
        writer = csv.DictWriter(file, fieldnames=header)
        writer.writeheader()
        writer.writerows(cycled + [r for r in rows if r["split"] != "train"])
    return path


def recipe_for(args, manifest: Path, workers: int):
    import mmcore

    overrides = [
        f'dataset.path="{manifest}"', f"trainer.batch_size={args.batch}", f"trainer.num_workers={workers}",
        "trainer.max_epochs=1", f'trainer.accelerator="{"gpu" if args.device == "cuda" else "cpu"}"',
        "trainer.devices=1", f'trainer.precision="{args.precision}"', *SIZES[args.size],
    ]
    return mmcore.load_recipe(RECIPE, overrides)


# -- timing -----------------------------------------------------------------------------------------------------------


class DataWait:
    """Records ``(start, seconds)`` of every ``DataLoader`` iterator ``__next__`` call in this process while
    active: the time the training loop is blocked waiting for a batch."""

    def __init__(self):
        self.calls: list = []

    @contextlib.contextmanager
    def recording(self):
        from torch.utils.data import dataloader

        original = dataloader._BaseDataLoaderIter.__next__
        calls = self.calls

        def timed_next(iterator):
            start = time.perf_counter()
            try:
                return original(iterator)
            finally:
                calls.append((start, time.perf_counter() - start))

        dataloader._BaseDataLoaderIter.__next__ = timed_next
        try:
            yield self
        finally:
            dataloader._BaseDataLoaderIter.__next__ = original

    def within(self, t0: float, t1: float) -> float:
        """Seconds of waiting that overlap ``[t0, t1]``."""
        return sum(max(0.0, min(s + d, t1) - max(s, t0)) for s, d in self.calls)


def busy_jiffies() -> int:
    """CPU time every process on the machine has used (clock ticks, all cores), from ``/proc/stat``."""
    with open("/proc/stat", encoding="ascii") as file:
        values = [int(v) for v in file.readline().split()[1:9]]
    return sum(values) - values[3] - values[4]  # minus idle and iowait


def own_jiffies() -> int:
    """CPU time (ticks) of this process and its live descendants (the DataLoader workers)."""
    total, pending = 0, [os.getpid()]
    while pending:
        pid = pending.pop()
        try:
            with open(f"/proc/{pid}/stat", encoding="ascii") as file:
                fields = file.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime
            for task in os.listdir(f"/proc/{pid}/task"):
                with open(f"/proc/{pid}/task/{task}/children", encoding="ascii") as file:
                    pending.extend(int(c) for c in file.read().split())
        except (OSError, ValueError, IndexError):
            continue
    return total


def mark() -> tuple:
    """``(seconds, busy ticks, own ticks)`` now; without ``/proc``, the tick counts are 0."""
    try:
        return time.perf_counter(), busy_jiffies(), own_jiffies()
    except OSError:
        return time.perf_counter(), 0, 0


PHASES = ("between steps", "forward+loss", "backward", "optimizer")
"""Per-step phases, host time: fetching and moving the batch (and, in mmcore, the loop's work between steps);
forward and loss; backward; optimizer and schedule step."""


class WindowDone(Exception):
    """Raised by the timing callback once the mmcore arm's window is over (see the module docstring)."""


def sync(device: str) -> None:
    import torch

    if device == "cuda":
        torch.cuda.synchronize()


def window(args, start: tuple, end: tuple, wait: DataWait) -> dict:
    """The result of one arm from the :func:`mark` at the end of step ``warmup - 1`` and of the last timed step."""
    seconds = end[0] - start[0]
    data = wait.within(start[0], end[0])
    other = ((end[1] - start[1]) - (end[2] - start[2])) / os.sysconf("SC_CLK_TCK") / seconds
    return {"samples_per_s": args.steps * args.batch / seconds, "ms_per_step": 1000 * seconds / args.steps,
            "data_wait": data / seconds, "compute_ms": 1000 * (seconds - data) / args.steps,
            "other_load": max(0.0, other)}


# -- the two arms -------------------------------------------------------------------------------------------------


def run_mmcore(args, manifest: Path, workers: int, scratch: Path) -> dict:
    """``mmcore run``'s path (assemble, make_run_dir, train) with a timing callback; see the module docstring."""
    import lightning as L

    import mmcore.runs.train as runs_train
    from mmcore.runs.directory import make_run_dir
    from mmcore.train.build import assemble

    recipe, sources = recipe_for(args, manifest, workers)
    marks: dict = {}
    total = args.warmup + args.steps

    phases = dict.fromkeys(PHASES, 0.0)
    last = {}

    class StepEnds(L.Callback):
        """The window's two marks, and each timed step's phases (host time) from Lightning's hooks."""

        def _phase(self, trainer, name):
            now = time.perf_counter()
            if args.warmup <= trainer.fit_loop.epoch_loop.batch_idx < total and "t" in last:
                phases[name] += now - last["t"]
            last["t"] = now

        def on_train_batch_start(self, trainer, module, batch, batch_idx):
            self._phase(trainer, "between steps")  # fetch, transfer, the scheduler and logger work of the last step

        def on_before_backward(self, trainer, module, loss):
            self._phase(trainer, "forward+loss")  # training_step: encoders, strategy, loss, logging

        def on_after_backward(self, trainer, module):
            self._phase(trainer, "backward")

        def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
            if batch_idx in (args.warmup - 1, total - 1):
                sync(args.device)
                marks[batch_idx] = mark()
            self._phase(trainer, "optimizer")  # with the hooks around it
            if batch_idx == total - 1:
                raise WindowDone

    original = runs_train.make_trainer

    def make_trainer(recipe, run_dir, **overrides):
        trainer = original(recipe, run_dir, enable_progress_bar=False, enable_model_summary=False, **overrides)
        trainer.callbacks.append(StepEnds())
        return trainer

    wait = DataWait()
    runs_train.make_trainer = make_trainer
    folder = Path(tempfile.mkdtemp(dir=scratch))
    try:
        built = assemble(recipe)
        run_dir = make_run_dir(recipe, folder / "run")
        with wait.recording(), contextlib.suppress(WindowDone):
            runs_train.train(recipe, sources, run_dir, module_data=built)
    finally:
        runs_train.make_trainer = original
        shutil.rmtree(folder, ignore_errors=True)  # its interrupted.ckpt is some 300 MB
    result = window(args, marks[args.warmup - 1], marks[total - 1], wait)
    result["phases_ms"] = {k: 1000 * v / args.steps for k, v in phases.items()}
    return result


class HandCollate:
    """Items -> ``{"inputs": {m: collated present values | None}, "present": {m: [B] bool}}``: each modality's
    present items through its encoder's ``preprocess(raw, train=True)``, then its ``collate`` (or torch's)."""

    def __init__(self, encoders: dict):
        self.steps = {m: (e.preprocess, getattr(e, "collate", None)) for m, e in encoders.items()}

    def __call__(self, items: list) -> dict:
        import torch
        from torch.utils.data import default_collate

        inputs, present = {}, {}
        for m, (preprocess, collate) in self.steps.items():
            has = [bool(item["present"][m]) for item in items]
            values = [preprocess(item["inputs"][m], train=True) for item, h in zip(items, has) if h]
            inputs[m] = (collate or default_collate)(values) if values else None
            present[m] = torch.tensor(has)
        return {"inputs": inputs, "present": present}


def hand_parts(args, manifest: Path, workers: int):
    """``(recipe, encoders, train split, DataLoader)`` of the hand-written arm, from the registry's builds."""
    import torch
    from torch.utils.data import DataLoader

    import mmcore
    from mmcore.registry import get_registry

    recipe, _ = recipe_for(args, manifest, workers)
    registry = get_registry()
    splits = registry.build("datasets", recipe.dataset.name, recipe.dataset.config,
                            mmcore.DatasetContext(recipe.seed, recipe.modalities), "dataset")
    torch.manual_seed(recipe.seed)
    encoders = torch.nn.ModuleDict({
        m: registry.build("encoders", section.name, section.config,
                          mmcore.EncoderContext(m, splits.inputs[m], recipe.embed_dim, True), f"encoders.{m}")
        for m, section in recipe.encoders.items()})
    for m, section in recipe.encoders.items():
        if section.frozen:
            encoders[m].requires_grad_(False)
    # shuffled by torch.randperm with this seed: the very order mmcore's sampler gives epoch 0, so both arms see
    # the same batches (the same number of text and audio rows in each)
    order = torch.Generator().manual_seed(recipe.seed * 1_000_003)
    loader = DataLoader(splits.train, batch_size=args.batch, shuffle=True, drop_last=True, num_workers=workers,
                        persistent_workers=workers > 0, pin_memory=torch.cuda.is_available(),
                        collate_fn=HandCollate(encoders), generator=order)
    return recipe, encoders, splits.train, loader


def to_device(value, device):
    if isinstance(value, dict):
        return {k: v.to(device, non_blocking=True) for k, v in value.items()}
    return value.to(device, non_blocking=True)


def run_hand(args, manifest: Path, workers: int) -> dict:
    """The hand-written loop (see the module docstring); also its phases, in ms per step."""
    import torch
    import torch.nn.functional as F

    recipe, encoders, _, loader = hand_parts(args, manifest, workers)
    device = torch.device(args.device)
    encoders.to(device).train()
    loss_config = recipe.loss.config
    log_scale = torch.nn.Parameter(torch.tensor(math.log(1.0 / loss_config.temperature), device=device))
    max_log_scale = math.log(loss_config.max_logit_scale)
    params = [p for p in encoders.parameters() if p.requires_grad] + [log_scale]
    settings = recipe.optimizer
    optimizer = torch.optim.AdamW([
        {"params": [p for p in params if p.ndim >= 2], "weight_decay": settings.weight_decay},
        {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0}], lr=settings.lr)
    total_steps = len(loader)  # one epoch, as Lightning's estimated_stepping_batches
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: 0.5 * (1.0 + math.cos(math.pi * min(1.0, s / max(1, total_steps)))))
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.precision == "bf16-mixed")
    anchor = recipe.anchor.config.anchor
    total = args.warmup + args.steps
    marks, phases = {}, dict.fromkeys(PHASES, 0.0)
    wait = DataWait()
    with wait.recording():
        batches = iter(loader)
        for step in range(total):
            timed = args.warmup <= step < total
            times = [time.perf_counter()]
            batch = next(batches)
            present = batch["present"]
            # row positions on the host: no device sync to find them
            position = {m: torch.cumsum(p.long(), 0) - 1 for m, p in present.items()}
            pairs = {}
            for m in encoders:
                both = present[m] & present[anchor]
                if m != anchor and bool(both.any()):
                    pairs[m] = (position[m][both].to(device), position[anchor][both].to(device), int(both.sum()))
            inputs = {m: to_device(x, device) for m, x in batch["inputs"].items() if x is not None}
            times.append(time.perf_counter())
            with autocast:
                z = {m: F.normalize(encoders[m](x), dim=-1) for m, x in inputs.items()}
                scale = log_scale.clamp(max=max_log_scale).exp()
                loss = 0.0
                for m, (rows, anchor_rows, n) in pairs.items():
                    logits = scale * z[m][rows] @ z[anchor][anchor_rows].T
                    labels = torch.arange(n, device=device)
                    loss = loss + (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)) / 2
            times.append(time.perf_counter())
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            times.append(time.perf_counter())
            optimizer.step()
            schedule.step()
            if step in (args.warmup - 1, total - 1):
                sync(args.device)
                marks[step] = mark()
            times.append(time.perf_counter())
            if timed:
                for name, a, b in zip(phases, times, times[1:]):
                    phases[name] += b - a
        del batches  # stops the workers
    result = window(args, marks[args.warmup - 1], marks[total - 1], wait)
    result["phases_ms"] = {k: 1000 * v / args.steps for k, v in phases.items()}
    return result


def loader_only(args, manifest: Path, workers: int) -> float:
    """Samples/s of the hand arm's DataLoader iterated alone (``steps`` batches after ``warmup``)."""
    _, _, _, loader = hand_parts(args, manifest, workers)
    batches = iter(loader)
    for _ in range(args.warmup):
        next(batches)
    start = time.perf_counter()
    for _ in range(args.steps):
        next(batches)
    seconds = time.perf_counter() - start
    del batches
    return args.steps * args.batch / seconds


# -- the report -------------------------------------------------------------------------------------------------------


def machine(device: str) -> str:
    import torch

    if device == "cuda":
        return f"{torch.cuda.get_device_name(0)} (torch {torch.__version__}, {os.cpu_count()} CPU cores)"
    model = platform.processor() or platform.machine()
    with contextlib.suppress(OSError), open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
        model = next((line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name")), model)
    return f"CPU: {model}, {os.cpu_count()} cores (torch {torch.__version__}, {torch.get_num_threads()} threads)"


def spread(values: list) -> str:
    return ", ".join(f"{v:.1f}" for v in values)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--size", choices=tuple(SIZES), default=None, help="default: small on CPU, full on CUDA")
    parser.add_argument("--demo", type=Path, default=None,
                        help="a demo set folder (built with `mmcore media-demo` if missing; default: in --scratch)")
    parser.add_argument("--per-class", type=int, default=100, help="scans per digit when building the demo set")
    parser.add_argument("--batch", type=int, default=None, help="default: 64 small, 256 full")
    parser.add_argument("--workers", default=None, help="comma-separated num_workers values (default: 0,2 / 8)")
    parser.add_argument("--steps", type=int, default=20, help="timed optimizer steps per arm and round")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--precision", default=None, help="default: 32-true on CPU, bf16-mixed on CUDA")
    parser.add_argument("--scratch", type=Path, default=Path(tempfile.gettempdir()) / "mmcore-media-bench")
    args = parser.parse_args()
    cuda = args.device == "cuda"
    args.size = args.size or ("full" if cuda else "small")
    args.batch = args.batch or (256 if args.size == "full" else 64)
    args.precision = args.precision or ("bf16-mixed" if cuda else "32-true")
    workers_list = [int(w) for w in (args.workers or ("8" if cuda else "0,2")).split(",")]
    if args.warmup < 1:
        parser.error("--warmup must be at least 1 (the window starts at the end of step warmup - 1)")
    args.scratch.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

    demo = demo_set(args.demo or args.scratch / f"demo-{args.per_class}", args.per_class)
    manifest = bench_manifest(demo, args.scratch, args.batch * (args.warmup + args.steps + 2))
    print(f"{machine(args.device)}; size {args.size}, batch {args.batch}, {args.precision}, {args.steps} timed steps "
          f"after {args.warmup}, {args.rounds} alternated rounds (hand, mmcore, mmcore, hand, ...), demo {demo}",
          flush=True)
    import torch

    print(f"both arms: shuffle, drop_last, pin_memory={torch.cuda.is_available()}, persistent_workers=(workers > 0), "
          f"workers {workers_list}; mmcore: progress bar off, one epoch of {args.warmup + args.steps + 2} batches "
          "(no validation or checkpoint inside the window)", flush=True)

    rows = []
    for workers in workers_list:
        results = {"hand": [], "mmcore": []}
        for r in range(args.rounds):
            # hand, mmcore | mmcore, hand | ...: a slow drift of the machine's speed and any advantage of running
            # first cancel out over each two rounds
            arms = ("hand", "mmcore") if r % 2 == 0 else ("mmcore", "hand")
            for arm in arms:
                results[arm].append(run_hand(args, manifest, workers) if arm == "hand"
                                    else run_mmcore(args, manifest, workers, args.scratch))
            hand, ours = results["hand"][-1], results["mmcore"][-1]
            print(f"  workers {workers} round {r}: hand {hand['samples_per_s']:.1f}, mmcore "
                  f"{ours['samples_per_s']:.1f} samples/s (other load {hand['other_load']:.2f}, "
                  f"{ours['other_load']:.2f} cores)", flush=True)
        rows.append((workers, results, loader_only(args, manifest, workers)))

    print("\n| workers | arm | samples/s (median) | rounds | ms/step | data wait | ms/step not waiting | other load "
          "(cores) | loader alone samples/s | ratio of medians | per-round ratios: median (range) |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for workers, results, loader_rate in rows:
        median = {arm: statistics.median(r["samples_per_s"] for r in rs) for arm, rs in results.items()}
        paired = [m["samples_per_s"] / h["samples_per_s"] for h, m in zip(results["hand"], results["mmcore"])]
        for arm, rs in results.items():
            ratios = (f"**{median['mmcore'] / median['hand']:.3f}** | {statistics.median(paired):.3f} "
                      f"({min(paired):.3f}-{max(paired):.3f})" if arm == "mmcore" else " | ")
            print(f"| {workers} | {arm} | {median[arm]:.1f} | {spread([r['samples_per_s'] for r in rs])} | "
                  f"{statistics.median(r['ms_per_step'] for r in rs):.0f} | "
                  f"{100 * statistics.median(r['data_wait'] for r in rs):.0f}% | "
                  f"{statistics.median(r['compute_ms'] for r in rs):.0f} | "
                  f"{', '.join(format(r['other_load'], '.2f') for r in rs)} | {loader_rate:.1f} | {ratios} |")
    print("\nPhases, ms per step (median over rounds; host time):\n")
    print("| workers | arm | " + " | ".join(PHASES) + " |")
    print("|---|---|" + "---|" * len(PHASES))
    for workers, results, _ in rows:
        for arm, rs in results.items():
            print(f"| {workers} | {arm} | " + " | ".join(
                f"{statistics.median(r['phases_ms'][k] for r in rs):.1f}" for k in PHASES) + " |")


if __name__ == "__main__":
    main()
