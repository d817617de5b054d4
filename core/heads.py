"""The projection head an encoder ends with, from a tower's features into the shared space."""

from __future__ import annotations


def projection_head(in_dim: int, hidden: list, out_dim: int):
    """``[b, in_dim] -> [b, out_dim]``: ``nn.Linear`` layers with GELU between them (``hidden = []``: one Linear).
    The output is not normalised (the core L2-normalises every encoder's output)."""
    from torch import nn

    layers, width = [], in_dim
    for size in hidden:
        layers += [nn.Linear(width, size), nn.GELU()]
        width = size
    layers.append(nn.Linear(width, out_dim))
    return nn.Sequential(*layers)
