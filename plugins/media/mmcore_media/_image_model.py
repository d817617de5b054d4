"""timm towers (shared by ``timm_image`` and ``audio_cnn``), the projection head, and the ``timm_image`` module.

Imported by the builds only (it imports torch and timm at module level).

A tower is ``timm.create_model(model, pretrained=..., num_classes=0, [img_size=], [in_chans=])``: the model
without its classifier, so ``tower(x [b, in_chans, H, W]) -> [b, width]`` are its pooled features. ``width`` is
measured with one dry forward at build (eval mode, no grad), which also rejects an input size the model cannot
take (a ``ConfigError`` on ``img_size``).
"""

from __future__ import annotations

import contextlib
import difflib
import logging
import os

import torch
from torch import nn

import mmcore

from ._heads import projection_head  # noqa: F401 - the head of image, audio and clip encoders

IMAGE_INSTALL = 'pip install "mmcore-media[image]"'


def check_model_name(name: str) -> None:
    """ConfigError on ``model`` unless timm knows the architecture (a ``.tag`` suffix is allowed), with the
    closest registered names as a hint."""
    import timm

    if timm.is_model(name):
        return
    arch = timm.models.split_model_name_tag(name)[0]
    close = difflib.get_close_matches(arch, timm.list_models(), n=5, cutoff=0.6)
    hint = f"; close names: {', '.join(close)}" if close else ""
    raise mmcore.ConfigError("model", f"timm has no model {name!r}{hint} (all names: timm.list_models(\"*pattern*\"))")


def pretrained_source(pretrained: str, load_weights: bool) -> dict:
    """``create_model`` keyword arguments for ``pretrained``:

    - ``""``: random initialisation; ``"hub"``: timm's own pretrained weights for the model name (downloaded
      through the Hugging Face hub cache; pick a tag with ``model = "arch.tag"``);
    - a file path (``.safetensors``, ``.pth``, ``.bin``; a state dict, or a checkpoint holding ``state_dict`` /
      ``model``): loaded by timm with ``pretrained_cfg_overlay=dict(file=path)``, as timm documents, so the
      model's own checkpoint filter applies (position embeddings resized to ``img_size``, the stem adapted to
      ``in_chans``, classifier weights dropped).

    ``load_weights`` False (``context.pretrained``: a checkpoint restores the weights right after) builds the
    architecture only, without reading the file or the hub.
    """
    if not pretrained or not load_weights:
        return {"pretrained": False}
    if pretrained == "hub":
        return {"pretrained": True}
    if not os.path.isfile(pretrained):
        raise mmcore.ConfigError("pretrained", f"no such checkpoint file: {pretrained!r} (use \"\" for random "
                                               "weights, \"hub\" for timm's pretrained weights, or a file path)")
    return {"pretrained": True, "pretrained_cfg_overlay": {"file": os.path.abspath(pretrained)}}


@contextlib.contextmanager
def _missing_keys_log():
    """Collect timm's "Missing keys (...)" log line of a pretrained load (timm loads non-strictly whenever it
    drops the classifier, and only logs what the file lacked)."""
    logger = logging.getLogger("timm.models._builder")
    lines: list = []

    class Collect(logging.Handler):
        def emit(self, record):
            message = record.getMessage()
            if message.startswith("Missing keys"):
                lines.append(message)

    handler, level = Collect(logging.INFO), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield lines
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def create_tower(model: str, pretrained: str, load_weights: bool, img_size=0, in_chans: int = 3,
                 size_field: str = "img_size"):
    """``timm.create_model(model, num_classes=0, ...)``; ``img_size`` (an int, an ``(H, W)`` pair, or 0 for the
    model's own) is passed to models that take it (ViT-like: their position embeddings depend on it) and left
    out for the others (convolutional nets take any size); ``in_chans`` other than 3 goes to the stem (timm
    adapts pretrained RGB stem weights). ``size_field`` names the setting a bad size is reported on."""
    import timm

    check_model_name(model)
    if any(side < 0 for side in (img_size if isinstance(img_size, tuple) else (img_size,))):
        raise mmcore.ConfigError(size_field, f"must be > 0 (or 0 for the model's own size), got {img_size}")
    kwargs = dict(num_classes=0, **pretrained_source(pretrained, load_weights))
    if in_chans != 3:
        kwargs["in_chans"] = in_chans
    with _missing_keys_log() as missing:
        try:
            try:
                tower = timm.create_model(model, **kwargs, **({"img_size": img_size} if img_size else {}))
            except TypeError as exc:
                if "img_size" not in str(exc):
                    raise
                tower = timm.create_model(model, **kwargs)
        except (RuntimeError, OSError, ValueError, AssertionError) as exc:
            field = "pretrained" if kwargs["pretrained"] else (size_field if img_size else "model")
            raise mmcore.ConfigError(field, f"timm cannot build {model!r} (pretrained = {pretrained!r}, "
                                            f"{size_field} = {img_size}): {type(exc).__name__}: {exc}") from None
    if missing:
        raise mmcore.ConfigError("pretrained", f"{pretrained!r} does not hold the weights of {model!r}: "
                                               f"{missing[0][:300]}")
    return tower


def input_size(tower, img_size: int = 0, in_chans: int = 3) -> tuple:
    """``(in_chans, H, W)`` the tower is fed: ``img_size`` square when set, else its data config's size."""
    import timm

    if img_size:
        return (in_chans, img_size, img_size)
    return (in_chans, *timm.data.resolve_data_config({}, model=tower)["input_size"][1:])


