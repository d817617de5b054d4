"""The data module: train/val/test loaders over a dataset's splits, in an order that depends only on (seed, epoch).

Batches reach the module as collated dicts ``{"inputs": {m: input}, "present": {m: [B]}, "id": [B], "label"?}``.
A dataset offering ``get_batch(indices)`` is fetched a whole batch at a time. Otherwise items are fetched one by
one and collated per modality: by the encoder's ``preprocess`` and ``collate`` when it has them (they run in the
DataLoader workers), else by torch's default collate.
"""

from __future__ import annotations

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset, Subset, default_collate

REFERENCE_SIZE = 5000
"""How many training samples are embedded as the evaluators' reference set (prototypes, kNN)."""


class EpochShuffle(torch.utils.data.Sampler):
    """A permutation that depends only on ``(seed, epoch)``, not on the global RNG (of every index, or of the
    dataset's ``epoch_rows(epoch)`` when it has them).

    Lightning calls ``set_epoch`` before each epoch, so a run resumed from a checkpoint sees exactly the batches
    the uninterrupted run would have seen. ``resume_at(epoch, skip)``: a run resumed in the middle of ``epoch``
    leaves out that epoch's first ``skip`` indices (the batches done before it stopped); the length stays the
    whole epoch's, as Lightning counts the batches done in the restored progress.
    """

    def __init__(self, size: int, seed: int, epoch_rows=None):
        self.size, self.seed, self.epoch = size, seed, 0
        self.epoch_rows = epoch_rows
        """None (an epoch is every index once), or the dataset's ``epoch_rows(epoch) -> [size] long``: the indices
        that make that epoch (a mixture's draw), shuffled here like the plain indices."""
        self.resumed_epoch, self.skip = 0, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def resume_at(self, epoch: int, skip: int) -> None:
        self.epoch, self.resumed_epoch, self.skip = epoch, epoch, skip

    def __iter__(self):
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        order = torch.randperm(self.size, generator=generator)
        if self.epoch_rows is not None:
            order = torch.as_tensor(self.epoch_rows(self.epoch), dtype=torch.long)[order]
        if self.skip and self.epoch == self.resumed_epoch:
            order = order[self.skip:]
        for chunk in order.split(1 << 16):
            yield from chunk.tolist()  # 8 bytes per row held, not a Python list of every index

    def __len__(self) -> int:
        return self.size


def present_index(present: torch.Tensor):
    """``"all"`` when every row of a ``[B]`` presence mask is set, else the ``[k]`` long indices of the set rows."""
    present = present.bool()
    return "all" if bool(present.all()) else present.nonzero().squeeze(1)


def _batched(dataset) -> bool:
    inner = dataset.dataset if isinstance(dataset, Subset) else dataset
    return callable(getattr(inner, "get_batch", None))


