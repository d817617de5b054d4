"""In-memory splits in the batch contract: a torch Dataset over per-modality tensors with presence masks."""

from __future__ import annotations

import torch
from torch.utils.data import Dataset


class TensorSplit(Dataset):
    """A split held as tensors. Items follow the batch contract (see :class:`mmcore.Batch`).

    inputs:  modality -> ``[N, *shape]`` tensor of any shape and dtype, or a dict of such tensors (token ids and
             an attention mask); rows of absent samples may hold anything: they are zeroed here
    present: modality -> ``[N]`` bool tensor
    labels:  ``[N]`` long, or None
    ids:     ``[N]`` long, or None (defaults to ``arange(N)``)

    ``split[i]`` is one item (so a plain ``DataLoader(split)`` works with its default collate);
    ``split.get_batch(indices)`` returns a whole collated batch in one gather per tensor, which the core uses.
    """

    def __init__(self, inputs: dict, present: dict, labels=None, ids=None):
        sizes = {m: _rows(x) for m, x in inputs.items()} | {f"present[{m}]": len(p) for m, p in present.items()}
        if len(set(sizes.values())) != 1:
            raise ValueError(f"all modalities need the same number of rows, got {sizes}")
        if set(inputs) != set(present):
            raise ValueError(f"inputs and present name different modalities: {sorted(inputs)} vs {sorted(present)}")
        self.present = {m: p.bool() for m, p in present.items()}
        self.inputs = {m: _zero_absent(x, self.present[m]) for m, x in inputs.items()}
        self.size = next(iter(sizes.values()))
        self.labels = labels.long() if labels is not None else None
        self.ids = ids.long() if ids is not None else torch.arange(self.size)

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, index) -> dict:
        """One item ``{"inputs": {m: [*shape]}, "present": {m: bool}, "id", "label"?}`` (an int index), or a
        collated batch (a ``[k]`` long tensor of indices)."""
        item = {
            "inputs": {m: _take(x, index) for m, x in self.inputs.items()},
            "present": {m: p[index] for m, p in self.present.items()},
            "id": self.ids[index],
        }
        if self.labels is not None:
            item["label"] = self.labels[index]
        return item

    def get_batch(self, indices) -> dict:
        """The collated batch of ``indices`` (a list of ints): ``{"inputs": {m: [k, *shape]}, "present": {m:
        [k]}, "id": [k], "label"?: [k]}``."""
        return self[torch.as_tensor(indices, dtype=torch.long)]


def _rows(x) -> int:
    if isinstance(x, dict):
        sizes = {len(v) for v in x.values()}
        if len(sizes) != 1:
            raise ValueError(f"the entries of a dict input need the same number of rows, got {sorted(sizes)}")
        return sizes.pop()
    return len(x)


def _take(x, index):
    return {k: v[index] for k, v in x.items()} if isinstance(x, dict) else x[index]


def _zero_absent(x, present: torch.Tensor):
    if isinstance(x, dict):
        return {k: _zero_absent(v, present) for k, v in x.items()}
    x = x.float() if x.is_floating_point() else x  # features as float32; token ids and masks keep their dtype
    keep = present.reshape(-1, *([1] * (x.ndim - 1)))
    return torch.where(keep, x, torch.zeros((), dtype=x.dtype))
