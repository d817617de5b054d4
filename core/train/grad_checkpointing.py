"""Activation checkpointing per encoder (``[encoders.<m>] grad_checkpointing = true``): keep fewer activations in the
forward and recompute them in the backward, trading about one more forward for memory.

The towers' own switches come first, since they checkpoint block by block: timm's and open_clip's
``set_grad_checkpointing(True)``, transformers' ``activation_checkpointing_enable()`` (``gradient_checkpointing_enable()``
in older releases). An encoder without either (an MLP head, a plugin's own module) is wrapped whole in
``torch.utils.checkpoint`` (non-reentrant: it replays the RNG, so dropout masks match, and works with frozen inputs
and DDP). Parameters and ``state_dict`` keys are unchanged, so checkpoints load with the switch on or off.
"""

from __future__ import annotations

import functools

import torch
from torch import nn


def _checkpointed(forward, inputs):
    if not torch.is_grad_enabled():
        return forward(inputs)
    return torch.utils.checkpoint.checkpoint(forward, inputs, use_reentrant=False)


def _switch_towers(module: nn.Module) -> list:
    """Turn on the towers' own checkpointing in the outermost submodules that have it; their names."""
    if callable(getattr(module, "set_grad_checkpointing", None)):
        module.set_grad_checkpointing(True)
        return [f"{type(module).__name__}.set_grad_checkpointing"]
    if getattr(module, "supports_gradient_checkpointing", True):
        # transformers >= 5.2x renames gradient_checkpointing_enable (deprecated, removed in v6)
        for switch, keyword in (("activation_checkpointing_enable", "activation_checkpointing_kwargs"),
                                ("gradient_checkpointing_enable", "gradient_checkpointing_kwargs")):
            if callable(getattr(module, switch, None)):
                getattr(module, switch)(**{keyword: {"use_reentrant": False}})
                return [f"{type(module).__name__}.{switch}"]
    return [name for child in module.children() for name in _switch_towers(child)]


def enable(encoder: nn.Module) -> list:
    """Turn on activation checkpointing in ``encoder``; returns how (the towers' switches, or
    ``["torch.utils.checkpoint"]`` when the whole forward is wrapped)."""
    switched = _switch_towers(encoder)
    if switched:
        return switched
    encoder.forward = functools.partial(_checkpointed, encoder.forward)
    return ["torch.utils.checkpoint"]
