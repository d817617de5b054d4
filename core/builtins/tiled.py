"""Tiled log-sum-exp for contrastive losses: never materialises the ``[n, N]`` logits (Inf-CL's idea).

``tiled_logsumexp(q, c, s, ...)`` returns ``lse_i = log sum_j allowed_ij exp(s * q_i . c_j)`` for every row,
visiting the similarity matrix in ``tile x tile`` blocks with an online (running max) log-sum-exp. The backward
recomputes each block and accumulates ``dq``, ``dc`` and ``ds``, so peak memory is ``O((n + N) d + tile^2)``
instead of ``O(n N)``. Masks are rebuilt per block from per-candidate ids, never passed as a matrix.
"""

from __future__ import annotations

import torch


MASKED_LOGIT = -1.0e4  # as in losses.py: exp underflows to 0, but finite


def _block_logits(q, c, scale, rows: slice, cols: slice, row_labels, labels, valid):
    """``[tile_n, tile_N]`` fp32 logits of one block, excluded candidates set to MASKED_LOGIT."""
    logits = (q[rows] @ c[cols].T).float() * scale
    excluded = None
    if valid is not None:
        excluded = ~valid[cols][None, :]
    if labels is not None:
        other = labels[cols][None, :] != row_labels[rows][:, None]
        excluded = other if excluded is None else excluded | other
    return logits if excluded is None else logits.masked_fill(excluded, MASKED_LOGIT)


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
                logits = _block_logits(q, c, scale, rows, cols, row_labels, labels, valid)
                new_max = torch.maximum(running_max, logits.max(dim=1).values)
                running_sum = running_sum * torch.exp(running_max - new_max) + torch.exp(
                    logits - new_max[:, None]).sum(1)
                running_max = new_max
            lse[rows] = running_max + torch.log(running_sum)
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
                logits = _block_logits(q, c, scale, rows, cols, row_labels, labels, valid)
                # p_ij * g_i: each candidate's softmax weight times the row's incoming gradient; excluded
                # candidates are constants (MASKED_LOGIT), so they pass no gradient to q, c or the scale
                weights = torch.exp(logits - lse[rows][:, None]) * grad_lse[rows][:, None]
                if labels is not None or valid is not None:
                    weights = weights.masked_fill(logits == MASKED_LOGIT, 0.0)
                dq[rows] += scale * (weights @ c_block)
                dc[cols] += scale * (weights.T @ q_block)
                dscale += (weights * (q[rows] @ c[cols].T).float()).sum()
        return dq.to(q.dtype), dc.to(c.dtype), dscale.to(scale.dtype), None, None, None, None


def tiled_logsumexp(q, c, scale, targets, labels=None, valid=None, tile: int = 4096):
    """``[n]`` masked log-sum-exp of ``scale * q @ c.T`` over columns, computed in ``tile x tile`` blocks.

    q: ``[n, d]``, c: ``[N, d]``, scale: scalar tensor, targets: ``[n]`` column of each row's positive,
    labels: optional ``[N]`` ids (row ``i`` sees only columns with ``labels == labels[targets[i]]``),
    valid: optional ``[N]`` bool. Excluded candidates get a finite ``MASKED_LOGIT``, exactly as the plain loss.
    """
    scale = torch.as_tensor(scale, dtype=torch.float32, device=q.device)
    return _TiledLogSumExp.apply(q, c, scale, targets, labels, valid, int(tile))
