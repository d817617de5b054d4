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
import shutil
import tempfile
from pathlib import Path

from torch.utils.data import Dataset

from .codec import decode_item


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
                        pin_memory: bool):
        """The training loader (the ``DatasetSplits.train`` streaming contract): litdata's loader over the shards,
        shuffled by ``seed`` and the epoch."""
        dataset = self._dataset(shuffle=True, seed=seed, drop_last=drop_last)
        return _epoch_loader()(dataset, batch_size=min(batch_size, self.samples), num_workers=num_workers,
                               collate_fn=collate_fn, drop_last=drop_last, pin_memory=pin_memory)


def _epoch_loader():
    """litdata's ``StreamingDataLoader``, whose epoch ends at its last batch rather than when asked for one more.

    litdata marks a restored epoch (``load_state_dict``) done only when its iterator is exhausted; Lightning stops
    asking after ``len(loader)`` batches, so after a mid-epoch resume every later epoch would replay the restored
    state (seen: the epoch after a resume started over at the restored position). Here the restored state is
    released as the epoch's last batch is handed out, which is what an exhausted iterator would have done."""
    from litdata import StreamingDataLoader

    class EpochLoader(StreamingDataLoader):
        def __iter__(self):
            batches = len(self)
            for batch in super().__iter__():
                if self.restore and self._num_samples_yielded_streaming >= batches * self.batch_size:
                    self.restore = False
                yield batch

    return EpochLoader
