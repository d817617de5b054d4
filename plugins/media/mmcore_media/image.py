"""Encoder ``timm_image``: any timm image model by name, then a projection head into the shared space.

    [encoders.image]
    name = "timm_image"
    model = "vit_tiny_patch16_224"      # any timm.list_models() name, optionally with a tag ("arch.tag")
    pretrained = "hub"                  # "" random | "hub" timm's own weights | a checkpoint file path
    img_size = 0                        # 0: the model's own input size; else a square size (e.g. 64)
    hidden = []                         # hidden widths of the head ([]: one Linear)
    tower = "frozen"                    # "train" | "frozen" | "lora"
    unfreeze_last = 1                   # with tower = "frozen": the last N blocks train
    # [encoders.image.lora] r = 8, alpha = 16, target_modules = ["qkv"]   (with tower = "lora")

How each setting maps onto timm:

- tower: ``timm.create_model(model, pretrained=..., num_classes=0[, img_size=img_size])`` (pooled features
  ``[b, width]``); ``img_size`` reaches only models that take it (ViT-like); ``pretrained`` = a file goes through
  ``pretrained_cfg_overlay=dict(file=path)`` (timm's documented way: the model's checkpoint filter resizes
  position embeddings to ``img_size``); a file that lacks tower weights is a ConfigError, not a silent partial
  load. With ``context.pretrained`` False (a run being loaded) only the architecture is built.
- transforms: ``timm.data.resolve_data_config({"input_size": (3, H, W)}, model=tower)`` then
  ``timm.data.create_transform(**config, is_training=train)``: the model's own mean/std, interpolation and
  ``crop_pct``. ``preprocess(raw, train)`` takes a PIL image, a uint8 array or a file path and returns
  ``[3, H, W]`` float32; it runs in the DataLoader workers.
- blocks (``unfreeze_last``): the children of the tower's ``blocks`` / ``stages`` / ``layers`` (ViT: each
  transformer block; EfficientNet, ConvNeXt: each stage), else ``layer1..layerN`` (ResNet: each stage). Exactly
  those blocks train; the stem, the final norm and the pooling stay frozen. A frozen tower stays in eval mode
  (fixed batch-norm statistics, no dropout) while the encoder trains, except the unfrozen blocks.
- LoRA: peft on the timm module; ``lora.target_modules`` is required (``["qkv"]`` for a ViT).
"""

from __future__ import annotations

import attrs

import mmcore

from .tuning import LoraSettings, TowerMode, check_tuning


@attrs.frozen
class TimmImageConfig:
    """``model``: a timm model name; ``pretrained``: ``""``, ``"hub"`` or a checkpoint file; ``img_size``: square
    input size (0: the model's own); ``hidden``: the head's hidden widths; ``tower``, ``unfreeze_last``,
    ``lora``: what of the tower trains (see :mod:`mmcore_media.tuning`)."""

    model: str = "resnet18"
    pretrained: str = ""
    img_size: int = 0
    hidden: list[int] = attrs.field(factory=list)
    tower: TowerMode = "train"
    unfreeze_last: int = 0
    lora: LoraSettings = LoraSettings()


def import_timm():
    """The timm module, or a ConfigError naming the pip command."""
    try:
        import timm
    except ImportError as exc:
        raise mmcore.ConfigError("name", f"timm_image needs timm: pip install \"mmcore-media[image]\" ({exc})") \
            from None
    return timm


def build_timm_image(config: TimmImageConfig, context: mmcore.EncoderContext):
    check_tuning(config.tower, config.unfreeze_last, config.lora)
    import_timm()
    from . import _image_model as towers

    tower = towers.create_tower(config.model, config.pretrained, context.pretrained, config.img_size)
    size = towers.input_size(tower, config.img_size)
    width = towers.feature_width(tower, size)
    train_transform, eval_transform = towers.image_transforms(tower, size)
    tuned, trainable = towers.tune(tower, config.tower, config.unfreeze_last, config.lora, context.modality)
    head = towers.projection_head(width, list(config.hidden), context.embed_dim)
    return towers.TimmImageEncoder(tuned, head, config.tower == "frozen", trainable, train_transform,
                                   eval_transform)


COMPONENTS = [
    mmcore.Component("timm_image", TimmImageConfig, build_timm_image,
                     "any timm image model (hub weights or a local checkpoint) + projection head; timm's own "
                     "train/eval transforms"),
]
