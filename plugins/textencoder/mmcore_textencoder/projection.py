"""``FrozenTextTable``: a fixed table of frozen sentence embeddings followed by a trainable projection head.

Input ``x [B, V]`` holds weights over the vocabulary (a one-hot picks one text; absent rows are zeros). Output::

    head(x @ table)   [B, embed_dim]        table: [V, D] frozen sentence embeddings (a buffer, not a parameter)

The table is not saved in checkpoints (it is recomputed from the model and the texts at build), so a checkpoint holds
only the head. Imported by the plugin's build only (it imports torch at module level).
"""

from __future__ import annotations

import torch
from torch import nn

import mmcore


def head(in_dim: int, hidden: list, out_dim: int) -> nn.Module:
    """Linear layers with GELU between them: ``[B, in_dim] -> [B, out_dim]`` (``hidden = []`` is one linear map)."""
    return mmcore.projection_head(in_dim, hidden, out_dim)


class FrozenTextTable(nn.Module):
    """See the module docstring. ``embed_new(texts)`` projects strings that are not in the vocabulary (zero-shot with
    new prompts) through the same frozen model and head."""

    def __init__(self, table, hidden: list, embed_dim: int, embed_strings=None):
        super().__init__()
        self.register_buffer("table", torch.as_tensor(table, dtype=torch.float32), persistent=False)
        self.head = head(self.table.shape[1], hidden, embed_dim)
        self._embed_strings = embed_strings

    def forward(self, x):
        return self.head(x.to(self.table.dtype) @ self.table)

    @torch.no_grad()
    def embed_new(self, texts: list):
        """``[len(texts), embed_dim]`` (not normalised) for arbitrary strings."""
        vectors = torch.as_tensor(self._embed_strings(list(texts)), dtype=torch.float32, device=self.table.device)
        return self.head(vectors)
