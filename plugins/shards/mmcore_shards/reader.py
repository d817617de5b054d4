"""``ShardSplit``: one split of a shards directory, streamed by litdata for training and indexed for evaluation.

Training reads through :meth:`ShardSplit.training_loader` (litdata's ``StreamingDataset`` and
``StreamingDataLoader``, built when Lightning asks for the loader, after the process group starts): each rank and
DataLoader worker reads its own part of the shards; the order is a function of the seed and the epoch (litdata
shuffles the shards, then the samples within each worker's part); with ``drop_last`` every rank gets the same number
of batches; and the loader's ``state_dict`` (samples yielded, epoch) is what Lightning saves in every checkpoint and
gives back on ``--resume``, so a run stopped mid-epoch goes on from the next batch. Validation, test and the
evaluators' reference set index the split (``split[i]``: litdata's random access, in order).

A split built with some shards left out (``bad_shards = "skip"``) reads a *view*: a temporary directory holding an
``index.json`` without them and links to the others (removed when the process exits).

Imported by the plugin's build only (it imports torch and litdata).
"""

from __future__ import annotations

import atexit
import json
import logging
import shutil
import tempfile
from pathlib import Path

from torch.utils.data import Dataset

from .codec import decode_item

log = logging.getLogger("mmcore.shards")


def view_without(directory: Path, left_out: set) -> Path:
    """A temporary litdata dataset directory of ``directory``'s shards but ``left_out`` (links, and a filtered
    ``index.json``); removed at exit."""
    index = json.loads((directory / "index.json").read_text())
    view = Path(tempfile.mkdtemp(prefix="mmcore-shards-view-"))
    atexit.register(shutil.rmtree, view, True)
    index["chunks"] = [chunk for chunk in index["chunks"] if chunk["filename"] not in left_out]
    for chunk in index["chunks"]:
        (view / chunk["filename"]).symlink_to((directory / chunk["filename"]).resolve())
    (view / "index.json").write_text(json.dumps(index))
    return view


class ShardSplit(Dataset):
    """The ``samples`` samples in the shards of litdata directory ``directory``."""

    def __init__(self, directory: Path, samples: int):
        self.directory = str(directory)
        self.samples = samples
        self._indexed = None

    def __len__(self) -> int:
        return self.samples

    def _dataset(self, **settings):
        from litdata import StreamingDataset

        return StreamingDataset(self.directory, transform=decode_item, **settings)

    def __getitem__(self, index: int) -> dict:
        if self._indexed is None:  # built on first use, in the process (or worker) that reads
            self._indexed = self._dataset(shuffle=False)
        return self._indexed[int(index)]

    def __getstate__(self):
        return {**self.__dict__, "_indexed": None}

    def training_loader(self, *, batch_size: int, collate_fn, num_workers: int, drop_last: bool, seed: int,
                        pin_memory: bool, epoch: int = 0):
        """The training loader (the ``DatasetSplits.train`` streaming contract): litdata's loader over the shards,
        shuffled by ``seed`` and the epoch; its first ``iter`` is epoch ``epoch``."""
        # litdata's default in-shard shuffle (windows of 256 samples): "full" read 2,400 samples/s against 26,000
        # (benchmarks/streaming_throughput.py); ``mmcore shard`` writes the training split in a random order instead
        dataset = self._dataset(shuffle=True, seed=seed, drop_last=drop_last)
        loader = _epoch_loader()(dataset, batch_size=min(batch_size, self.samples), num_workers=num_workers,
                                 collate_fn=collate_fn, drop_last=drop_last, pin_memory=pin_memory)
        loader.current_epoch = epoch  # litdata counts epochs done: each iter adds one and shuffles by the sum
        return loader


def _world_size() -> int:
    import torch.distributed as dist

    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def _epoch_loader():
    """litdata's ``StreamingDataLoader``, whose epochs end at their last batch, as Lightning takes them.

    Lightning takes ``len(loader)`` batches an epoch and never asks for one more, but litdata counts an epoch done
    only when its iterator is exhausted: unchanged, a run resumed mid-epoch replayed the restored position in every
    later epoch, and one resumed from an epoch's end (``last.ckpt``) ran that epoch's order again (both seen, and
    tested in this plugin). Here the restored position is released as the epoch's last batch is handed out, and a
    position saved at the end of an epoch is restored as that epoch, done: the next ``iter`` starts the next one.
    (Lightning gives back the position of a checkpoint saved mid-epoch only; a fit resumed at an epoch's end starts
    its loader at that epoch through ``training_loader(epoch=)``.)"""
    from litdata import StreamingDataLoader

    class EpochLoader(StreamingDataLoader):
        def _epoch_samples(self) -> int:
            return len(self) * self.batch_size

        def __iter__(self):
            for batch in super().__iter__():
                if self.restore and self._num_samples_yielded_streaming >= self._epoch_samples():
                    self.restore = False
                yield batch

        def load_state_dict(self, state: dict) -> None:
            if state.get("num_samples_yielded", 0) >= self._epoch_samples():
                self.current_epoch = state["current_epoch"]  # the next __iter__ starts epoch current_epoch + 1
                return
            saved = state.get("dataset", {})
            now = {"num_workers": max(1, self.num_workers), "world_size": _world_size()}
            changed = {k: (saved.get(k), v) for k, v in now.items() if saved.get(k, v) != v}
            if changed:
                log.warning("resuming mid-epoch with %s: litdata re-plans the rest of this epoch, and some of its "
                            "samples may be skipped or read twice (measured: 448 of 512 read after 0 -> 2 workers); "
                            "the next epochs are whole", ", ".join(f"{k} {a} (was {b})" for k, (b, a) in
                                                                  changed.items()))
            super().load_state_dict(state)

    return EpochLoader
