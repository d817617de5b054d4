"""Tiled log-sum-exp for contrastive losses: never materialises the ``[n, N]`` logits (Inf-CL's idea).

``tiled_logsumexp(q, c, s, ...)`` returns ``lse_i = log sum_j allowed_ij exp(s * q_i . c_j)`` for every row,
visiting the similarity matrix in ``tile x tile`` blocks and merging each block's log-sum-exp into a running one.
``tiled_pair_logsumexp(q, k, s, ...)`` does the same for both directions of a symmetric term (rows and columns of
one ``[B, B]`` matrix) in a single sweep. The backward recomputes each block once and accumulates ``dq``, ``dc`` and
``ds``, so peak memory is ``O((n + N) d + tile^2)`` instead of ``O(n N)``. Masks are rebuilt per block from
per-candidate ids, never passed as a matrix.

Matrix products run in the inputs' dtype (bf16 stays bf16, as autograd would do for the plain loss); logits,
log-sum-exps and the gradient accumulators are fp32.
"""

from __future__ import annotations

import torch

from . import MASKED_LOGIT
from .kernels import use_fused


def _blocks(n: int, tile: int):
    return [slice(start, min(start + tile, n)) for start in range(0, n, tile)]


def _exclusion(rows: slice, cols: slice, row_labels, col_labels, col_valid):
    """``[tile_n, tile_N]`` bool of excluded entries in one block, or None when nothing is excluded."""
    excluded = None
    if col_valid is not None:
        excluded = ~col_valid[cols][None, :]
    if col_labels is not None:
        other = col_labels[cols][None, :] != row_labels[rows][:, None]
        excluded = other if excluded is None else excluded | other
    return excluded


def _pair_exclusions(rows: slice, cols: slice, labels, valid):
    """Excluded entries of block ``(rows, cols)`` of a paired ``[B, B]`` matrix, both ``[tile_n, tile_N]``: for the
    row softmaxes (invalid columns) and for the column softmaxes (invalid rows); labels mask both ways."""
    col_excluded = _exclusion(cols, rows, labels, labels, valid)  # [cols, rows]
    return _exclusion(rows, cols, labels, labels, valid), None if col_excluded is None else col_excluded.T


def _masked(logits, excluded):
    return logits if excluded is None else logits.masked_fill(excluded, MASKED_LOGIT)


def _softmax_weights(logits, lse, grad, dim: int, excluded):
    """``p * g`` of one block along ``dim`` (1: rows, 0: columns); excluded entries are constants: weight 0."""
    if dim == 1:
        weights = torch.exp(logits - lse[:, None]) * grad[:, None]
    else:
        weights = torch.exp(logits - lse[None, :]) * grad[None, :]
    return weights if excluded is None else weights.masked_fill(excluded, 0.0)


class _TiledLogSumExp(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, c, scale, targets, labels, valid, tile):
        row_labels = labels[targets] if labels is not None else None
        lse = torch.full((q.shape[0],), float("-inf"), dtype=torch.float32, device=q.device)
        for rows in _blocks(q.shape[0], tile):
            for cols in _blocks(c.shape[0], tile):
                logits = (q[rows] @ c[cols].T).float() * scale
                logits = _masked(logits, _exclusion(rows, cols, row_labels, labels, valid))
                lse[rows] = torch.logaddexp(lse[rows], torch.logsumexp(logits, dim=1))
        ctx.save_for_backward(q, c, scale, targets, lse, labels, valid)
        ctx.tile = tile
        return lse

    @staticmethod
    def backward(ctx, grad_lse):
        q, c, scale, targets, lse, labels, valid = ctx.saved_tensors
        row_labels = labels[targets] if labels is not None else None
        dq = torch.zeros(q.shape, dtype=torch.float32, device=q.device)
        dc = torch.zeros(c.shape, dtype=torch.float32, device=c.device)
        dscale = torch.zeros((), dtype=torch.float32, device=q.device)
        for rows in _blocks(q.shape[0], ctx.tile):
            for cols in _blocks(c.shape[0], ctx.tile):
                raw = (q[rows] @ c[cols].T).float()
                excluded = _exclusion(rows, cols, row_labels, labels, valid)
                weights = _softmax_weights(_masked(raw * scale, excluded), lse[rows], grad_lse[rows], 1, excluded)
                dscale += (weights * raw).sum()
                weights = weights.to(q.dtype)
                dq[rows] += scale * (weights @ c[cols]).float()
                dc[cols] += scale * (weights.T @ q[rows]).float()
        return dq.to(q.dtype), dc.to(c.dtype), dscale.to(scale.dtype), None, None, None, None


