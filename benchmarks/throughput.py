"""Training-step throughput: `mmcore` (Lightning runner) against a hand-written PyTorch loop doing the same math.

    python benchmarks/throughput.py                       # CPU-sized
    python benchmarks/throughput.py --gpu                 # CUDA: wide encoders, batch 8192, 4 loader workers
    python benchmarks/throughput.py --precision bf16-mixed --compile
    python benchmarks/throughput.py --gpu --sweep        # fp32, bf16, bf16 + compile: ratios and speed-ups

Both sides use the same recipe (recipes/imagebind.toml: three MLP encoders, fixed anchor, symmetric InfoNCE with a
learnable temperature), the same initial weights, data loader, optimizer and schedule. Steps after a warm-up are
timed; the two are run alternately, twice each, in one process, and the table prints the ratio of the medians.
"""

import argparse
import statistics
import time
from pathlib import Path

import attrs
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]


def recipe_for(args):
    import mmcore

    overrides = [
        f"trainer.batch_size={args.batch}",
        f"dataset.train_size={args.batch * (args.steps + args.warmup + 1)}",
        "dataset.val_size=64", "dataset.test_size=64",
        f"encoders.image.hidden={args.hidden}", f"encoders.text.hidden={args.hidden}",
        f"encoders.audio.hidden={args.hidden}",
        f"trainer.precision={args.precision}", f"trainer.compile={str(args.compile).lower()}",
        f"trainer.accelerator={'gpu' if args.gpu else 'cpu'}", "trainer.devices=1",
        f"embed_dim={args.dim}", f"trainer.num_workers={args.workers}",
    ]
    recipe, _ = mmcore.load_recipe(ROOT / "recipes" / "imagebind.toml", overrides)
    return recipe


class StepTimer:
    """Wall time of steps warmup..warmup+steps, with a device sync at both ends (and nowhere else: a sync per
    step would stall the GPU queue and hide the host-side overhead being measured)."""

    def __init__(self, warmup: int, steps: int):
        self.warmup, self.steps, self.start, self.seconds = warmup, steps, None, None

    def tick(self, step: int) -> None:
        if step in (self.warmup, self.warmup + self.steps) and torch.cuda.is_available():
            torch.cuda.synchronize()
        if step == self.warmup:
            self.start = time.perf_counter()
        elif step == self.warmup + self.steps:
            self.seconds = time.perf_counter() - self.start


def run_mmcore(args) -> float:
    import lightning as L

    from mmcore.train.build import assemble
    from mmcore.runs.train import make_trainer

    timer = StepTimer(args.warmup, args.steps)

    class TimerCallback(L.Callback):
        def on_train_batch_start(self, trainer, module, batch, batch_idx):
            timer.tick(trainer.global_step)

        def on_train_end(self, trainer, module):
            timer.tick(trainer.global_step)

    recipe = recipe_for(args)
    module, data = assemble(recipe)
    trainer = make_trainer(recipe, Path("/tmp/mmcore-bench"), logger=False, callbacks=[TimerCallback()],
                           enable_checkpointing=False, max_steps=args.warmup + args.steps, limit_val_batches=0,
                           num_sanity_val_steps=0)
    trainer.fit(module, datamodule=data)
    return timer.seconds


