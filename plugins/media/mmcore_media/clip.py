"""Encoders ``open_clip_image`` and ``open_clip_text``: one tower of an open_clip model each, by default a
frozen pretrained anchor whose output is CLIP's own embedding (ImageBind's setup: bind new modalities into
CLIP's space).

    embed_dim = 512                     # ViT-B-32's CLIP width, for head = "none"

    [encoders.image]
    name = "open_clip_image"
    model = "ViT-B-32"                  # open_clip.list_models(), or "hf-hub:org/repo", "local-dir:/path"
    pretrained = "laion2b_s34b_b79k"    # a tag of open_clip.list_pretrained_tags_by_model(model) | a file | ""
    head = "none"                       # "none": CLIP's own embedding | "linear": a projection head (hidden = [...])
    tower = "frozen"                    # the default here; "train" | "lora" (lora.target_modules required)

    [encoders.text]
    name = "open_clip_text"
    model = "ViT-B-32"
    pretrained = "laion2b_s34b_b79k"

How each setting maps onto open_clip:

- ``open_clip.create_model_and_transforms(model, pretrained=tag | file | None, force_image_size=image_size)``;
  a file is a whole open_clip checkpoint (both towers, as open_clip's training writes it; loaded strictly),
  and each encoder keeps its own tower: ``clip.visual`` for images, the text transformer (``encode_text``,
  ``clip.text`` for custom text towers) for text. With ``context.pretrained`` False (a run being loaded) only the
  architecture is built (``load_weights=False``).
- images: ``preprocess(raw, train)`` applies the returned train transform (``RandomResizedCrop`` scale 0.9-1)
  or eval transform (resize, centre crop), with the model's mean/std: ``[3, H, W]`` float32.
- text: ``open_clip.get_tokenizer(model)``: ``preprocess(text) -> [context_length]`` int64 token ids. The
  bundled CLIP models use open_clip's ``SimpleTokenizer``, whose BPE vocabulary ships inside the package (no
  download); models with a Hugging Face tokenizer (``text_cfg.hf_tokenizer_name``) fetch it from the hub cache.
- head: ``"none"`` is ``nn.Identity`` (ConfigError unless CLIP's width equals ``embed_dim``); ``"linear"`` is
  the plugin's projection head (``hidden`` widths).
- blocks (``unfreeze_last``): the tower transformer's residual blocks (``transformer.resblocks``); exactly those
  train, the final ``ln_post``/``ln_final`` and projections stay frozen. LoRA: peft, ``lora.target_modules``
  required, e.g. ``["c_fc", "c_proj"]`` (the blocks' MLP ``Linear`` layers) or ``["out_proj"]``.

``tower`` defaults to ``"frozen"`` here (the other encoders default to ``"train"``): an open_clip tower is
nearly always used as a fixed pretrained anchor.
"""

from __future__ import annotations

from typing import Literal

import attrs

import mmcore

from .tuning import LoraSettings, TowerMode, check_tuning

CLIP_LORA_HINT = "e.g. [\"c_fc\", \"c_proj\"] (the residual blocks' MLP layers) or [\"out_proj\"]"


@attrs.frozen
class OpenClipImageConfig:
    """``model``/``pretrained``: the open_clip model and its weights (a tag, a checkpoint file or ``""``);
    ``image_size``: a square input size (0: the model's own; open_clip resizes position embeddings on load);
    ``head``: ``"none"`` (CLIP's own embedding) or ``"linear"`` (with ``hidden`` widths); ``tower``,
    ``unfreeze_last``, ``lora``: see :mod:`mmcore_media.tuning`."""

    model: str = "ViT-B-32"
    pretrained: str = ""
    image_size: int = 0
    head: Literal["none", "linear"] = "none"
    hidden: list[int] = attrs.field(factory=list)
    tower: TowerMode = "frozen"
    unfreeze_last: int = 0
    lora: LoraSettings = LoraSettings()


@attrs.frozen
class OpenClipTextConfig:
    """As :class:`OpenClipImageConfig`, for the text tower (no image size)."""

    model: str = "ViT-B-32"
    pretrained: str = ""
    head: Literal["none", "linear"] = "none"
    hidden: list[int] = attrs.field(factory=list)
    tower: TowerMode = "frozen"
    unfreeze_last: int = 0
    lora: LoraSettings = LoraSettings()


def _import_open_clip(encoder: str):
    try:
        import open_clip  # noqa: F401
    except ImportError as exc:
        raise mmcore.ConfigError("name", f"{encoder} needs open_clip: pip install \"mmcore-media[clip]\" ({exc})") \
            from None


def _tuned(tower, config, context):
    from . import _image_model
    from ._clip_model import clip_blocks

    return _image_model.tune(tower, config.tower, config.unfreeze_last, config.lora, context.modality,
                             blocks=clip_blocks(tower), lora_hint=CLIP_LORA_HINT)


def build_open_clip_image(config: OpenClipImageConfig, context: mmcore.EncoderContext):
    check_tuning(config.tower, config.unfreeze_last, config.lora)
    _import_open_clip("open_clip_image")
    import torch

    from . import _clip_model as clip

    model, train_transform, eval_transform = clip.create_clip(config.model, config.pretrained, context.pretrained,
                                                              config.image_size)
    tower = model.visual
    size = eval_transform(_blank_image()).shape
    width = clip.output_width(tower, torch.zeros(1, *size))
    head = clip.clip_head(width, config.head, config.hidden, context.embed_dim, config.model)
    tuned, trainable = _tuned(tower, config, context)
    return clip.ClipImageEncoder(tuned, head, config.tower == "frozen", trainable, train_transform, eval_transform)


def build_open_clip_text(config: OpenClipTextConfig, context: mmcore.EncoderContext):
    check_tuning(config.tower, config.unfreeze_last, config.lora)
    _import_open_clip("open_clip_text")
    import open_clip

    from . import _clip_model as clip

    model, _, _ = clip.create_clip(config.model, config.pretrained, context.pretrained)
    try:
        tokenizer = open_clip.get_tokenizer(config.model)
    except (OSError, ValueError, RuntimeError) as exc:
        raise mmcore.ConfigError("model", f"open_clip cannot load the tokenizer of {config.model!r}: {exc}") \
            from None
    tower = clip.text_tower(model)
    width = clip.output_width(tower, tokenizer(["a"]))
    head = clip.clip_head(width, config.head, config.hidden, context.embed_dim, config.model)
    tuned, trainable = _tuned(tower, config, context)
    return clip.ClipTextEncoder(tuned, head, config.tower == "frozen", trainable, tokenizer)


def _blank_image():
    from PIL import Image

    return Image.new("RGB", (64, 64))


COMPONENTS = [
    mmcore.Component("open_clip_image", OpenClipImageConfig, build_open_clip_image,
                     "open_clip image tower (frozen by default; CLIP's own embedding or a projection head)"),
    mmcore.Component("open_clip_text", OpenClipTextConfig, build_open_clip_text,
                     "open_clip text tower + tokenizer (frozen by default; CLIP's own embedding or a head)"),
]
