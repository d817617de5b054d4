"""Two gloo processes read one shards directory through the runner's loader: ids of every rank, per epoch.

Run as a script (``python gloo_epoch_check.py SHARDS_DIR WORKERS``); prints one JSON line:
``{"epochs": [[ids of rank 0, ids of rank 1], ...], "batches": [[per-rank batch counts], ...]}``. Used by
test_shards.py in a subprocess so that process groups never share pytest's process.
"""

import json
import os
import socket
import sys

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

WORLD, EPOCHS, BATCH = 2, 2, 32


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank(rank: int, port: int, path: str, workers: int, queue) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=WORLD)
    import mmcore
    from mmcore.train.data import BindingData

    splits = mmcore.get_registry().build("datasets", "shards", _config(path), mmcore.DatasetContext(), "dataset")
    data = BindingData(splits, BATCH, num_workers=workers, seed=3)
    loader = data.train_dataloader()  # built after the process group started, as Lightning does
    epochs = []
    for _ in range(EPOCHS):
        ids = []
        for _, batch in zip(range(len(loader)), loader):  # as Lightning takes them: len() batches, not exhausted
            ids += batch["id"].tolist()
        epochs.append(ids)
    gathered = [None] * WORLD
    dist.all_gather_object(gathered, {"epochs": epochs, "batches": len(loader)})
    if rank == 0:
        queue.put(gathered)
    dist.destroy_process_group()


def _config(path):
    from mmcore_shards.plugin import ShardsConfig

    return ShardsConfig(path=path)


def main() -> None:
    path, workers = sys.argv[1], int(sys.argv[2])
    context = mp.get_context("spawn")
    queue = context.Queue()
    port = _free_port()
    procs = [context.Process(target=_rank, args=(r, port, path, workers, queue)) for r in range(WORLD)]
    for p in procs:
        p.start()
    gathered = queue.get(timeout=240)
    for p in procs:
        p.join(timeout=60)
    print(json.dumps({"epochs": [[g["epochs"][e] for g in gathered] for e in range(EPOCHS)],
                      "batches": [g["batches"] for g in gathered]}))


if __name__ == "__main__":
    torch.set_num_threads(1)
    main()
