"""Small studies: `mmcore run` against a hand-written PyTorch loop doing the same math (issue 17's measurement).

    python benchmarks/small_runs.py              # 3 seeds x 60 epochs on 2,000 samples (a few minutes on 2 cores)
    python benchmarks/small_runs.py --quick      # 1 seed x 5 epochs: the code path and a rough ratio, < 1 min
                                                 # (its steps/s of the hand loop: measurement 1's process)
    python benchmarks/small_runs.py --profile    # and a cProfile of one mmcore fit: top entries, self time by owner

The study: mmcore's built-in ``synthetic`` dataset (3 modalities, 10 classes, 2,000 training samples with every
modality present, 200 val, 500 test), a 2-layer MLP per modality (``Linear -> LayerNorm -> GELU -> Linear``, hidden
128, ``embed_dim`` 64), the ``imagebind`` fixed anchor (image: terms text-image and audio-image, each symmetric
InfoNCE at a fixed temperature 0.07, summed), AdamW (lr 2e-3, weight decay 0.01 on parameters with ndim >= 2, none
on the others), a constant learning rate without warm-up, batch 128 with the last partial batch kept (16 steps per
epoch), 60 epochs, seeds 0, 1, 2, one thread (``OMP_NUM_THREADS=MKL_NUM_THREADS=1`` in every process,
``torch.set_num_threads(1)`` in the hand loop). mmcore is configured as a small-study user would: no validation
(``val_every_n_epochs = 0``), ``checkpoint = "none"``, ``drop_last = false``, the ``retrieval`` evaluator only,
``log_every_n_steps`` at its default (10) unless ``--log-every``, ``optimizer.implementation`` at its default
(``foreach``) unless ``--implementation fused``, and no figures (``[logger] figures = false``: the
hand loop draws none either).

The hand loop is a script written to a temporary folder and run with this interpreter: plain torch, no mmcore
import. It trains on exactly mmcore's arrays: this script builds the recipe's ``[dataset]`` once through mmcore's
registry (``mmcore.get_registry().build("datasets", ...)``) and saves its train and test inputs with
``torch.save``; the hand loop loads that file (its own weight init and batch order: the figures agree in quality,
not in digits). At the end both compute test Recall@1 text -> audio (the emergent pair: never trained together):
mmcore's ``retrieval`` evaluator, and the hand loop's cosine similarities and argmax.

Three measurements, each a ratio mmcore / hand, the two sides taking turns (hand first, then mmcore first, ...) so
that load changes on a shared machine hit both:

1. one ``mmcore run RECIPE --set seed=S`` process per seed against one hand-loop process per seed: the summed wall
   time of the processes, interpreter start, imports and the test evaluation included (target <= 1.3x);
2. ``mmcore run RECIPE --seeds 0,1,2`` (one process) against one hand-loop process training the 3 seeds one after
   another (target <= 1.15x);
3. training steps per second over epochs 1..E-1 (the first epoch left out), from the start of epoch 1 to the end
   of training, whole epochs (every hook, loader and logging cost between the steps included): mmcore in a
   process of this script (``--driver``) that trains through :func:`mmcore.runs.train.train` with a Lightning
   callback taking the time at each epoch start and at the end of training; the hand loop timing its epochs the
   same way (target >= 0.9x). The share of mmcore's epoch time spent between ``on_train_batch_start`` and
   ``on_train_batch_end`` (the step itself) is printed below the table.

Each measurement is printed twice: by the wall clock (the targets) and by CPU time (user + system of the processes;
in-process ``time.process_time``), which leaves most of the other processes' load on a shared machine out. The
hand loop's AdamW is torch's default (on the CPU the per-tensor loop), as a user writes it; ``--hand-foreach``
gives it ``foreach=True``, to tell the framework's overhead from the optimizer's implementation.

``--profile``: one more mmcore ``--driver`` process with ``cProfile`` switched on from ``on_fit_start`` to
``on_fit_end`` (training only: not the imports, the dataset or the test), printing the top 25 entries by
cumulative time and the top 15 by self time, with their owner (mmcore, Lightning, torch, other), and the self
time per owner. cProfile slows Python code more than the C++ kernels, so it overstates the Python shares.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EMERGENT = ("text", "audio")
"""The pair whose test Recall@1 both sides report: query text, gallery audio."""
ONE_THREAD = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "CI": "true"}

RECIPE = """\
# benchmarks/small_runs.py: the small study of issue 17
name = "small-runs"
seed = 0
embed_dim = {dim}
output_dir = "{out}"

