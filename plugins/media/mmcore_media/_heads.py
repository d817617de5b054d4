"""The projection head every encoder of this plugin ends with: tower features ``[b, width]`` -> ``[b, embed_dim]``."""

from __future__ import annotations

from torch import nn

import mmcore


projection_head = mmcore.projection_head
"""``[b, in_dim] -> [b, out_dim]``: Linear layers with GELU between them (the core's public head)."""


def head_or_identity(kind: str, in_dim: int, hidden: list, out_dim: int, model: str = "the tower") -> nn.Module:
    """``head = "linear"``: :func:`projection_head`; ``"none"``: the tower's own space as the shared space (a
    pretrained anchor's, e.g. CLIP's or a sentence model's), which needs ``embed_dim`` equal to its width."""
    if kind == "none":
        if hidden:
            raise mmcore.ConfigError("hidden", "head = \"none\" has no hidden layers; drop hidden or use "
                                               "head = \"linear\"")
        if in_dim != out_dim:
            raise mmcore.ConfigError("head", f"head = \"none\" keeps {model}'s own {in_dim}-d embedding, but "
                                             f"embed_dim = {out_dim}: set embed_dim = {in_dim}, or head = \"linear\"")
        return nn.Identity()
    return projection_head(in_dim, hidden, out_dim)
