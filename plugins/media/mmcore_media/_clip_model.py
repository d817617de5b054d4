"""open_clip towers for ``open_clip_image`` / ``open_clip_text``: building the CLIP model, keeping one tower, its
blocks, and the two encoder modules.

Imported by the builds only (torch and open_clip at module level).
"""

from __future__ import annotations

import difflib
import os

import torch
from torch import nn

import mmcore

from ._image_model import TunedTower, _Unregistered, tower_blocks

CLIP_INSTALL = 'pip install "mmcore-media[clip]"'
SCHEMAS = ("hf-hub:", "local-dir:")


def check_model(model: str) -> None:
    """ConfigError on ``model`` unless open_clip knows it (a bundled or added config), with close names; names
    with an ``hf-hub:`` / ``local-dir:`` schema are open_clip's to resolve."""
    import open_clip

    if model.startswith(SCHEMAS) or model in open_clip.list_models():
        return
    close = difflib.get_close_matches(model, open_clip.list_models(), n=5, cutoff=0.6)
    hint = f"; close names: {', '.join(close)}" if close else ""
    raise mmcore.ConfigError("model", f"open_clip has no model {model!r}{hint} (all: open_clip.list_models())")


def pretrained_argument(model: str, pretrained: str):
    """open_clip's ``pretrained=``: None for ``""``, the file for an existing path, else a pretrained tag that
    open_clip lists for ``model`` (``open_clip.list_pretrained_tags_by_model``); ConfigError otherwise."""
    import open_clip

    if not pretrained:
        return None
    if model.startswith(SCHEMAS):
        raise mmcore.ConfigError("pretrained", f"{model!r} names its own weights (open_clip ignores pretrained "
                                               f"for hf-hub: and local-dir: models); leave pretrained empty")
    if os.path.isfile(pretrained):
        return os.path.abspath(pretrained)
    tags = open_clip.list_pretrained_tags_by_model(model)
    if pretrained not in tags:
        known = ", ".join(tags) if tags else "none"
        raise mmcore.ConfigError("pretrained", f"{pretrained!r} is neither a checkpoint file nor a pretrained tag "
                                               f"of {model!r} (its tags: {known})")
    return pretrained


def create_clip(model: str, pretrained: str, load_weights: bool, image_size: int = 0):
    """``open_clip.create_model_and_transforms(model, pretrained=...)`` -> ``(clip, train_transform,
    eval_transform)``. ``load_weights`` False (a run being loaded) builds the architecture only: no file, no hub,
    no base text-tower weights."""
    import open_clip

    check_model(model)
    if image_size < 0:
        raise mmcore.ConfigError("image_size", f"must be > 0 (or 0 for the model's own size), got {image_size}")
    source = pretrained_argument(model, pretrained) if load_weights else None
    try:
        return open_clip.create_model_and_transforms(
            model, pretrained=source, load_weights=load_weights, pretrained_text=bool(source),
            force_image_size=image_size or None)
    except (RuntimeError, OSError, ValueError, KeyError) as exc:
        raise mmcore.ConfigError("pretrained" if source else "model",
                                 f"open_clip cannot build {model!r} (pretrained = {pretrained!r}): "
                                 f"{type(exc).__name__}: {exc}") from None


def clip_blocks(tower) -> list:
    """A tower's blocks, input to output: its transformer's residual blocks (open_clip ViTs and text
    transformers; ``transformer.encoder.layer`` for HF text towers), a timm trunk's blocks, or a ResNet's
    ``layer1..4``."""
    for path in ("transformer.resblocks", "clip.transformer.resblocks", "transformer.encoder.layer"):
        container = tower
        for name in path.split("."):
            container = getattr(container, name, None)
        if isinstance(container, (nn.ModuleList, nn.Sequential)):
            return list(container)
    trunk = getattr(tower, "trunk", None)
    return tower_blocks(trunk if isinstance(trunk, nn.Module) else tower)


class ClipTextTower(nn.Module):
    """The text half of an open_clip ``CLIP``: ``forward(tokens [b, context_length] int64) -> [b, clip_dim]``
    (``encode_text``, unnormalised). The image tower and the logit scale/bias are removed, so every remaining
    parameter takes part in the forward."""

    def __init__(self, clip: nn.Module):
        super().__init__()
        clip.visual = None
        for name in ("logit_scale", "logit_bias"):
            if isinstance(getattr(clip, name, None), nn.Parameter):
                delattr(clip, name)
        self.clip = clip

    def forward(self, tokens):
        return self.clip.encode_text(tokens)


def text_tower(clip: nn.Module) -> nn.Module:
    """The text tower: ``clip.text`` of a ``CustomTextCLIP`` (HF or custom text towers), else a
    :class:`ClipTextTower` over the ``CLIP``."""
    text = getattr(clip, "text", None)
    return text if isinstance(text, nn.Module) else ClipTextTower(clip)


@torch.no_grad()
def output_width(tower: nn.Module, example) -> int:
    """Width of the tower's output for one example batch (a dry forward in eval mode)."""
    was_training = tower.training
    tower.eval()
    try:
        return int(tower(example).shape[-1])
    finally:
        tower.train(was_training)


def clip_head(width: int, head: str, hidden: list, embed_dim: int, model: str) -> nn.Module:
    """``"none"``: CLIP's own embedding (its width must be ``embed_dim``); ``"linear"``: a projection head."""
    from ._heads import head_or_identity

    return head_or_identity(head, width, list(hidden), embed_dim, model)


class ClipImageEncoder(TunedTower):
    """``forward(pixels [b, 3, H, W]) -> [b, embed_dim]``; ``preprocess(raw, train) -> [3, H, W]`` float32 by
    open_clip's train transform (random resized crop, scale 0.9-1) or its eval transform (resize, centre crop),
    normalised with the model's mean and std."""

    def __init__(self, tower, head, frozen, trainable_blocks, train_transform, eval_transform):
        super().__init__(tower, head, frozen, trainable_blocks)
        self.train_transform = _Unregistered(train_transform)
        self.eval_transform = _Unregistered(eval_transform)

    def preprocess(self, raw, train: bool = False):
        from .decode import read_image

        return (self.train_transform if train else self.eval_transform).value(read_image(raw))


class ClipTextEncoder(TunedTower):
    """``forward(tokens [b, context_length] int64) -> [b, embed_dim]``; ``preprocess(text) -> [context_length]``
    int64 by ``open_clip.get_tokenizer(model)`` (padded and truncated to the model's context length, so torch's
    default collate stacks them). Text has no augmentation: ``train`` changes nothing."""

    def __init__(self, tower, head, frozen, trainable_blocks, tokenizer):
        super().__init__(tower, head, frozen, trainable_blocks)
        self.tokenizer = _Unregistered(tokenizer)

    def preprocess(self, raw, train: bool = False):
        from .decode import read_text

        return self.tokenizer.value([read_text(raw)])[0].to(torch.int64)