[dataset]
name = "synthetic"
num_classes = 10
train_size = {train}
val_size = 200
test_size = 500
seed = 0

[dataset.modalities.image]
input_dim = 48
noise = 0.3

[dataset.modalities.text]
input_dim = 32
noise = 0.3

[dataset.modalities.audio]
input_dim = 40
noise = 0.3

[encoders.image]
name = "mlp"
hidden = [{hidden}]

[encoders.text]
name = "mlp"
hidden = [{hidden}]

[encoders.audio]
name = "mlp"
hidden = [{hidden}]

[anchor]
name = "imagebind"
anchor = "image"

[loss]
name = "infonce"
temperature = {temperature}
learnable = false

[[evaluators]]
name = "retrieval"

[optimizer]
name = "adamw"
lr = {lr}
weight_decay = {weight_decay}
schedule = "constant"
warmup_steps = 0
implementation = "{implementation}"

[trainer]
max_epochs = {epochs}
batch_size = {batch}
accelerator = "cpu"
devices = 1
val_every_n_epochs = 0
checkpoint = "none"
drop_last = false
log_every_n_steps = {log_every}

[logger]
figures = false
"""

HAND_LOOP = r'''
"""The hand-written loop: the small study's math in plain torch. argv: data file, settings JSON, seeds (0,1,2).
Prints one JSON line: per seed, the (wall, CPU) times of each epoch start and of the end, steps per epoch and test
Recall@1 text -> audio."""
import json
import sys
import time

import torch
import torch.nn.functional as F
from torch import nn

torch.set_num_threads(1)
data = torch.load(sys.argv[1])
settings = json.loads(sys.argv[2])
seeds = [int(s) for s in sys.argv[3].split(",")]
train, test = data["train"], data["test"]
anchor, query, gallery = settings["anchor"], settings["query"], settings["gallery"]
rows = len(train[anchor])


def mlp(width):
    hidden = settings["hidden"]
    return nn.Sequential(nn.Linear(width, hidden), nn.LayerNorm(hidden), nn.GELU(), nn.Linear(hidden, settings["dim"]))


def run(seed):
    torch.manual_seed(seed)
    encoders = nn.ModuleDict({m: mlp(x.shape[1]) for m, x in train.items()})
    params = list(encoders.parameters())
    optimizer = torch.optim.AdamW([
        {"params": [p for p in params if p.ndim >= 2], "weight_decay": settings["weight_decay"]},
        {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0}], lr=settings["lr"],
        foreach=settings["foreach"])
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)  # constant, no warm-up
    scale = 1.0 / settings["temperature"]
    order_rng = torch.Generator().manual_seed(seed)
    starts, steps = [], []
    for epoch in range(settings["epochs"]):
        starts.append((time.perf_counter(), time.process_time()))
        order = torch.randperm(rows, generator=order_rng)
        count = 0
        for index in order.split(settings["batch"]):  # the last partial batch kept
            z = {m: F.normalize(encoders[m](x[index]), dim=-1) for m, x in train.items()}
            labels = torch.arange(len(index))
            loss = 0.0
            for m in z:
                if m != anchor:
                    logits = scale * z[m] @ z[anchor].T
                    loss = loss + (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)) / 2
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            count += 1
        steps.append(count)
    end = (time.perf_counter(), time.process_time())
    encoders.eval()
    with torch.no_grad():
        q = F.normalize(encoders[query](test[query]), dim=-1)
        g = F.normalize(encoders[gallery](test[gallery]), dim=-1)
        recall = (q @ g.T).argmax(1).eq(torch.arange(len(q))).float().mean().item()
    return {"seed": seed, "epoch_starts": starts, "end": end, "steps": steps, "recall": recall}


print(json.dumps([run(seed) for seed in seeds]))
'''


def recipe_text(args, out_dir: Path) -> str:
    return RECIPE.format(dim=args.dim, out=out_dir.as_posix(), train=args.train_size, hidden=args.hidden,
                         temperature=args.temperature, lr=args.lr, weight_decay=args.weight_decay,
                         epochs=args.epochs, batch=args.batch, log_every=args.log_every,
                         implementation=args.implementation)


def export_data(recipe_path: Path, data_path: Path) -> None:
    """The recipe's dataset, built once through mmcore's registry: train and test inputs (modality -> ``[N, d]``
    float32) saved for the hand loop. Every modality must be present in every row (the hand loop uses no masks)."""
    import torch

    import mmcore

    recipe, _ = mmcore.load_recipe(recipe_path)
    splits = mmcore.get_registry().build("datasets", recipe.dataset.name, recipe.dataset.config,
                                         mmcore.DatasetContext(recipe.seed, recipe.modalities), "dataset")
    for name, split in (("train", splits.train), ("test", splits.test)):
        missing = [m for m, p in split.present.items() if not bool(p.all())]
        if missing:
            raise SystemExit(f"the {name} split misses {missing} in some rows; the hand loop needs full pairing")
    torch.save({"train": dict(splits.train.inputs), "test": dict(splits.test.inputs)}, data_path)


def mmcore_command() -> list:
    """``mmcore`` as a user runs it: the console script beside this interpreter, else ``python -m mmcore.cli``."""
    script = Path(sys.executable).with_name("mmcore")
    return [str(script)] if script.exists() else [sys.executable, "-m", "mmcore.cli"]


def children_cpu() -> float:
    """CPU seconds (user + system) of this process's finished children."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def timed_process(command: list) -> tuple:
    """``((wall s, CPU s), stdout)`` of a process run with one thread; exits with its stderr when it fails."""
    start, cpu = time.perf_counter(), children_cpu()
    proc = subprocess.run(command, capture_output=True, text=True, env={**os.environ, **ONE_THREAD})
    seconds = (time.perf_counter() - start, children_cpu() - cpu)
    if proc.returncode != 0:
        sys.exit(f"failed ({proc.returncode}): {' '.join(command)}\n{proc.stderr[-4000:]}")
    return seconds, proc.stdout