class _TiledPairLogSumExp(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, scale, labels, valid, tile):
        n = q.shape[0]
        row_lse = torch.full((n,), float("-inf"), dtype=torch.float32, device=q.device)
        col_lse = torch.full((n,), float("-inf"), dtype=torch.float32, device=q.device)
        for rows in _blocks(n, tile):
            for cols in _blocks(n, tile):
                logits = (q[rows] @ k[cols].T).float() * scale
                row_excluded, col_excluded = _pair_exclusions(rows, cols, labels, valid)
                row_lse[rows] = torch.logaddexp(row_lse[rows], torch.logsumexp(_masked(logits, row_excluded), 1))
                col_lse[cols] = torch.logaddexp(col_lse[cols], torch.logsumexp(_masked(logits, col_excluded), 0))
        ctx.save_for_backward(q, k, scale, row_lse, col_lse, labels, valid)
        ctx.tile = tile
        return row_lse, col_lse

    @staticmethod
    def backward(ctx, grad_rows, grad_cols):
        q, k, scale, row_lse, col_lse, labels, valid = ctx.saved_tensors
        n = q.shape[0]
        dq = torch.zeros(q.shape, dtype=torch.float32, device=q.device)
        dk = torch.zeros(k.shape, dtype=torch.float32, device=k.device)
        dscale = torch.zeros((), dtype=torch.float32, device=q.device)
        for rows in _blocks(n, ctx.tile):
            for cols in _blocks(n, ctx.tile):
                raw = (q[rows] @ k[cols].T).float()
                logits = raw * scale
                row_excluded, col_excluded = _pair_exclusions(rows, cols, labels, valid)
                weights = _softmax_weights(_masked(logits, row_excluded), row_lse[rows], grad_rows[rows], 1,
                                           row_excluded)
                weights += _softmax_weights(_masked(logits, col_excluded), col_lse[cols], grad_cols[cols], 0,
                                            col_excluded)
                dscale += (weights * raw).sum()
                weights = weights.to(q.dtype)
                dq[rows] += scale * (weights @ k[cols]).float()
                dk[cols] += scale * (weights.T @ q[rows]).float()
        return dq.to(q.dtype), dk.to(k.dtype), dscale.to(scale.dtype), None, None, None


def tiled_logsumexp(q, c, scale, targets, labels=None, valid=None, tile: int = 4096, kernel: str = "torch"):
    """``[n]`` masked log-sum-exp of ``scale * q @ c.T`` over columns, computed in ``tile x tile`` blocks.

    q: ``[n, d]``, c: ``[N, d]``, scale: scalar tensor, targets: ``[n]`` column of each row's positive,
    labels: optional ``[N]`` ids (row ``i`` sees only columns with ``labels == labels[targets[i]]``),
    valid: optional ``[N]`` bool. Excluded candidates get a finite ``MASKED_LOGIT``, exactly as the plain loss.
    ``kernel = "triton"``: the fused kernels where they apply (:mod:`mmcore.contrastive.kernels`; ``tile`` is then
    theirs to choose).
    """
    if use_fused(kernel, q):
        from .fused import fused_logsumexp

        return fused_logsumexp(q, c, scale, targets, labels, valid)
    scale = torch.as_tensor(scale, dtype=torch.float32, device=q.device)
    return _TiledLogSumExp.apply(q, c, scale, targets, labels, valid, int(tile))


def tiled_pair_logsumexp(q, k, scale, labels=None, valid=None, tile: int = 4096, kernel: str = "torch"):
    """``([B], [B])`` log-sum-exps of the rows and of the columns of ``scale * q @ k.T``, in one tiled sweep.

    q, k: ``[B, d]`` paired (row ``i`` of each is one pair); labels: optional ``[B]`` ids, entry ``(i, j)`` only
    counts when ``labels[i] == labels[j]`` (in both directions); valid: optional ``[B]`` bool, an invalid pair is
    never a negative (its column is excluded from row sums, its row from column sums). Half the matrix products of
    two ``tiled_logsumexp`` calls. ``kernel``: as :func:`tiled_logsumexp`'s.
    """
    if use_fused(kernel, q):
        from .fused import fused_pair_logsumexp

        return fused_pair_logsumexp(q, k, scale, labels, valid)
    scale = torch.as_tensor(scale, dtype=torch.float32, device=q.device)
    return _TiledPairLogSumExp.apply(q, k, scale, labels, valid, int(tile))
