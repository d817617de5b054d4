"""Built-in loss: InfoNCE with a learnable, clamped temperature.

A loss is row-wise: ``rows(query, candidates, targets, candidate_labels, candidate_valid, direction)`` returns the
loss of each query row against the whole candidate pool, ``[n]``; ``direction`` is ``"forward"`` (query -> key) or
``"reverse"`` (key -> query) and ``candidate_labels`` are the pairs' modality ids (``AlignmentTerm.labels``). The runner pairs the two directions of a symmetric term, drops masked rows, gathers the
candidates of every rank and averages; a loss never re-implements any of that.
"""

import functools
import math

import attrs

from ..contracts import Component
from ..hookspecs import hookimpl


MASKED_LOGIT = -1.0e4
"""Logit given to excluded candidates: ``exp`` of it underflows to exactly 0 next to any real logit (|logit| <= the
logit-scale clamp), yet it stays finite, so rows that lose every candidate (padding rows) give no NaN gradients."""


def _excluded(candidate_labels, row_labels, candidate_valid):
    """``[n, N]`` (or broadcastable) bool: which logits to exclude, or None."""
    excluded = None
    if candidate_valid is not None:
        excluded = ~candidate_valid[None, :]
    if candidate_labels is not None:
        other = candidate_labels[None, :] != row_labels[:, None]
        excluded = other if excluded is None else excluded | other
    return excluded


def info_nce_rows(query, candidates, targets, logit_scale, candidate_labels=None, candidate_valid=None,
                  tile_size: int = 0):
    """Per-row InfoNCE: ``log sum_j exp(s q_i.c_j) - s q_i.c_targets_i`` over the allowed candidates ``j``.

    query:            ``[n, d]``
    candidates:       ``[N, d]``
    targets:          ``[n]`` long, column of each row's positive in ``candidates``
    logit_scale:      scalar tensor ``s`` (1 / temperature)
    candidate_labels: optional ``[N]`` long per-candidate modality ids: row ``i`` only competes against candidates
                      whose label equals its positive's label (MAMCL); the ``[n, N]`` mask is built here, never
                      passed in
    candidate_valid:  optional ``[N]`` bool; invalid candidates are never negatives
    tile_size:        0 builds the ``[n, N]`` logits; ``> 0`` computes the same values and gradients in
                      ``tile_size x tile_size`` blocks (memory ``O((n + N) d + tile_size^2)``, see ``tiled.py``)
    Returns ``[n]``, always finite. A row whose own positive is invalid has a meaningless value: drop it.
    """
    import torch

    if tile_size > 0:
        from .tiled import tiled_logsumexp

        positive = logit_scale * (query * candidates[targets]).sum(1)
        return tiled_logsumexp(query, candidates, logit_scale, targets, candidate_labels, candidate_valid,
                               tile_size) - positive

    logits = logit_scale * (query @ candidates.T)
    positive = logits.gather(1, targets[:, None]).squeeze(1)
    row_labels = None if candidate_labels is None else candidate_labels[targets]
    excluded = _excluded(candidate_labels, row_labels, candidate_valid)
    if excluded is not None:
        logits = logits.masked_fill(excluded, MASKED_LOGIT)
    return torch.logsumexp(logits, dim=1) - positive


def info_nce_pair_rows(query, key, logit_scale, labels=None, valid=None, mask_reverse_labels: bool = True):
    """Both directions of a symmetric term in one process, from one ``[B, B]`` matmul.

    Equal to ``info_nce_rows(query, key, arange(B), ...)`` and ``info_nce_rows(key, query, arange(B), ...)``
    (``labels``/``valid`` are per pair, ``[B]``); returns ``(forward [B], reverse [B])``. The runner uses it when a
    loss offers ``pair_rows`` and there is a single process; it halves the matmuls of the two separate calls.
    """
    import torch

    logits = logit_scale * (query @ key.T)
    positive = logits.diagonal()
    forward = logits
    excluded = _excluded(labels, labels, valid)
    if excluded is not None:
        forward = logits.masked_fill(excluded, MASKED_LOGIT)
    reverse = logits.T
    excluded = _excluded(labels if mask_reverse_labels else None, labels, valid)
    if excluded is not None:
        reverse = reverse.masked_fill(excluded, MASKED_LOGIT)
    return torch.logsumexp(forward, dim=1) - positive, torch.logsumexp(reverse, dim=1) - positive


@attrs.frozen
class InfoNCEConfig:
    """``temperature``: initial (or fixed) temperature; ``learnable``: train it; ``max_logit_scale``: clamp on
    ``1 / temperature`` (100 as in CLIP and ImageBind); ``tile_size``: 0 for the plain loss, or the block size
    of the tiled loss that never builds the ``[B, B]`` logits (same values and gradients, for large batches)."""

    temperature: float = attrs.field(default=0.07, validator=attrs.validators.gt(0.0))
    learnable: bool = True
    max_logit_scale: float = attrs.field(default=100.0, validator=attrs.validators.gt(0.0))
    tile_size: int = attrs.field(default=0, validator=attrs.validators.ge(0))


@functools.cache
def _make_infonce_module():
    import torch
    from torch import nn

    class InfoNCE(nn.Module):
        """Symmetric InfoNCE (the runner applies both directions). Owns the log logit scale."""

        def __init__(self, config: InfoNCEConfig):
            super().__init__()
            init = torch.tensor(math.log(1.0 / config.temperature))
            if config.learnable:
                self.log_logit_scale = nn.Parameter(init)
            else:
                self.register_buffer("log_logit_scale", init)
            self.max_log_scale = math.log(config.max_logit_scale)
            self.tile_size = config.tile_size

        @property
        def logit_scale(self):
            return self.log_logit_scale.clamp(max=self.max_log_scale).exp()

        def rows(self, query, candidates, targets, candidate_labels=None, candidate_valid=None, direction="forward"):
            """``[n]`` row losses; every valid candidate is a negative (``candidate_labels`` are ignored)."""
            return info_nce_rows(query, candidates, targets, self.logit_scale, None, candidate_valid, self.tile_size)

        def pair_rows(self, query, key, labels=None, valid=None):
            """Both directions at once (single process): ``(forward [B], reverse [B])``."""
            if self.tile_size:
                targets = torch.arange(len(query), device=query.device)
                return self.rows(query, key, targets, None, valid), self.rows(key, query, targets, None, valid)
            return info_nce_pair_rows(query, key, self.logit_scale, None, valid)

    return InfoNCE


def build_infonce(config: InfoNCEConfig, context):
    return _make_infonce_module()(config)


@hookimpl
def mmcore_losses():
    return [Component("infonce", InfoNCEConfig, build_infonce, "symmetric InfoNCE, learnable clamped temperature")]