class _Batches(Dataset):
    """A dataset offering ``get_batch``, seen by torch's DataLoader through ``__getitems__`` (one call per batch,
    collated by :func:`_already_collated`); samplers, and Lightning's distributed sampler, work as for any dataset."""

    def __init__(self, dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitems__(self, indices) -> dict:
        if isinstance(self.dataset, Subset):
            return self.dataset.dataset.get_batch([self.dataset.indices[i] for i in indices])
        return self.dataset.get_batch(list(indices))

    def __getitem__(self, index) -> dict:
        return self.dataset[index]


def _already_collated(batch: dict) -> dict:
    return batch


def accepts_train(preprocess) -> bool:
    """Whether an encoder's ``preprocess`` takes the ``train=`` keyword (older ones take the raw value only)."""
    import inspect

    try:
        parameters = inspect.signature(preprocess).parameters
    except (TypeError, ValueError):
        return False
    return "train" in parameters or any(p.kind is p.VAR_KEYWORD for p in parameters.values())


def _zeros_like(value):
    if isinstance(value, dict):
        return {k: _zeros_like(v) for k, v in value.items()}
    return torch.zeros_like(value)


class ModalityCollate:
    """Collate items per modality: ``preprocess`` each item's input and ``collate`` the list, for the modalities
    whose encoder provides them; torch's default collate for everything else.

    ``train`` is passed to a ``preprocess(raw, train=)`` that takes it (augment in training, the deterministic
    transform otherwise). For raw-media modalities (``raw``), only present items are preprocessed: absent rows
    get zeros shaped like a present row, and a batch where no row has the modality gets ``None`` for it (its
    encoder is not run). Items' ``"skipped"`` counts are summed into the batch's ``"skipped"``.
    """

    def __init__(self, collators: dict, train: bool = False, raw: frozenset = frozenset()):
        self.collators = collators  # modality -> (preprocess | None, collate | None)
        self.train = train
        self.raw = frozenset(raw)
        self._with_train = {m: c[0] is not None and accepts_train(c[0]) for m, c in collators.items()}

    def _preprocess(self, modality: str, value):
        preprocess = self.collators[modality][0]
        return preprocess(value, train=self.train) if self._with_train[modality] else preprocess(value)

    def __call__(self, items: list) -> dict:
        out = {"inputs": {}, "present": default_collate([item["present"] for item in items])}
        for m in items[0]["inputs"]:
            preprocess, collate = self.collators.get(m, (None, None))
            values = [item["inputs"][m] for item in items]
            if m in self.raw:
                present = [bool(item["present"][m]) for item in items]
                values = [self._preprocess(m, v) if p else None for v, p in zip(values, present)]
                filler = next((v for v in values if v is not None), None)
                if filler is None:
                    out["inputs"][m] = None
                    continue
                filler = _zeros_like(filler)
                values = [filler if v is None else v for v in values]
            elif preprocess is not None:
                values = [self._preprocess(m, v) for v in values]
            out["inputs"][m] = (collate or default_collate)(values)
        for key in ("id", "label", "source"):  # source: a mixture's [B] source index
            if key in items[0]:
                out[key] = default_collate([item[key] for item in items])
        skipped = sum(int(item.get("skipped", 0)) for item in items)
        if skipped:
            out["skipped"] = skipped
        return out


class BindingData(L.LightningDataModule):
    """Train/val/test loaders over a dataset's splits; the test stage also embeds a training subset as reference.

    collators: modality -> ``(preprocess, collate)`` from the encoders (either may be None).
    """

    def __init__(self, splits, batch_size: int, num_workers: int = 0, seed: int = 0, collators: dict | None = None):
        super().__init__()
        self.splits = splits
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.seed = seed
        self.collators = {m: c for m, c in (collators or {}).items() if any(c)}
        self.raw = frozenset(m for m, spec in splits.inputs.items() if getattr(spec, "media", ""))
        self.test_split = "test"
        self.resume_position = (0, 0)
        """(epoch, training batches of it already done) where a resumed fit starts: :func:`resume_position`."""
        self.drop_last = True
        """Whether the training loader leaves out an epoch's last partial batch (``trainer.drop_last``, set by
        :func:`mmcore.runs.train.train`). Several processes need it: the cross-rank gather needs equal shapes."""

    def collate(self, train: bool = False) -> ModalityCollate:
        """The per-item collate of this data (``train``: the encoders' training-time preprocessing)."""
        return ModalityCollate(self.collators, train=train, raw=self.raw)

    def loader(self, dataset, shuffle: bool = False, drop_last: bool = False, train: bool = False) -> DataLoader:
        """A DataLoader in the batch contract over any split (``train``: augmenting preprocessing)."""
        pin_memory = torch.cuda.is_available()  # lets the non_blocking copy to the GPU overlap compute
        stream = getattr(dataset, "training_loader", None) if shuffle else None
        if stream is not None:  # a streaming split orders, splits and resumes itself (DatasetSplits)
            return stream(batch_size=self.batch_size, collate_fn=self.collate(train), num_workers=self.num_workers,
                          drop_last=drop_last, seed=self.seed, pin_memory=pin_memory, epoch=self.resume_position[0])
        epoch_rows = getattr(dataset, "epoch_rows", None) if shuffle else None
        epoch = len(epoch_rows(0)) if epoch_rows is not None else len(dataset)
        size = min(self.batch_size, epoch)
        sampler = EpochShuffle(epoch, self.seed, epoch_rows) if shuffle else None
        common = dict(num_workers=self.num_workers, persistent_workers=self.num_workers > 0, pin_memory=pin_memory)
        if _batched(dataset) and not self.collators:
            return DataLoader(_Batches(dataset), batch_size=size, sampler=sampler, drop_last=drop_last,
                              collate_fn=_already_collated, **common)
        return DataLoader(dataset, batch_size=size, sampler=sampler, drop_last=drop_last,
                          collate_fn=self.collate(train), **common)

    def fetch(self, dataset, indices: list) -> dict:
        """One collated batch of ``indices``, exactly as the evaluation loaders would collate it."""
        if _batched(dataset) and not self.collators:
            return _Batches(dataset).__getitems__(indices)
        return self.collate()([dataset[i] for i in indices])

    def on_before_batch_transfer(self, data, dataloader_idx: int):
        """On the host, before the batch is copied to the device: the present rows of each modality, so that
        the module's selection of them on a GPU never waits for the device (``"all"`` when every row is present)."""
        if isinstance(data, dict) and "present" in data and "rows" not in data:
            data["rows"] = {}
            for m, present in data["present"].items():
                data["rows"][m] = present_index(torch.as_tensor(present))
        return data

    def transfer_batch_to_device(self, batch, device, dataloader_idx: int):
        """Batches are built on the host: on a CPU run they are where they must be, and Lightning's walk over the
        nested batch (a few hundred microseconds a step, a tenth of a small model's step) is skipped."""
        if torch.device(device).type == "cpu":
            return batch
        return super().transfer_batch_to_device(batch, device, dataloader_idx)

    def train_dataloader(self):
        loader = self.loader(self.splits.train, shuffle=True, drop_last=self.drop_last, train=True)
        # Lightning builds this loader, and its workers draw their first indices, before it restores a resumed
        # run's progress (and calls set_epoch only after): the sampler starts where the checkpoint stopped. A
        # streaming split's own loader starts at the resumed epoch (``epoch=``) and, stopped mid-epoch, is given
        # its saved position by Lightning (its state_dict is in the checkpoint).
        if isinstance(loader.sampler, EpochShuffle):
            loader.sampler.resume_at(self.resume_position[0], self.resume_position[1] * loader.batch_size)
        return loader

    def val_dataloader(self):
        return self.loader(self.splits.val, shuffle=False)

    def reference(self):
        """The training subset embedded as the evaluators' reference set: its first rows, or for a split with
        ``epoch_rows`` (a mixture) the first distinct rows of epoch 0 (every source's share of it)."""
        train = self.splits.train
        epoch_rows = getattr(train, "epoch_rows", None)
        if epoch_rows is None:
            return Subset(train, range(min(REFERENCE_SIZE, len(train))))
        return Subset(train, list(dict.fromkeys(epoch_rows(0).tolist()))[:REFERENCE_SIZE])

    def test_dataloader(self):
        """The split named ``self.test_split`` (``"test"`` unless changed, e.g. to embed another split) and the
        reference set."""
        return [self.loader(getattr(self.splits, self.test_split), shuffle=False),
                self.loader(self.reference(), shuffle=False)]


def resume_position(checkpoint: dict) -> tuple:
    """Where a fit resumed from a Lightning ``checkpoint`` starts -> ``(epoch, batches of it already done)``: the
    epoch Lightning will run next (its fit loop's processed epochs) and, for a checkpoint saved in the middle of an
    epoch (``interrupted.ckpt``), the batches of that epoch done before it (0 at an epoch's end)."""
    fit_loop = checkpoint["loops"]["fit_loop"]
    epoch = int(fit_loop["epoch_progress"]["current"]["processed"])
    batches = fit_loop["epoch_loop.batch_progress"]
    done = 0 if batches.get("is_last_batch", False) else int(batches["current"]["completed"])
    return epoch, done
