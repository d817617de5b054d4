"""What Lightning itself costs a small study, whatever mmcore does: its import, and its loop's time per step.

    python benchmarks/lightning_floor.py            # 5 rounds (about a minute on 2 cores)

Issue 17 asks mmcore to train a small study at >= 0.9x a hand-written loop's steps/s and within 1.3x (1.15x in one
process) of its wall time, with Lightning as the loop. This prints the part of each ratio that belongs to
Lightning, measured without mmcore:

1. imports: a fresh interpreter's ``import torch`` against ``import lightning`` (which imports torch, torchmetrics
   and, through torchmetrics, torchvision, transformers and scipy.signal where they are installed), wall seconds,
   the two taking turns, median of the rounds;
2. the loop: a trivial model (``Linear(8, 1)``, squared output, SGD) on 2,000 rows in batches of 128 through a
   DataLoader, trained 20 epochs by a bare loop and by ``lightning.Trainer`` with mmcore's settings for a small
   study (CPU, one device, no logger, no checkpointing, no validation, no progress bar or model summary), in
   automatic and in manual optimization; milliseconds per step over epochs 1..19, one thread, the three taking
   turns, median of the rounds. The difference is Lightning's per-step cost, which no module can remove.
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import subprocess
import sys
import time
import warnings

ROWS, BATCH, EPOCHS = 2000, 128, 20


def import_seconds(module: str) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", f"import {module}"], check=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    return time.perf_counter() - start


def bare_ms(x) -> float:
    import torch
    from torch.utils.data import DataLoader, TensorDataset

    model = torch.nn.Linear(8, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    loader = DataLoader(TensorDataset(x), batch_size=BATCH, shuffle=True)
    steps, start = 0, None
    for epoch in range(EPOCHS):
        if epoch == 1:
            start = time.perf_counter()
        for (batch,) in loader:
            loss = model(batch).square().mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            steps += epoch >= 1
    return (time.perf_counter() - start) / steps * 1e3


def lightning_ms(x, manual: bool) -> float:
    import lightning as L
    import torch
    from torch.utils.data import DataLoader, TensorDataset

    class Trivial(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.model = torch.nn.Linear(8, 1)
            self.automatic_optimization = not manual

        def training_step(self, batch, batch_idx):
            loss = self.model(batch[0]).square().mean()
            if manual:
                optimizer = self.optimizers()
                optimizer.zero_grad()
                self.manual_backward(loss)
                optimizer.step()
            return loss

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.01)

    class Clock(L.Callback):
        def on_train_epoch_start(self, trainer, module):
            if trainer.current_epoch == 1:
                self.start, self.batches = time.perf_counter(), trainer.fit_loop.epoch_loop.total_batch_idx

        def on_train_end(self, trainer, module):
            self.seconds = time.perf_counter() - self.start
            self.steps = trainer.fit_loop.epoch_loop.total_batch_idx + 1 - self.batches

    clock = Clock()
    trainer = L.Trainer(max_epochs=EPOCHS, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                        limit_val_batches=0, enable_progress_bar=False, enable_model_summary=False,
                        callbacks=[clock])
    trainer.fit(Trivial(), DataLoader(TensorDataset(x), batch_size=BATCH, shuffle=True))
    return clock.seconds / clock.steps * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    for name in ("lightning", "lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.ERROR)
    imports = {"torch": [], "lightning": []}
    for i in range(args.rounds):
        for module in (("torch", "lightning") if i % 2 == 0 else ("lightning", "torch")):
            imports[module].append(import_seconds(module))
    import torch

    torch.set_num_threads(1)
    x = torch.randn(ROWS, 8)
    loops = {"bare loop": [], "Lightning, automatic optimization": [], "Lightning, manual optimization": []}
    runs = {"bare loop": lambda: bare_ms(x), "Lightning, automatic optimization": lambda: lightning_ms(x, False),
            "Lightning, manual optimization": lambda: lightning_ms(x, True)}
    for i in range(args.rounds):
        names = list(runs)
        for name in names[i % 3:] + names[:i % 3]:
            loops[name].append(runs[name]())
    bare = statistics.median(loops["bare loop"])
    print(f"\n{os.cpu_count()} CPUs, torch {torch.__version__}, {args.rounds} rounds, medians; load average "
          f"{' '.join(f'{v:.2f}' for v in os.getloadavg())}\n")
    print("| what | time | over the plain one |")
    print("|---|---|---|")
    base = statistics.median(imports["torch"])
    for module, values in imports.items():
        median = statistics.median(values)
        print(f"| `import {module}`, fresh interpreter | {median:.2f} s | +{median - base:.2f} s |")
    for name, values in loops.items():
        median = statistics.median(values)
        print(f"| {name}, ms per step | {median:.3f} ms | +{median - bare:.3f} ms |")


if __name__ == "__main__":
    main()
