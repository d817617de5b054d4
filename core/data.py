"""In-memory splits in the batch contract: a torch Dataset over per-modality tensors with presence masks."""

from __future__ import annotations

import torch
from torch.utils.data import Dataset


class TensorSplit(Dataset):
    """A split held as tensors. Items follow the batch contract (see :class:`mmcore.Batch`).

    inputs:  modality -> ``[N, input_dim]`` float tensor (rows of absent samples may hold anything; they are
             zeroed here)
    present: modality -> ``[N]`` bool tensor
    labels:  ``[N]`` long, or None
    ids:     ``[N]`` long, or None (defaults to ``arange(N)``)
    """

    def __init__(self, inputs: dict, present: dict, labels=None, ids=None):
        sizes = {m: len(x) for m, x in inputs.items()} | {f"present[{m}]": len(p) for m, p in present.items()}
        if len(set(sizes.values())) != 1:
            raise ValueError(f"all modalities need the same number of rows, got {sizes}")
        if set(inputs) != set(present):
            raise ValueError(f"inputs and present name different modalities: {sorted(inputs)} vs {sorted(present)}")
        self.present = {m: p.bool() for m, p in present.items()}
        self.inputs = {m: x.float() * self.present[m][:, None] for m, x in inputs.items()}
        self.size = next(iter(sizes.values()))
        self.labels = labels.long() if labels is not None else None
        self.ids = ids.long() if ids is not None else torch.arange(self.size)

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, index: int) -> dict:
        item = {
            "inputs": {m: x[index] for m, x in self.inputs.items()},
            "present": {m: p[index] for m, p in self.present.items()},
            "id": self.ids[index],
        }
        if self.labels is not None:
            item["label"] = self.labels[index]
        return item

    def __getitems__(self, indices: list) -> dict:
        """Batched fetch (used by DataLoader): one gather per tensor instead of one per sample."""
        index = torch.as_tensor(indices, dtype=torch.long)
        return self[index]


def collate(batch: dict) -> dict:
    """Collate for :meth:`TensorSplit.__getitems__`, which already returns a batch."""
    return batch