def recall_of(run_dir: Path) -> float:
    metrics = json.loads((run_dir / "metrics.json").read_text())
    return metrics[f"retrieval/{EMERGENT[0]}->{EMERGENT[1]}/R@1"]


def steps_per_second(starts: list, end: list, steps: list) -> tuple:
    """Training steps per second of epochs 1..E-1, their steps over the time from epoch 1's start to the end:
    ``(per wall second, per CPU second)`` from the ``(wall, CPU)`` clock readings ``starts`` and ``end``."""
    return tuple(sum(steps[1:]) / (end[i] - starts[1][i]) for i in (0, 1))


class Bench:
    """The temporary folder (recipe, data file, hand-loop script, run directories) and the two sides' commands."""

    def __init__(self, args, work: Path):
        self.args, self.work = args, work
        self.recipe = work / "small_runs.toml"
        self.recipe.write_text(recipe_text(args, work / "runs"))
        self.data = work / "data.pt"
        export_data(self.recipe, self.data)
        self.hand_script = work / "hand_loop.py"
        self.hand_script.write_text(HAND_LOOP)
        self.settings = json.dumps({
            "hidden": args.hidden, "dim": args.dim, "lr": args.lr, "weight_decay": args.weight_decay,
            "temperature": args.temperature, "epochs": args.epochs, "batch": args.batch, "anchor": "image",
            "query": EMERGENT[0], "gallery": EMERGENT[1], "foreach": True if args.hand_foreach else None})
        self.count = 0

    def fresh(self, stem: str) -> Path:
        self.count += 1
        return self.work / f"{stem}-{self.count}"

    def hand(self, seeds: list) -> tuple:
        """``((wall s, CPU s), [per-seed result])`` of one hand-loop process training ``seeds`` in turn."""
        seconds, out = timed_process([sys.executable, str(self.hand_script), str(self.data), self.settings,
                                      ",".join(map(str, seeds))])
        return seconds, json.loads(out.strip().splitlines()[-1])

    def mmcore_run(self, seed: int) -> tuple:
        """``((wall s, CPU s), [test R@1])`` of ``mmcore run RECIPE --set seed=S``."""
        out = self.fresh("run")
        seconds, _ = timed_process([*mmcore_command(), "run", str(self.recipe), "--set", f"seed={seed}",
                                    "--out", str(out)])
        recall = recall_of(out)
        shutil.rmtree(out)
        return seconds, [recall]

    def mmcore_study(self, seeds: list) -> tuple:
        """``((wall s, CPU s), [test R@1 per seed])`` of ``mmcore run RECIPE --seeds ...``."""
        out = self.fresh("study")
        seconds, _ = timed_process([*mmcore_command(), "run", str(self.recipe), "--seeds", ",".join(map(str, seeds)),
                                    "--out", str(out)])
        recalls = [recall_of(out / f"seed-{seed}") for seed in seeds]
        shutil.rmtree(out)
        return seconds, recalls

    def mmcore_steps(self, seed: int, profile: bool = False) -> dict:
        """The ``--driver`` result: steps/s over epochs >= 1, in-step share, R@1 (and the profile's text)."""
        out = self.fresh("driver")
        command = [sys.executable, __file__, "--driver", str(self.recipe), str(out), str(seed)]
        _, stdout = timed_process(command + (["--profile"] if profile else []))
        shutil.rmtree(out, ignore_errors=True)
        lines = stdout.strip().splitlines()
        result = json.loads(lines[-1])
        result["text"] = "\n".join(lines[:-1])
        return result


