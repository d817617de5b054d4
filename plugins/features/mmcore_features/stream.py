"""``FeatureSplit``: a torch Dataset over some rows of a features directory, read from disk one batch at a time.

``get_batch(indices)`` returns the whole batch in the batch contract (the core fetches whole batches through it):
``{"inputs": {m: [B, d_m] float32}, "present": {m: [B] bool}, "id": [B] long, "label": [B] long}`` (no ``"label"``
without labels.npy). The batch's file rows are sorted and deduplicated before reading (consecutive rows become one
read), and the result is put back in the requested order. Absent rows are zeros whatever the file holds.

Memory: the split's row numbers (``8 n`` bytes) plus one batch. Feature rows are read with ``io`` (``pread``: only the
batch; ``mmap``: see :mod:`mmcore_features.reader`). The 1-D files (presence, ids, labels: 1 to 8 bytes a row) are
memory-mapped, so at most their size (``N`` bytes per presence file, ``8 N`` for ids and labels) becomes resident.

Imported by the plugin's build only (it imports torch at module level).
"""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset

import mmcore


class FeatureSplit(Dataset):
    """The samples at file rows ``rows`` (``[n]`` int64) of a validated :class:`~mmcore_features.layout.Layout`,
    read through the layout's readers (which check before each read that their file has not changed)."""

    def __init__(self, layout, rows):
        self.rows = np.asarray(rows, dtype=np.int64)
        self.features = {m: spec[0] for m, spec in layout.modalities.items()}
        # 1-D files (1 to 8 bytes a row) are memory-mapped whatever ``io`` says (see layout.discover): one read per
        # row would cost more than the row, and all of them together stay small next to the features
        self.presence = {m: spec[1] for m, spec in layout.modalities.items() if spec[1] is not None}
        self.ids = layout.ids
        self.labels = layout.labels

    def __len__(self) -> int:
        return len(self.rows)

    def get_batch(self, indices) -> dict:
        """The batch of ``indices`` (positions in this split). Raises :class:`mmcore.DataError` naming the file for
        a present row that is not finite in float32, and for a file changed since the build."""
        wanted = self.rows[np.asarray(indices, dtype=np.int64)]
        rows, back = np.unique(wanted, return_inverse=True)  # sorted, unique; rows[back] == wanted
        inputs, present = {}, {}
        for m, reader in self.features.items():
            mask = self.presence[m].read(rows) if m in self.presence else np.ones(len(rows), dtype=bool)
            with np.errstate(over="ignore"):  # float64 beyond float32's range becomes inf, refused below
                x = reader.read(rows).astype(np.float32, copy=False)
            x[~mask] = 0.0
            if not np.isfinite(x).all():
                bad = int(rows[~np.isfinite(x).all(1)][0])
                raise mmcore.DataError(f"{reader.path}: row {bad} is present but holds NaN, infinite or "
                                       "out-of-float32-range values")
            inputs[m] = torch.from_numpy(x[back])
            present[m] = torch.from_numpy(mask[back])
        ids = self.ids.read(rows).astype(np.int64) if self.ids is not None else rows
        batch = {"inputs": inputs, "present": present, "id": torch.from_numpy(np.ascontiguousarray(ids[back]))}
        if self.labels is not None:
            batch["label"] = torch.from_numpy(self.labels.read(rows).astype(np.int64)[back])
        return batch

    def __getitem__(self, index: int) -> dict:
        """One sample (for code that does not batch): the batch of one, unbatched."""
        batch = self.get_batch([index])
        item = {"inputs": {m: x[0] for m, x in batch["inputs"].items()},
                "present": {m: p[0] for m, p in batch["present"].items()}, "id": batch["id"][0]}
        if "label" in batch:
            item["label"] = batch["label"][0]
        return item