@torch.no_grad()
def feature_width(tower, size: tuple, size_field: str = "img_size") -> int:
    """Width of the pooled features for one ``[1, *size]`` input (a dry forward in eval mode); ConfigError on
    ``size_field`` when the model cannot take that size."""
    was_training = tower.training
    tower.eval()
    try:
        out = tower(torch.zeros(1, *size))
    except (RuntimeError, ValueError, AssertionError) as exc:
        raise mmcore.ConfigError(size_field, f"the tower cannot take inputs {list(size)}: {exc}") from None
    finally:
        tower.train(was_training)
    if out.ndim != 2:
        raise mmcore.ConfigError("model", f"expected pooled features [1, width] with num_classes=0, got "
                                          f"{list(out.shape)}")
    return int(out.shape[1])


def tower_blocks(tower) -> list:
    """The tower's blocks, input to output, for ``unfreeze_last``: the children of its first ``blocks`` /
    ``stages`` / ``layers`` container (ViT, DeiT, EVA, EfficientNet, ConvNeXt, Swin, ...), else its ``layer1``,
    ``layer2``, ... (ResNet-like); ``[]`` when it has none of these."""
    for name in ("blocks", "stages", "layers"):
        container = getattr(tower, name, None)
        if isinstance(container, (nn.Sequential, nn.ModuleList)) and len(container) > 1:
            return list(container)
    layers, index = [], 1
    while isinstance(getattr(tower, f"layer{index}", None), nn.Module):
        layers.append(getattr(tower, f"layer{index}"))
        index += 1
    return layers


TIMM_LORA_HINT = "e.g. [\"qkv\"] or [\"qkv\", \"proj\"] for a ViT, [\"conv2\"] for a ResNet"


def tune(tower, mode: str, unfreeze_last: int, lora, modality: str, blocks=None, lora_hint: str = TIMM_LORA_HINT):
    """``tuning.tune_tower`` for a tower whose ``blocks`` (default: :func:`tower_blocks`) are known; LoRA needs
    ``target_modules`` (peft knows no default for timm or open_clip modules; ``lora_hint`` says which to name).
    Returns ``(tower, trainable blocks)``, the blocks that train inside a frozen tower (they stay in train mode,
    see :class:`TunedTower`)."""
    from .tuning import tune_tower

    if mode == "lora" and not lora.target_modules:
        raise mmcore.ConfigError("lora.target_modules", f"name the modules to adapt, {lora_hint}")
    blocks = tower_blocks(tower) if blocks is None else blocks
    if mode == "frozen" and unfreeze_last and not blocks:
        raise mmcore.ConfigError("unfreeze_last", f"the tower {type(tower).__name__} exposes no blocks, stages "
                                                  "or layerN to unfreeze")
    tuned = tune_tower(tower, mode, unfreeze_last, lora, blocks, modality)
    return tuned, (blocks[len(blocks) - unfreeze_last:] if mode == "frozen" and unfreeze_last else [])


class TunedTower(nn.Module):
    """``head(tower(x))`` where a ``"frozen"`` tower stays in eval mode while the module trains (its batch-norm
    statistics and dropout stay fixed, so a frozen tower gives the same features in training and in use),
    except its unfrozen last blocks, which follow the module's mode. Subclasses add ``preprocess``."""

    def __init__(self, tower: nn.Module, head: nn.Module, frozen: bool, trainable_blocks=()):
        super().__init__()
        self.tower = tower
        self.head = head
        self._frozen = frozen
        self._trainable_blocks = list(trainable_blocks)  # submodules of tower (not registered twice)

    def train(self, mode: bool = True):
        super().train(mode)
        if self._frozen:
            self.tower.eval()
            for block in self._trainable_blocks:
                block.train(mode)
        return self

    def forward(self, x):
        return self.head(self.tower(x))


class TimmImageEncoder(TunedTower):
    """``forward(pixels [b, 3, H, W]) -> [b, embed_dim]``; ``preprocess(raw, train) -> [3, H, W]`` float32 via
    timm's train transform (random resized crop, flip, colour jitter) or its eval transform (resize by
    ``crop_pct``, centre crop), both normalised with the model's mean and std."""

    def __init__(self, tower, head, frozen, trainable_blocks, train_transform, eval_transform):
        super().__init__(tower, head, frozen, trainable_blocks)
        self.train_transform = _Unregistered(train_transform)
        self.eval_transform = _Unregistered(eval_transform)

    def preprocess(self, raw, train: bool = False):
        from .decode import read_image

        transform = self.train_transform.value if train else self.eval_transform.value
        return transform(read_image(raw))


class _Unregistered:
    """Holds a value (a torchvision transform, some of which are ``nn.Module``) without registering it as a
    submodule: transforms carry no weights and stay out of the state dict and of ``.to(device)``."""

    def __init__(self, value):
        self.value = value


def image_transforms(tower, size: tuple):
    """``(train, eval)`` torchvision transforms from the model's data config at ``size = (3, H, W)``:
    ``timm.data.resolve_data_config({"input_size": size}, model=tower)`` then ``timm.data.create_transform``."""
    import timm

    config = timm.data.resolve_data_config({"input_size": tuple(size)}, model=tower)
    return (timm.data.create_transform(**config, is_training=True),
            timm.data.create_transform(**config, is_training=False))
