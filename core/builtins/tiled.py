"""Tiled log-sum-exp for contrastive losses: never materialises the ``[n, N]`` logits (Inf-CL's idea).

``tiled_logsumexp(q, c, s, ...)`` returns ``lse_i = log sum_j allowed_ij exp(s * q_i . c_j)`` for every row,
visiting the similarity matrix in ``tile x tile`` blocks with an online (running max) log-sum-exp. The backward
recomputes each block and accumulates ``dq``, ``dc`` and ``ds``, so peak memory is ``O((n + N) d + tile^2)``
instead of ``O(n N)``. Masks are rebuilt per block from per-candidate ids, never passed as a matrix.
"""

from __future__ import annotations

import torch


def _allowed(rows: slice, cols: slice, targets, row_labels, labels, valid, shape, device):
    """``[tile_n, tile_N]`` bool mask of a block, or None when every candidate is allowed."""
    allowed = None
    if valid is not None:
        allowed = valid[cols][None, :].expand(shape)
    if labels is not None:
        same = labels[cols][None, :] == row_labels[rows][:, None]
        allowed = same if allowed is None else allowed & same
    if allowed is None:
        return None
    col_index = torch.arange(cols.start, cols.start + shape[1], device=device)
    return allowed | (targets[rows][:, None] == col_index[None, :])


def _blocks(n: int, tile: int):
    return [slice(start, min(start + tile, n)) for start in range(0, n, tile)]


class _TiledLogSumExp(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, c, scale, targets, labels, valid, tile):
        n, big_n = q.shape[0], c.shape[0]
        row_labels = labels[targets] if labels is not None else None
        lse = torch.empty(n, dtype=torch.float32, device=q.device)
        for rows in _blocks(n, tile):
            running_max = torch.full((rows.stop - rows.start,), float("-inf"), device=q.device)
            running_sum = torch.zeros(rows.stop - rows.start, device=q.device)
            for cols in _blocks(big_n, tile):
                logits = (q[rows] @ c[cols].T).float() * scale
                allowed = _allowed(rows, cols, targets, row_labels, labels, valid, logits.shape, q.device)
                if allowed is not None:
                    logits = logits.masked_fill(~allowed, float("-inf"))
                new_max = torch.maximum(running_max, logits.max(dim=1).values)
                safe_max = torch.where(torch.isinf(new_max), torch.zeros_like(new_max), new_max)
                running_sum = running_sum * torch.exp(running_max - safe_max) + torch.exp(
                    logits - safe_max[:, None]).sum(1)
                running_max = new_max
            lse[rows] = running_max + torch.log(running_sum)  # finite: each row's positive is always allowed
        ctx.save_for_backward(q, c, scale, targets, lse, labels, valid)
        ctx.tile = tile
        return lse

    @staticmethod
    def backward(ctx, grad_lse):
        q, c, scale, targets, lse, labels, valid = ctx.saved_tensors
        tile = ctx.tile
        row_labels = labels[targets] if labels is not None else None
        dq = torch.zeros(q.shape, dtype=torch.float32, device=q.device)
        dc = torch.zeros(c.shape, dtype=torch.float32, device=c.device)
        dscale = torch.zeros((), dtype=torch.float32, device=q.device)
        for rows in _blocks(q.shape[0], tile):
            q_block = q[rows].float()
            for cols in _blocks(c.shape[0], tile):
                c_block = c[cols].float()
                dots = (q[rows] @ c[cols].T).float()
                # p_ij * g_i: the softmax weight of each allowed candidate, times the row's incoming gradient
                weights = torch.exp(dots * scale - lse[rows][:, None]) * grad_lse[rows][:, None]
                allowed = _allowed(rows, cols, targets, row_labels, labels, valid, dots.shape, q.device)
                if allowed is not None:
                    weights = weights.masked_fill(~allowed, 0.0)
                dq[rows] += scale * (weights @ c_block)
                dc[cols] += scale * (weights.T @ q_block)
                dscale += (weights * dots).sum()
        return dq.to(q.dtype), dc.to(c.dtype), dscale.to(scale.dtype), None, None, None, None


def tiled_logsumexp(q, c, scale, targets, labels=None, valid=None, tile: int = 4096):
    """``[n]`` masked log-sum-exp of ``scale * q @ c.T`` over columns, computed in ``tile x tile`` blocks.

    q: ``[n, d]``, c: ``[N, d]``, scale: scalar tensor, targets: ``[n]`` column of each row's positive (always
    allowed), labels: optional ``[N]`` ids (row ``i`` sees only columns with ``labels == labels[targets[i]]``),
    valid: optional ``[N]`` bool.
    """
    scale = torch.as_tensor(scale, dtype=torch.float32, device=q.device)
    return _TiledLogSumExp.apply(q, c, scale, targets, labels, valid, int(tile))