def drive(recipe_path: str, out: str, seed: int, profile: bool) -> None:
    """``--driver``: train the recipe with ``seed`` into ``out`` in this process through
    :func:`mmcore.runs.train.train`, with a callback taking the time at each epoch start, around each training
    step and at the end of training (and cProfile over the fit with ``profile``). Prints the profile, then one
    JSON line."""
    import cProfile

    import lightning as L
    import torch

    import mmcore
    from mmcore.runs.directory import make_run_dir
    from mmcore.runs.train import train
    from mmcore.train.build import assemble

    torch.set_num_threads(1)
    profiler = cProfile.Profile() if profile else None

    class Clock(L.Callback):
        def __init__(self):
            self.starts, self.steps, self.in_step, self.end = [], [], 0.0, None
            self.batch_start = None

        def on_fit_start(self, trainer, module):
            if profiler:
                profiler.enable()

        def on_fit_end(self, trainer, module):
            if profiler:
                profiler.disable()

        def on_train_epoch_start(self, trainer, module):
            self.starts.append((time.perf_counter(), time.process_time()))
            self.steps.append(trainer.global_step)

        def on_train_batch_start(self, trainer, module, batch, batch_idx):
            self.batch_start = time.perf_counter()

        def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
            if trainer.current_epoch >= 1:
                self.in_step += time.perf_counter() - self.batch_start

        def on_train_end(self, trainer, module):
            self.end = (time.perf_counter(), time.process_time())
            self.steps.append(trainer.global_step)

    clock = Clock()
    recipe, sources = mmcore.load_recipe(recipe_path, [f"seed={seed}"])
    built = assemble(recipe)
    run_dir = make_run_dir(recipe, out)
    metrics = train(recipe, sources, run_dir, module_data=built, callbacks=(clock,))
    steps = [b - a for a, b in zip(clock.steps, clock.steps[1:])]
    if profiler:
        print(profile_text(profiler))
    print(json.dumps({"rate": steps_per_second(clock.starts, clock.end, steps),
                      "in_step": clock.in_step / (clock.end[0] - clock.starts[1][0]), "steps": steps,
                      "recall": metrics[f"retrieval/{EMERGENT[0]}->{EMERGENT[1]}/R@1"]}))


