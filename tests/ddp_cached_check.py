"""Two gloo processes under Lightning's DDP, each taking the cached step (``trainer.embed_chunk``) on its half of a
batch, against one process taking the plain step on the whole batch: parameter gradients after DDP's all-reduce.

Run as a script: ``python tests/ddp_cached_check.py OUT.json`` (Lightning's launcher starts the second process by
running this script again). Rank 0 writes the largest differences to ``OUT.json``. Used by test_distributed.py.
"""

import json
import os
import sys

import lightning as L
import torch

import mmcore
from mmcore.contracts import Batch
from mmcore.recipe import structure_recipe
from mmcore.registry import get_registry
from mmcore.train.build import assemble

WORLD, GLOBAL_BATCH, CHUNK = 2, 48, 5
PAIRING = [["image", "text"], ["image", "audio"], ["image", "text", "audio"]]


def module_and_batch():
    """A fresh module (the same initial weights in every process: assemble seeds with the recipe's seed) and one
    collated training batch of ``GLOBAL_BATCH`` rows, sparsely paired. MAMCL: labels gathered across ranks, a
    learnable temperature; tiled, so the loss is blockwise too."""
    raw = mmcore.testing.tiny_recipe(
        anchor={"name": "imagebind", "anchor": "image"},
        loss={"name": "mamcl", "learnable": True, "tile_size": 8},
        trainer={"batch_size": GLOBAL_BATCH, "embed_chunk": CHUNK})
    raw["dataset"]["pairing"] = PAIRING
    module, data = assemble(structure_recipe(raw, get_registry(), "<ddp check>"))
    data.setup("fit")
    return module, next(iter(data.train_dataloader()))


def half(data: dict, rank: int) -> dict:
    """Rank ``rank``'s rows of a collated batch (host row indices dropped: recomputed from the masks)."""
    rows = slice(rank * GLOBAL_BATCH // WORLD, (rank + 1) * GLOBAL_BATCH // WORLD)
    return {"inputs": {m: v[rows] for m, v in data["inputs"].items()},
            "present": {m: v[rows] for m, v in data["present"].items()},
            "label": data["label"][rows], "id": data["id"][rows]}


class RecordGradients(L.Callback):
    def __init__(self):
        self.grads = {}

    def on_before_optimizer_step(self, trainer, module, optimizer):
        self.grads = {n: p.grad.detach().clone() for n, p in module.named_parameters() if p.grad is not None}


def main(out: str) -> int:
    rank = int(os.environ.get("LOCAL_RANK", 0))
    single, whole = module_and_batch()  # before any process group: one process, the whole batch, the plain step
    single.train()
    losses, finish = single.step_losses(Batch.from_collated(whole), 0)
    finish(torch.stack(list(losses.values())).sum()).backward()
    expected = {n: p.grad for n, p in single.named_parameters() if p.grad is not None}
    module, data = module_and_batch()
    loader = torch.utils.data.DataLoader([half(data, rank)], batch_size=None)
    record = RecordGradients()
    trainer = L.Trainer(accelerator="cpu", devices=WORLD, strategy="ddp", max_steps=1, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        use_distributed_sampler=False, callbacks=[record], limit_val_batches=0)
    trainer.fit(module, train_dataloaders=loader)
    if trainer.global_rank != 0:
        return 0
    report = {
        "names_equal": sorted(expected) == sorted(record.grads),
        "parameters": len(expected),
        "max_grad_diff": max((record.grads[n] - g).abs().max().item() for n, g in expected.items()
                             if n in record.grads),
        "max_grad": max(g.abs().max().item() for g in expected.values()),
        "temperature_grad": [n for n in expected if n.startswith("loss.")],
    }
    with open(out, "w") as f:
        json.dump(report, f)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
