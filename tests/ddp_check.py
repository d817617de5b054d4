"""Two gloo processes vs one process holding the whole batch: loss value and encoder gradients.

Run as a script (``python tests/ddp_check.py``); prints one JSON line of the largest differences. Used by
test_distributed.py in a subprocess so that process groups never share pytest's process.
"""

import json
import os
import socket
import sys

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

WORLD = 2
BATCH = 16  # global
D_IN, D = 8, 6


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_case():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(BATCH, D_IN, generator=gen)
    y = torch.randn(BATCH, D_IN, generator=gen)
    mask = torch.ones(BATCH, dtype=torch.bool)
    mask[[1, 6, 11]] = False  # sparse pairing: some rows have no partner
    labels = torch.randint(0, 3, (BATCH,), generator=gen)
    return x, y, mask, labels


class MaskedLoss(torch.nn.Module):
    """A plugin-style loss that restricts negatives by label (like MAMCL), to check labels are gathered."""

    def __init__(self, tile_size):
        super().__init__()
        self.log_logit_scale = torch.nn.Parameter(torch.tensor(2.0))
        self.tile_size = tile_size

    @property
    def logit_scale(self):
        return self.log_logit_scale.exp()

    def rows(self, query, candidates, targets, candidate_labels=None, candidate_valid=None, direction="forward",
             term=None):
        import mmcore

        return mmcore.info_nce_rows(query, candidates, targets, self.logit_scale, candidate_labels,
                                    candidate_valid, self.tile_size)


def make_loss(kind):
    """The loss of one case: the built-in InfoNCE, the label-masked one above, or the siglip plugin's (sigmoid
    loss through mmcore.blockwise_rows; labels restrict its pairs as well), plain or tiled."""
    if kind == "infonce":
        from mmcore.builtins.losses import InfoNCEConfig, build_infonce

        return build_infonce(InfoNCEConfig(), None)
    tile = 4 if kind.endswith("_tiled") else 0
    if kind.startswith("siglip"):
        from mmcore_siglip.plugin import SigLIPConfig, build_siglip

        return build_siglip(SigLIPConfig(tile_size=tile), None)
    return MaskedLoss(tile)


def make_model(kind):
    torch.manual_seed(1)
    model = torch.nn.ModuleDict({
        "x": torch.nn.Sequential(torch.nn.Linear(D_IN, 12), torch.nn.GELU(), torch.nn.Linear(12, D)),
        "y": torch.nn.Linear(D_IN, D),
    })
    model["loss"] = make_loss(kind)
    return model


def loss_and_grads(model, x, y, mask, labels):
    import mmcore
    from mmcore.train.objective import term_loss

    zx = torch.nn.functional.normalize(model["x"](x), dim=1)
    zy = torch.nn.functional.normalize(model["y"](y), dim=1)
    loss = term_loss(model["loss"], mmcore.AlignmentTerm("x-y", zx, zy, mask, labels=labels))
    model.zero_grad()
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}


KINDS = ("infonce", "masked", "masked_tiled", "siglip", "siglip_tiled")


def worker(rank, port, queue):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=WORLD)
    x, y, mask, labels = make_case()
    rows = slice(rank * BATCH // WORLD, (rank + 1) * BATCH // WORLD)
    for kind in KINDS:
        loss, grads = loss_and_grads(make_model(kind), x[rows], y[rows], mask[rows], labels[rows])
        for g in grads.values():  # what DDP does to parameter gradients: average over ranks
            dist.all_reduce(g)
            g /= WORLD
        dist.all_reduce(loss)
        if rank == 0:
            queue.put((kind, loss.item() / WORLD, {n: g.tolist() for n, g in grads.items()}))
    dist.barrier()  # no rank tears gloo down while another still talks (seen once: SIGABRT at exit)
    dist.destroy_process_group()


def main():
    queue = mp.get_context("spawn").Queue()
    mp.start_processes(worker, args=(free_port(), queue), nprocs=WORLD, start_method="spawn")
    results = {}
    while len(results) < len(KINDS):
        kind, loss, grads = queue.get()
        results[kind] = (loss, grads)
    report = {}
    for kind in KINDS:
        single_loss, single_grads = loss_and_grads(make_model(kind), *make_case())
        ddp_loss, ddp_grads = results[kind]
        report[kind] = {
            "loss_single": single_loss.item(),
            "loss_ddp": ddp_loss,
            "max_grad_diff": max((torch.tensor(ddp_grads[n]) - g).abs().max().item()
                                 for n, g in single_grads.items()),
            "max_grad": max(g.abs().max().item() for g in single_grads.values()),
        }
    print(json.dumps(report))


if __name__ == "__main__":
    sys.exit(main())
