"""Training-step throughput: `mmcore` (Lightning runner) against a hand-written PyTorch loop doing the same math.

    python benchmarks/throughput.py                       # CPU-sized
    python benchmarks/throughput.py --gpu                 # CUDA: wide encoders, batch 8192
    python benchmarks/throughput.py --precision bf16-mixed --compile

Both sides use the same recipe (recipes/imagebind.toml: three MLP encoders, fixed anchor, symmetric InfoNCE with a
learnable temperature), the same initial weights, data loader, optimizer and schedule. Steps after a warm-up are
timed; the two are run alternately, twice each, in one process, and the table prints the ratio of the medians.
"""

import argparse
import statistics
import time
from pathlib import Path

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
        f"embed_dim={args.dim}",
    ]
    recipe, _ = mmcore.load_recipe(ROOT / "recipes" / "imagebind.toml", overrides)
    return recipe


class StepTimer:
    """Wall time of steps warmup..warmup+steps, with a device sync at both ends."""

    def __init__(self, warmup: int, steps: int):
        self.warmup, self.steps, self.start, self.seconds = warmup, steps, None, None

    def tick(self, step: int) -> None:
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        if step == self.warmup:
            self.start = time.perf_counter()
        elif step == self.warmup + self.steps:
            self.seconds = time.perf_counter() - self.start


def run_mmcore(args) -> float:
    import lightning as L

    from mmcore.runner import assemble, make_trainer

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
    from mmcore.runner import assemble

    recipe = recipe_for(args)
    module, data = assemble(recipe)  # only for identical architectures and initial weights
    device = torch.device("cuda" if args.gpu else "cpu")
    encoders = module.encoders.to(device)
    log_scale = module.loss.log_logit_scale.to(device)
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
    anchor = recipe.anchor.config.modality
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
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    args.batch = args.batch or (8192 if args.gpu else 512)
    args.hidden = args.hidden or ("[2048,2048]" if args.gpu else "[256]")
    args.dim = args.dim or (512 if args.gpu else 128)
    args.steps = args.steps or (50 if args.gpu else 20)

    times = {"mmcore": [], "hand-written": []}
    for _ in range(args.rounds):
        times["hand-written"].append(run_hand_written(args))
        times["mmcore"].append(run_mmcore(args))
    device = torch.cuda.get_device_name(0) if args.gpu else "cpu"
    print(f"device={device} batch={args.batch} hidden={args.hidden} dim={args.dim} precision={args.precision} "
          f"compile={args.compile} steps={args.steps} (after {args.warmup} warm-up), {args.rounds} rounds")
    print(f"{'loop':>13} {'steps/s (median)':>17} {'all rounds':>24}")
    rate = {k: args.steps / statistics.median(v) for k, v in times.items()}
    for name, values in times.items():
        print(f"{name:>13} {rate[name]:>17.2f} {', '.join(f'{args.steps / v:.2f}' for v in values):>24}")
    print(f"mmcore / hand-written throughput: {rate['mmcore'] / rate['hand-written']:.3f}")


if __name__ == "__main__":
    main()