def owner(filename: str, function: str) -> str:
    """Who a cProfile entry's code belongs to: mmcore (this repository's core and plugins), Lightning, torch, or
    other (Python, numpy, ...). C functions (filename ``~``) are torch's when their name says so."""
    if filename == "~":
        return "torch" if "torch" in function else "other"
    if filename.startswith(str(ROOT)):
        return "mmcore"
    for name, marks in (("Lightning", ("/lightning/", "/lightning_fabric/", "/lightning_utilities/",
                                       "/torchmetrics/")), ("torch", ("/torch/",))):
        if any(mark in filename for mark in marks):
            return name
    return "other"


def profile_text(profiler, top: int = 25, top_self: int = 15) -> str:
    """The top ``top`` entries by cumulative time and the top ``top_self`` by self time, with their owner, then
    the self time per owner."""
    import pstats

    stats = pstats.Stats(profiler).stats  # (file, line, function) -> (calls, primitive calls, tottime, cumtime, _)
    total = sum(entry[2] for entry in stats.values())
    rows = sorted(stats.items(), key=lambda item: -item[1][3])[:top]
    lines = [f"cProfile of one mmcore fit (training only), {total:.2f} s of self time in all:", "",
             "| cumulative s | self s | calls | owner | function |", "|---|---|---|---|---|"]
    for (filename, line, function), (_, calls, tottime, cumtime, _) in rows:
        where = filename if filename == "~" else f"{_short(filename)}:{line}"
        lines.append(f"| {cumtime:.2f} | {tottime:.2f} | {calls} | {owner(filename, function)} | "
                     f"`{function}` {where} |")
    lines += ["", f"top {top_self} by self time:", "", "| self s | calls | owner | function |", "|---|---|---|---|"]
    for (filename, line, function), (_, calls, tottime, _, _) in sorted(stats.items(),
                                                                         key=lambda item: -item[1][2])[:top_self]:
        where = filename if filename == "~" else f"{_short(filename)}:{line}"
        lines.append(f"| {tottime:.2f} | {calls} | {owner(filename, function)} | `{function}` {where} |")
    shares: dict = {}
    for (filename, _, function), entry in stats.items():
        shares[owner(filename, function)] = shares.get(owner(filename, function), 0.0) + entry[2]
    lines += ["", "self time by owner: " + ", ".join(
        f"{name} {seconds:.2f} s ({seconds / total:.0%})" for name, seconds in sorted(shares.items(),
                                                                                     key=lambda kv: -kv[1]))]
    return "\n".join(lines)


def _short(filename: str) -> str:
    for mark in ("site-packages/", f"{ROOT}/"):
        if mark in filename:
            return filename.split(mark, 1)[1]
    return filename


