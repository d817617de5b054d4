"""Built-in loss: InfoNCE with a learnable, clamped temperature (optionally one per term, optionally tiled).

A loss is row-wise: ``rows(query, candidates, targets, candidate_labels, candidate_valid, direction)`` returns the
loss of each query row against the whole candidate pool, ``[n]``; ``direction`` is ``"forward"`` (query -> key) or
``"reverse"`` (key -> query) and ``candidate_labels`` are the pairs' modality ids (``AlignmentTerm.labels``). The
runner pairs the two directions of a symmetric term, drops masked rows, gathers the candidates of every rank and
averages; a loss never re-implements any of that. A loss whose ``rows`` takes ``term=`` gets the term's name.
"""

import functools
import math

import attrs

from ..contracts import Component
from ..hookspecs import hookimpl


MASKED_LOGIT = -1.0e4
"""Logit given to excluded candidates: ``exp`` of it underflows to exactly 0 next to any real logit (|logit| <= the
logit-scale clamp), yet it stays finite, so rows that lose every candidate (padding rows) give no NaN gradients."""


def _column_bias(candidate_valid):
    """``[N]`` additive logit bias: 0 for valid candidates, MASKED_LOGIT for invalid ones (None: all valid).
    Adding a vector costs one pass and its backward is free, unlike filling an ``[n, N]`` mask."""
    if candidate_valid is None:
        return None
    import torch

    return (~candidate_valid).to(torch.float32) * MASKED_LOGIT


def _restrict(logits, row_labels, candidate_labels, bias, bias_dim: int):
    """Exclude invalid candidates (additive bias along ``bias_dim``) and other-modality candidates (labels)."""
    if bias is not None:
        logits = logits + (bias[None, :] if bias_dim == 1 else bias[:, None])
    if candidate_labels is not None:
        logits = logits.masked_fill(candidate_labels[None, :] != row_labels[:, None], MASKED_LOGIT)
    return logits


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

    row_labels = None if candidate_labels is None else candidate_labels[targets]
    logits = _restrict(logit_scale * (query @ candidates.T), row_labels, candidate_labels,
                       _column_bias(candidate_valid), 1)
    return -torch.log_softmax(logits, dim=1).gather(1, targets[:, None]).squeeze(1)


def info_nce_pair_rows(query, key, logit_scale, labels=None, valid=None, mask_reverse_labels: bool = True,
                       tile_size: int = 0):
    """Both directions of a symmetric term in one process, from one ``[B, B]`` matmul.

    Equal to ``info_nce_rows(query, key, arange(B), ...)`` and ``info_nce_rows(key, query, arange(B), ...)``
    (``labels``/``valid`` are per pair, ``[B]``); returns ``(forward [B], reverse [B])``. The runner uses it when a
    loss offers ``pair_rows`` and there is a single process. The reverse direction is a softmax over the columns
    of the same product (CPU), of its transposed copy (CUDA, fp32), or of a second product (CUDA, bf16/fp16).
    ``tile_size > 0``: the same values and gradients from one tiled sweep, never building the matrix.
    """
    import torch

    if tile_size > 0:
        from .tiled import tiled_pair_logsumexp

        if labels is not None and not mask_reverse_labels:
            targets = torch.arange(len(query), device=query.device)
            return (info_nce_rows(query, key, targets, logit_scale, labels, valid, tile_size),
                    info_nce_rows(key, query, targets, logit_scale, None, valid, tile_size))
        positive = logit_scale * (query * key).sum(1)
        row_lse, col_lse = tiled_pair_logsumexp(query, key, logit_scale, labels, valid, tile_size)
        return row_lse - positive, col_lse - positive

    bias = _column_bias(valid)
    reverse_labels = labels if mask_reverse_labels else None
    if query.is_cuda and _half_products(query):
        return _pair_rows_by_two_products(query, key, logit_scale, bias, labels, reverse_labels)
    return _pair_rows_by_one_product(query, key, logit_scale, bias, labels, reverse_labels, query.is_cuda)


def _pair_rows_by_one_product(query, key, logit_scale, bias, labels, reverse_labels, transpose: bool):
    """``info_nce_pair_rows`` from one ``[B, B]`` product. The reverse direction is a softmax over its columns: as
    is on the CPU, where that is cheapest; over a transposed copy (``transpose``) on CUDA, where a dim-0 softmax
    is a slow strided kernel (H100 figures in benchmarks/RESULTS.md)."""
    import torch

    logits = (query * logit_scale) @ key.T  # the scale applied to [B, d], not to [B, B] (nor its backward)
    forward = _restrict(logits, labels, labels, bias, 1)
    reverse = _restrict(logits, labels, reverse_labels, bias, 0)
    if transpose:
        reverse = torch.log_softmax(reverse.T.contiguous(), dim=1)
    else:
        reverse = torch.log_softmax(reverse, dim=0).T
    return -torch.log_softmax(forward, dim=1).diagonal(), -reverse.diagonal()


def _half_products(tensor) -> bool:
    """Whether matrix products of ``tensor`` run in bf16/fp16 (its dtype, or CUDA autocast)."""
    import torch

    return tensor.dtype in (torch.bfloat16, torch.float16) or torch.is_autocast_enabled("cuda")


