"""InfoNCE rows, plain and tiled, and the learnable clamped temperature every contrastive loss can share.

``info_nce_rows`` scores query rows against a candidate pool (``[n, d]`` against ``[N, d]`` -> ``[n]``);
``info_nce_pair_rows`` gives both directions of a symmetric term from one product. Excluded candidates (invalid
rows, other-modality candidates under MAMCL's labels) get the finite logit :data:`MASKED_LOGIT`. ``tile_size > 0``
computes the same values and gradients in blocks (:mod:`mmcore.contrastive.tiled`), never building ``[n, N]``.
"""

import math


from . import MASKED_LOGIT


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
                  tile_size: int = 0, kernel: str = "torch"):
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
    kernel:           ``"torch"`` or ``"triton"``: who computes the tiles (:mod:`mmcore.contrastive.kernels`)
    Returns ``[n]``, always finite. A row whose own positive is invalid has a meaningless value: drop it.
    """
    import torch

    if tile_size > 0:
        from .tiled import tiled_logsumexp

        positive = logit_scale * (query * candidates[targets]).sum(1)
        return tiled_logsumexp(query, candidates, logit_scale, targets, candidate_labels, candidate_valid,
                               tile_size, kernel) - positive

    row_labels = None if candidate_labels is None else candidate_labels[targets]
    logits = _restrict(logit_scale * (query @ candidates.T), row_labels, candidate_labels,
                       _column_bias(candidate_valid), 1)
    return -torch.log_softmax(logits, dim=1).gather(1, targets[:, None]).squeeze(1)


def info_nce_pair_rows(query, key, logit_scale, labels=None, valid=None, mask_reverse_labels: bool = True,
                       tile_size: int = 0, kernel: str = "torch"):
    """Both directions of a symmetric term in one process, from one ``[B, B]`` matmul.

    Equal to ``info_nce_rows(query, key, arange(B), ...)`` and ``info_nce_rows(key, query, arange(B), ...)``
    (``labels``/``valid`` are per pair, ``[B]``); returns ``(forward [B], reverse [B])``. The runner uses it when a
    loss offers ``pair_rows`` and there is a single process. The reverse direction is a softmax over the columns
    of the same product (CPU), of its transposed copy (CUDA, fp32), or of a second product (CUDA, bf16/fp16).
    ``tile_size > 0``: the same values and gradients from one tiled sweep, never building the matrix (``kernel``:
    the PyTorch tiles or the fused Triton kernels, as :func:`info_nce_rows`).
    """
    import torch

    if tile_size > 0:
        from .tiled import tiled_pair_logsumexp

        if labels is not None and not mask_reverse_labels:
            targets = torch.arange(len(query), device=query.device)
            return (info_nce_rows(query, key, targets, logit_scale, labels, valid, tile_size, kernel),
                    info_nce_rows(key, query, targets, logit_scale, None, valid, tile_size, kernel))
        positive = logit_scale * (query * key).sum(1)
        row_lse, col_lse = tiled_pair_logsumexp(query, key, logit_scale, labels, valid, tile_size, kernel)
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