def machine_line() -> str:
    from importlib.metadata import version

    import torch  # imported already (the data file); Lightning is not: its version from the metadata

    return (f"{platform.machine()}, {os.cpu_count()} CPUs, {platform.python_implementation()} "
            f"{platform.python_version()}, torch {torch.__version__}, lightning {version('lightning')}, one thread "
            f"per process")


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def measure(bench: Bench, seeds: list, profile: bool, reuse_hand: bool = False) -> dict:
    """Every measurement, the sides taking turns (the first side alternates from one pair to the next).
    ``reuse_hand`` (``--quick``): measurement 3's hand-loop figures are measurement 1's hand processes."""
    results = {"m1": {"hand": [], "mmcore": []}, "m2": {}, "m3": {"hand": [], "mmcore": []},
               "recall": {"hand": [], "mmcore": []}}
    turn, hand_runs = 0, []

    def pair(hand, mine):
        """``(hand(), mine())``, run in the order of this turn."""
        nonlocal turn
        turn += 1
        if turn % 2:
            first = hand()
            return first, mine()
        second = mine()
        return hand(), second

    for seed in seeds:
        print(f"1. one process per run, seed {seed} ...", file=sys.stderr, flush=True)
        hand, mine = pair(lambda: bench.hand([seed]), lambda: bench.mmcore_run(seed))
        results["m1"]["hand"].append(hand[0])
        results["m1"]["mmcore"].append(mine[0])
        results["recall"]["hand"].append(hand[1][0]["recall"])
        hand_runs.append(hand[1][0])
        results["recall"]["mmcore"].append(mine[1][0])
    print(f"2. seeds {seeds} in one process ...", file=sys.stderr, flush=True)
    hand, mine = pair(lambda: bench.hand(seeds), lambda: bench.mmcore_study(seeds))
    results["m2"] = {"hand": hand[0], "mmcore": mine[0], "recall_hand": [r["recall"] for r in hand[1]],
                     "recall_mmcore": mine[1]}
    for i, seed in enumerate(seeds):
        print(f"3. steps/s, seed {seed} ...", file=sys.stderr, flush=True)
        if reuse_hand:  # --quick: the hand loop's epochs of measurement 1 (the same process per seed)
            hand, mine = hand_runs[i], bench.mmcore_steps(seed)
        else:
            hand, mine = pair(lambda: bench.hand([seed])[1][0], lambda: bench.mmcore_steps(seed))
        results["m3"]["hand"].append(steps_per_second(hand["epoch_starts"], hand["end"], hand["steps"]))
        results["m3"]["mmcore"].append(mine)
        if mine["steps"][1:] != hand["steps"][1:]:
            print(f"note: steps per epoch differ: mmcore {mine['steps']}, hand {hand['steps']}", file=sys.stderr)
    if profile:
        print("profile: one more mmcore fit under cProfile ...", file=sys.stderr, flush=True)
        results["profile"] = bench.mmcore_steps(seeds[0], profile=True)["text"]
    return results


