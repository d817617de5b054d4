"""How much of a pretrained tower trains: all of it, none of it, its last blocks, or LoRA adapters (peft).

Every encoder of this plugin is ``head(tower(x))``: the projection ``head`` into the shared space always trains
(the core's ``frozen = true`` on the encoder section freezes the head too, for a fixed pretrained anchor). The
tower follows ``tower``:

- ``"train"``: every tower weight trains (the core's per-encoder ``lr`` lets it train slower than the head);
- ``"frozen"``: no tower weight trains, except the last ``unfreeze_last`` blocks;
- ``"lora"``: the tower's weights stay fixed and peft's LoRA adapters (``[...lora]``: ``r``, ``alpha``,
  ``dropout``, ``target_modules``) train beside them. The adapters are ordinary submodules, so they are
  checkpointed, resumed and loaded with the run (the tower is rebuilt and wrapped the same way first).

Biases, norms and temperatures get no weight decay: the core's optimizer excludes every parameter with fewer
than 2 dimensions.
"""

from __future__ import annotations

from typing import Literal

import attrs

import mmcore

PEFT_INSTALL = 'pip install "mmcore-media[lora]"'


@attrs.frozen
class LoraSettings:
    """``[encoders.<m>.lora]``: LoRA rank ``r``, scale ``alpha`` (the update is ``alpha / r * B @ A``), dropout
    on the adapter input, and the names (or name suffixes) of the tower's ``Linear``/``Conv`` modules to adapt;
    empty ``target_modules`` uses peft's default for known transformers architectures (timm towers must name
    them, e.g. ``["qkv", "proj"]``)."""

    r: int = 8
    alpha: int = 16
    dropout: float = 0.0
    target_modules: list[str] = attrs.field(factory=list)


TowerMode = Literal["train", "frozen", "lora"]


def check_tuning(tower: str, unfreeze_last: int, lora: LoraSettings) -> None:
    """ConfigError for settings that contradict each other (called at build, so ``validate`` reports them)."""
    if unfreeze_last < 0:
        raise mmcore.ConfigError("unfreeze_last", f"must be >= 0, got {unfreeze_last}")
    if unfreeze_last and tower != "frozen":
        raise mmcore.ConfigError("unfreeze_last", f"unfreezes the last blocks of a frozen tower; set "
                                                  f"tower = \"frozen\" with it (tower is {tower!r})")
    if tower == "lora" and lora.r <= 0:
        raise mmcore.ConfigError("lora.r", f"must be > 0, got {lora.r}")


def tune_tower(tower_module, mode: str, unfreeze_last: int = 0, lora: LoraSettings = LoraSettings(),
               blocks=None, modality: str = ""):
    """Apply ``mode`` to ``tower_module`` (an ``nn.Module``); returns the module to use (peft wraps it for LoRA).

    blocks: the tower's blocks in order (an ``nn.ModuleList`` or list), needed for ``unfreeze_last``.
    """
    if mode == "train":
        return tower_module
    if mode == "frozen":
        tower_module.requires_grad_(False)
        if unfreeze_last:
            blocks = list(blocks or [])
            if unfreeze_last > len(blocks):
                raise mmcore.ConfigError("unfreeze_last", f"the {modality or 'encoder'} tower has {len(blocks)} "
                                                          f"blocks; cannot unfreeze the last {unfreeze_last}")
            for block in blocks[len(blocks) - unfreeze_last:]:
                block.requires_grad_(True)
        return tower_module
    if mode == "lora":
        try:
            from peft import LoraConfig, get_peft_model
        except ImportError as exc:
            raise mmcore.ConfigError("tower", f"tower = \"lora\" needs peft: {PEFT_INSTALL}") from exc
        config = LoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
                            target_modules=list(lora.target_modules) or None)
        try:
            return get_peft_model(tower_module, config)
        except ValueError as exc:  # peft: target modules not found / unknown architecture
            raise mmcore.ConfigError("lora.target_modules", f"peft cannot adapt this tower: {exc}") from None
    raise mmcore.ConfigError("tower", f"expected \"train\", \"frozen\" or \"lora\", got {mode!r}")


def count_trainable(module) -> tuple:
    """``(trainable, total)`` parameter counts of a module."""
    total = sum(p.numel() for p in module.parameters())
    return sum(p.numel() for p in module.parameters() if p.requires_grad), total