def _pair_rows_by_two_products(query, key, logit_scale, bias, labels, reverse_labels):
    """``info_nce_pair_rows`` for bf16/fp16 products on CUDA: their GEMMs are cheap next to a ``[B, B]`` pass, so a
    second product (``key @ query.T``, its column bias fused into the GEMM) gives the reverse direction as row
    softmaxes, with no transposed copy and no separate bias pass (the fastest of four forms timed on an H100)."""
    import torch

    forward = _biased_product(query * logit_scale, key, bias, labels)
    reverse = _biased_product(key * logit_scale, query, bias, reverse_labels)
    return -torch.log_softmax(forward, dim=1).diagonal(), -torch.log_softmax(reverse, dim=1).diagonal()


def _biased_product(scaled_query, candidates, bias, labels):
    """``[n, N]`` logits ``scaled_query @ candidates.T`` with the ``[N]`` column bias added inside the GEMM."""
    import torch

    if bias is None:
        logits = scaled_query @ candidates.T
    else:
        logits = torch.addmm(bias.to(scaled_query.dtype), scaled_query, candidates.T)
    return logits if labels is None else logits.masked_fill(labels[None, :] != labels[:, None], MASKED_LOGIT)


@attrs.frozen
class TermTemperature:
    """``[loss.per_term]`` entry: one term's own temperature, fixed unless ``learnable``."""

    temperature: float = attrs.field(validator=attrs.validators.gt(0.0))
    learnable: bool = False


@attrs.frozen
class InfoNCEConfig:
    """``temperature``: initial (or fixed) temperature; ``learnable``: train it; ``max_logit_scale``: clamp on
    ``1 / temperature`` (100 as in CLIP and ImageBind); ``tile_size``: 0 for the plain loss, or the block size
    of the tiled loss that never builds the ``[B, B]`` logits (same values and gradients, for large batches);
    ``per_term``: temperatures of their own for some terms, by term name, e.g. ImageBind's fixed per-modality
    ones: ``audio-image = { temperature = 0.05 }``. Other terms share ``temperature``. The names are checked
    against the anchor strategy's terms before training."""

    temperature: float = attrs.field(default=0.07, validator=attrs.validators.gt(0.0))
    learnable: bool = True
    max_logit_scale: float = attrs.field(default=100.0, validator=attrs.validators.gt(0.0))
    tile_size: int = attrs.field(default=0, validator=attrs.validators.ge(0))
    per_term: dict[str, TermTemperature] = attrs.field(factory=dict)


def add_logit_scale(module, temperature: float, learnable: bool, max_logit_scale: float) -> None:
    """Give a loss module its temperature: ``module.log_logit_scale`` (an ``nn.Parameter`` when ``learnable``, else
    a buffer; checkpointed either way) starting at ``log(1 / temperature)``, and ``module.max_log_scale``, the clamp
    that :func:`clamped_logit_scale` applies."""
    import torch
    from torch import nn

    init = torch.tensor(math.log(1.0 / temperature))
    if learnable:
        module.log_logit_scale = nn.Parameter(init)
    else:
        module.register_buffer("log_logit_scale", init)
    module.max_log_scale = math.log(max_logit_scale)


def clamped_logit_scale(module):
    """Scalar tensor ``s = 1 / temperature`` of a module set up by :func:`add_logit_scale`, clamped at
    ``max_logit_scale`` (CLIP's clamp; the gradient stops at the clamp)."""
    return module.log_logit_scale.clamp(max=module.max_log_scale).exp()


@functools.cache
def _make_infonce_module():
    import torch
    from torch import nn

    class Temperature(nn.Module):
        """One learnable or fixed temperature (``log_logit_scale``), as set up by :func:`add_logit_scale`."""

        def __init__(self, temperature: float, learnable: bool, max_logit_scale: float):
            super().__init__()
            add_logit_scale(self, temperature, learnable, max_logit_scale)

        @property
        def logit_scale(self):
            return clamped_logit_scale(self)

    class InfoNCE(nn.Module):
        """Symmetric InfoNCE (the runner applies both directions). Owns the log logit scale, and one per term in
        ``per_term`` (a ``ModuleDict`` keyed by term name: the runner checks the names and logs each one)."""

        def __init__(self, config: InfoNCEConfig):
            super().__init__()
            add_logit_scale(self, config.temperature, config.learnable, config.max_logit_scale)
            self.tile_size = config.tile_size
            self.per_term = nn.ModuleDict({
                name: Temperature(t.temperature, t.learnable, config.max_logit_scale)
                for name, t in config.per_term.items()
            })

        @property
        def logit_scale(self):
            return clamped_logit_scale(self)

        def scale_of(self, term: str | None):
            """Scalar logit scale of term ``term``: its own if ``per_term`` has one, else the shared one."""
            return self.per_term[term].logit_scale if term in self.per_term else self.logit_scale

        def rows(self, query, candidates, targets, candidate_labels=None, candidate_valid=None, direction="forward",
                 term=None):
            """``[n]`` row losses; every valid candidate is a negative (``candidate_labels`` are ignored)."""
            return info_nce_rows(query, candidates, targets, self.scale_of(term), None, candidate_valid,
                                 self.tile_size)

        def pair_rows(self, query, key, labels=None, valid=None, term=None):
            """Both directions at once (single process): ``(forward [B], reverse [B])``."""
            return info_nce_pair_rows(query, key, self.scale_of(term), None, valid, tile_size=self.tile_size)

    return InfoNCE


def build_infonce(config: InfoNCEConfig, context):
    return _make_infonce_module()(config)


@hookimpl
def mmcore_losses():
    return [Component("infonce", InfoNCEConfig, build_infonce, "symmetric InfoNCE, learnable clamped temperature")]