def run_hand_written(args) -> float:
    """The same training as run_mmcore, written as the plain loop a user would write without a framework."""
    from mmcore.train.build import assemble

    recipe = recipe_for(args)
    # only for identical architectures and initial weights; compiled below by hand, not by mmcore
    module, data = assemble(attrs.evolve(recipe, trainer=attrs.evolve(recipe.trainer, compile=False)))
    device = torch.device("cuda" if args.gpu else "cpu")
    module.to(device)  # moves the parameters themselves: they stay leaves the optimizer can own
    encoders = module.encoders
    log_scale = module.loss.log_logit_scale
    if recipe.trainer.compile:
        encoders = torch.nn.ModuleDict({m: torch.compile(e) for m, e in encoders.items()})
    params = list(encoders.parameters()) + [log_scale]
    optimizer = torch.optim.AdamW([
        {"params": [p for p in params if p.ndim >= 2], "weight_decay": recipe.optimizer.weight_decay},
        {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0}], lr=recipe.optimizer.lr)
    total = args.warmup + args.steps
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 0.5 * (1 + torch.cos(
        torch.tensor(torch.pi * min(1.0, s / total))).item()))
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.precision == "bf16-mixed")
    timer = StepTimer(args.warmup, args.steps)
    anchor = recipe.anchor.config.anchor
    step = 0
    for batch in data.train_dataloader():
        timer.tick(step)
        if step == total:
            break
        inputs = {m: x.to(device, non_blocking=True) for m, x in batch["inputs"].items()}
        present = {m: p.to(device, non_blocking=True) for m, p in batch["present"].items()}
        with autocast:
            z = {m: F.normalize(encoders[m](inputs[m]), dim=-1) for m in encoders}
            scale = log_scale.clamp(max=module.loss.max_log_scale).exp()
            loss = 0.0
            for m in z:
                if m == anchor:
                    continue
                keep = present[m] & present[anchor]
                logits = scale * z[m][keep] @ z[anchor][keep].T
                labels = torch.arange(len(logits), device=device)
                loss = loss + (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)) / 2
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        step += 1
    return timer.seconds


def measure(args) -> dict:
    """Steps/s of both loops for one setting (``args.precision``, ``args.compile``): median over alternated rounds."""
    times = {"mmcore": [], "hand-written": []}
    for _ in range(args.rounds):
        times["hand-written"].append(run_hand_written(args))
        times["mmcore"].append(run_mmcore(args))
    return {name: [args.steps / t for t in values] for name, values in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gpu", action="store_true")
    parser.add_argument("--batch", type=int, default=None)
    parser.add_argument("--hidden", default=None, help="TOML list of hidden widths per encoder")
    parser.add_argument("--dim", type=int, default=None)
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--precision", default="32-true")
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--sweep", action="store_true",
                        help="fp32, bf16-mixed and bf16-mixed + torch.compile in one run, with speed-ups over fp32")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--workers", type=int, default=None, help="data-loader workers (default: 4 on a GPU, 0)")
    args = parser.parse_args()
    args.batch = args.batch or (8192 if args.gpu else 512)
    args.hidden = args.hidden or ("[4096,4096]" if args.gpu else "[256]")
    args.workers = args.workers if args.workers is not None else (4 if args.gpu else 0)
    args.dim = args.dim or (512 if args.gpu else 128)
    args.steps = args.steps or (50 if args.gpu else 20)
    settings = ([("32-true", False), ("bf16-mixed", False), ("bf16-mixed", True)] if args.sweep
                else [(args.precision, args.compile)])

    device = torch.cuda.get_device_name(0) if args.gpu else "cpu"
    print(f"device={device} torch={torch.__version__} batch={args.batch} hidden={args.hidden} dim={args.dim} "
          f"workers={args.workers} steps={args.steps} (after {args.warmup} warm-up), {args.rounds} rounds, "
          "median steps/s")
    print(f"{'precision':>10} {'compile':>7} | {'mmcore':>8} {'hand':>8} {'ratio':>6} | {'speed-up vs first':>17} | "
          f"all rounds (mmcore; hand)")
    first = None
    for precision, compile_ in settings:
        args.precision, args.compile = precision, compile_
        rates = measure(args)
        rate = {k: statistics.median(v) for k, v in rates.items()}
        first = first or rate
        print(f"{precision:>10} {str(compile_):>7} | {rate['mmcore']:>8.2f} {rate['hand-written']:>8.2f} "
              f"{rate['mmcore'] / rate['hand-written']:>6.3f} | {rate['mmcore'] / first['mmcore']:>17.2f} | "
              f"{', '.join(f'{r:.2f}' for r in rates['mmcore'])}; "
              f"{', '.join(f'{r:.2f}' for r in rates['hand-written'])}", flush=True)


if __name__ == "__main__":
    main()