def report(args, results: dict, seeds: list, seconds: float, loads: tuple) -> None:
    """The table (wall clock: the targets; CPU time: the same runs with other processes' load mostly left out),
    then the figures per seed, the test Recall@1 of both sides and the profile."""
    m1, m2, m3 = results["m1"], results["m2"], results["m3"]
    n = len(seeds)
    rows = []
    for clock, unit in ((0, "wall"), (1, "CPU")):
        rate_hand = statistics.median(r[clock] for r in m3["hand"])
        rate_mine = statistics.median(r["rate"][clock] for r in m3["mmcore"])
        hand1, mine1 = sum(t[clock] for t in m1["hand"]), sum(t[clock] for t in m1["mmcore"])
        hand2, mine2 = m2["hand"][clock], m2["mmcore"][clock]
        rows += [(f"1. one process per seed ({n}), {unit} s summed", f"{hand1:.1f} s", f"{mine1:.1f} s",
                  mine1 / hand1, "<= 1.3x", mine1 / hand1 <= 1.3),
                 (f"2. {n} seeds in one process (`--seeds`), {unit} s", f"{hand2:.1f} s", f"{mine2:.1f} s",
                  mine2 / hand2, "<= 1.15x", mine2 / hand2 <= 1.15),
                 (f"3. training steps per {unit} s, epochs >= 1 (median of seeds)", f"{rate_hand:.0f}",
                  f"{rate_mine:.0f}", rate_mine / rate_hand, ">= 0.9x", rate_mine / rate_hand >= 0.9)]
        if clock == 0:
            ms_hand, ms_mine = 1000 / rate_hand, 1000 / rate_mine
    print(f"\nsmall study: synthetic, 3 modalities, {args.train_size} train samples, {args.epochs} epochs, batch "
          f"{args.batch}, hidden {args.hidden}, d = {args.dim}, seeds {','.join(map(str, seeds))}, mmcore "
          f"log_every_n_steps {args.log_every}, optimizer.implementation {args.implementation}, hand-loop AdamW "
          f"{'foreach' if args.hand_foreach else 'default'}")
    print(f"machine: {machine_line()}; load average {loads[0]} before, {load()} after; {seconds:.0f} s in all\n")
    print("| measurement | hand | mmcore | ratio (mmcore / hand) | target | met? |")
    print("|---|---|---|---|---|---|")
    for name, hand, mine, ratio, target, met in rows:
        print(f"| {name} | {hand} | {mine} | {ratio:.2f}x | {target} | {'yes' if met else 'no'} |")

    def listed(values, digits=3):
        return ", ".join(f"{v:.{digits}f}" for v in values)

    print(f"\ntest R@1 {EMERGENT[0]}->{EMERGENT[1]} (emergent pair, chance {1 / 500:.3f}) per seed: runs of 1: hand "
          f"{listed(results['recall']['hand'])}, mmcore {listed(results['recall']['mmcore'])}; one process: hand "
          f"{listed(m2['recall_hand'])}, mmcore {listed(m2['recall_mmcore'])}")
    print(f"per seed, 1. wall s: hand {listed([t[0] for t in m1['hand']], 1)}, mmcore "
          f"{listed([t[0] for t in m1['mmcore']], 1)}; 3. steps per wall s: hand "
          f"{listed([r[0] for r in m3['hand']], 0)}, mmcore {listed([r['rate'][0] for r in m3['mmcore']], 0)}")
    share = statistics.median(r["in_step"] for r in m3["mmcore"])
    print(f"mmcore: {share:.0%} of its epoch time (epochs >= 1, wall) is inside on_train_batch_start.."
          f"on_train_batch_end; {ms_mine:.2f} ms per step against the hand loop's {ms_hand:.2f} ms")
    if "profile" in results:
        print("\n" + results["profile"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="1 seed, 5 epochs (< 1 min): for iterating")
    parser.add_argument("--seeds", default=None, help="comma-separated (default 0,1,2; 0 with --quick)")
    parser.add_argument("--epochs", type=int, default=None, help="default 60 (5 with --quick)")
    parser.add_argument("--train-size", type=int, default=2000)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--weight-decay", type=float, default=0.01)
    parser.add_argument("--temperature", type=float, default=0.07)
    parser.add_argument("--log-every", type=int, default=10, help="mmcore's trainer.log_every_n_steps (default 10, "
                        "mmcore's own default)")
    parser.add_argument("--implementation", choices=("foreach", "fused"), default="foreach",
                        help="mmcore's optimizer.implementation (default foreach, mmcore's default)")
    parser.add_argument("--profile", action="store_true", help="also profile one mmcore fit (cProfile)")
    parser.add_argument("--hand-foreach", action="store_true", help="the hand loop's AdamW with foreach=True "
                        "(default: torch's default, the per-tensor loop on the CPU)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder (recipe, data, hand loop)")
    parser.add_argument("--driver", nargs=3, metavar=("RECIPE", "OUT", "SEED"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.driver:
        drive(args.driver[0], args.driver[1], int(args.driver[2]), args.profile)
        return
    args.epochs = args.epochs or (5 if args.quick else 60)
    if args.epochs < 2:
        parser.error("--epochs must be >= 2 (the steps/s leave out the first epoch)")
    seeds = [int(s) for s in (args.seeds or ("0" if args.quick else "0,1,2")).split(",")]
    loads = (load(),)
    start = time.perf_counter()
    work = Path(tempfile.mkdtemp(prefix="mmcore-small-runs-"))
    try:
        results = measure(Bench(args, work), seeds, args.profile, reuse_hand=args.quick)
    finally:
        if args.keep:
            print(f"kept {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)
    report(args, results, seeds, time.perf_counter() - start, loads)


if __name__ == "__main__":
    main()
