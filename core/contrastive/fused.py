"""The tiled log-sum-exps of :mod:`mmcore.contrastive.tiled` as fused Triton kernels (CUDA), forward and backward.

Same contract, values and gradients as ``tiled_logsumexp`` / ``tiled_pair_logsumexp`` (the PyTorch path stays the
reference and the CPU path): for a logit matrix ``l = scale * P @ Q.T`` (``P [n, d]``, ``Q [N, d]``) each program
owns one block of rows (or of columns) and sweeps the other side block by block, computing the block's logits
with ``tl.dot`` (a loop over ``d`` in chunks of ``BLOCK_D``, so any ``d`` up to 1024), rebuilding the exclusions
inside the block from per-row vectors (``valid``, modality ``labels``; never an ``[n, N]`` mask), and keeping an
online log-sum-exp (forward) or a ``[block, d]`` gradient accumulator (backward) in fp32. Nothing of size
``n x N`` is ever stored: memory is ``O((n + N) d)``.

Kernels (one ``@triton.jit`` each, its orientation a compile-time flag):

- :func:`_lse_kernel`: row log-sum-exps (``ROWS``: each row over the columns) or column log-sum-exps;
- :func:`_grad_kernel`: ``dP`` (a program per row block) or ``dQ`` (a program per column block), recomputing each
  block's logits and its softmax weights ``W = p_row * g_row + p_col * g_col`` from the saved log-sum-exps; the
  row-block programs also sum ``W * P @ Q.T`` for the scale's gradient.

A symmetric pair term therefore costs two forward sweeps (rows, columns) and two backward sweeps (``dq``, ``dk``),
each a full ``[B, B]`` product plus, in the backward, the gradient product: ``12 B^2 d`` FLOPs against the
``8 B^2 d`` the benchmark counts (see ``benchmarks/fused_loss.py``).

Element offsets are int64 (``B * d`` passes 2**31 at ``B = 2**21``, ``d = 1024``). Inputs in bf16, fp16 or fp32; products in the input dtype (fp32 as IEEE fp32, not TF32), everything else fp32.
Excluded entries get :data:`~mmcore.contrastive.MASKED_LOGIT`, exactly as the PyTorch path; entries past the end
of a block count nowhere. ``TRITON_INTERPRET=1`` runs the same kernels on the CPU (how CI checks them).
"""

from __future__ import annotations

import os

import torch
import triton
import triton.language as tl

from . import MASKED_LOGIT

MAX_DIM = 1024
"""Widest embedding the kernels take (the loop over ``d`` runs in chunks of ``BLOCK_D``)."""

INTERPRETED = os.environ.get("TRITON_INTERPRET", "") == "1"
"""``triton.jit`` reads ``TRITON_INTERPRET`` when this module is imported: set it before the first import."""

_MASKED = tl.constexpr(MASKED_LOGIT)
_WIDEN = tl.constexpr(INTERPRETED)


def _configs() -> list:
    """Block sizes and launch settings the autotuner tries once per ``(d, dtype, masks)``: on a GPU a few shapes
    whose ``[block, BLOCK_D]`` fp32 accumulator fits in registers (not yet tuned on a GPU: see
    ``benchmarks/fused_loss.py``); in the interpreter one small configuration."""
    if INTERPRETED:
        return [triton.Config(dict(BLOCK_P=16, BLOCK_Q=16, BLOCK_D=16))]
    shapes = [(128, 64, 64, 4, 3), (128, 64, 128, 8, 3), (64, 64, 128, 4, 3), (128, 128, 64, 8, 2),
              (64, 128, 64, 4, 3), (256, 64, 64, 8, 2)]
    return [triton.Config(dict(BLOCK_P=bp, BLOCK_Q=bq, BLOCK_D=bd), num_warps=w, num_stages=st)
            for bp, bq, bd, w, st in shapes]


CONFIGS = _configs()


@triton.jit
def _dot(a, b, IEEE: tl.constexpr):
    """``a @ b`` accumulated in fp32: IEEE fp32 products for fp32 inputs (not TF32), the inputs' own precision for
    bf16/fp16. In the interpreter, half-precision operands are widened first (its ``dot`` would multiply their
    raw bits); they still carry their half-precision rounding."""
    if _WIDEN:
        return tl.dot(a.to(tl.float32), b.to(tl.float32), input_precision="ieee")
    if IEEE:
        return tl.dot(a, b, input_precision="ieee")
    return tl.dot(a, b)

@triton.jit
def _masked_logits(p_ptr, q_ptr, p_rows, q_rows, n, m, scale, d,
                   p_valid_ptr, q_valid_ptr, p_label_ptr, q_label_ptr,
                   EXCLUDE_BY_Q: tl.constexpr, HAS_VALID: tl.constexpr, HAS_LABELS: tl.constexpr,
                   BLOCK_D: tl.constexpr, IEEE: tl.constexpr):
    """``(raw [BP, BQ] fp32, logits, allowed, inside)`` of one block: ``raw = P @ Q.T``, ``logits = scale * raw``
    with MASKED_LOGIT on excluded entries (``EXCLUDE_BY_Q``: candidates are the Q rows, so an invalid Q row
    is excluded; else the P rows are the candidates), ``inside``: entries within both matrices."""
    raw = tl.zeros((p_rows.shape[0], q_rows.shape[0]), dtype=tl.float32)
    for start in range(0, d, BLOCK_D):
        dims = start + tl.arange(0, BLOCK_D)
        p = tl.load(p_ptr + p_rows[:, None].to(tl.int64) * d + dims[None, :],
                    mask=(p_rows[:, None] < n) & (dims[None, :] < d), other=0.0)
        q = tl.load(q_ptr + q_rows[:, None].to(tl.int64) * d + dims[None, :],
                    mask=(q_rows[:, None] < m) & (dims[None, :] < d), other=0.0)
        raw += _dot(p, tl.trans(q), IEEE)
    inside = (p_rows[:, None] < n) & (q_rows[None, :] < m)
    allowed = inside
    if HAS_VALID:
        if EXCLUDE_BY_Q:
            ok = tl.load(q_valid_ptr + q_rows, mask=q_rows < m, other=0)
            allowed = allowed & (ok[None, :] != 0)
        else:
            ok = tl.load(p_valid_ptr + p_rows, mask=p_rows < n, other=0)
            allowed = allowed & (ok[:, None] != 0)
    if HAS_LABELS:
        p_label = tl.load(p_label_ptr + p_rows, mask=p_rows < n, other=-1)
        q_label = tl.load(q_label_ptr + q_rows, mask=q_rows < m, other=-2)
        allowed = allowed & (p_label[:, None] == q_label[None, :])
    logits = tl.where(allowed, raw * scale, _MASKED)
    return raw, logits, allowed, inside

@triton.autotune(configs=CONFIGS, key=["d"])
@triton.jit
def _lse_kernel(p_ptr, q_ptr, out_ptr, n, m, d, scale_ptr,
                p_valid_ptr, q_valid_ptr, p_label_ptr, q_label_ptr,
                ROWS: tl.constexpr, HAS_VALID: tl.constexpr, HAS_LABELS: tl.constexpr,
                BLOCK_P: tl.constexpr, BLOCK_Q: tl.constexpr, BLOCK_D: tl.constexpr, IEEE: tl.constexpr):
    """``ROWS``: out[i] = logsumexp_j l_ij over a block of P rows; else out[j] = logsumexp_i l_ij over a block
    of Q rows (the columns)."""
    scale = tl.load(scale_ptr)
    pid = tl.program_id(0)
    if ROWS:
        own = pid * BLOCK_P + tl.arange(0, BLOCK_P)
        best = tl.full((BLOCK_P,), float("-inf"), tl.float32)
        total = tl.zeros((BLOCK_P,), tl.float32)
        for start in range(0, m, BLOCK_Q):
            other = start + tl.arange(0, BLOCK_Q)
            _, logits, _, inside = _masked_logits(p_ptr, q_ptr, own, other, n, m, scale, d, p_valid_ptr,
                                                  q_valid_ptr, p_label_ptr, q_label_ptr, True, HAS_VALID,
                                                  HAS_LABELS, BLOCK_D, IEEE)
            logits = tl.where(inside, logits, float("-inf"))
            new_best = tl.maximum(best, tl.max(logits, 1))
            safe = tl.where(new_best == float("-inf"), 0.0, new_best)
            total = total * tl.exp(best - safe) + tl.sum(tl.exp(logits - safe[:, None]), 1)
            best = new_best
        tl.store(out_ptr + own, best + tl.log(tl.where(total > 0, total, 1.0)), mask=own < n)
    else:
        own = pid * BLOCK_Q + tl.arange(0, BLOCK_Q)
        best = tl.full((BLOCK_Q,), float("-inf"), tl.float32)
        total = tl.zeros((BLOCK_Q,), tl.float32)
        for start in range(0, n, BLOCK_P):
            other = start + tl.arange(0, BLOCK_P)
            _, logits, _, inside = _masked_logits(p_ptr, q_ptr, other, own, n, m, scale, d, p_valid_ptr,
                                                  q_valid_ptr, p_label_ptr, q_label_ptr, False, HAS_VALID,
                                                  HAS_LABELS, BLOCK_D, IEEE)
            logits = tl.where(inside, logits, float("-inf"))
            new_best = tl.maximum(best, tl.max(logits, 0))
            safe = tl.where(new_best == float("-inf"), 0.0, new_best)
            total = total * tl.exp(best - safe) + tl.sum(tl.exp(logits - safe[None, :]), 0)
            best = new_best
        tl.store(out_ptr + own, best + tl.log(tl.where(total > 0, total, 1.0)), mask=own < m)

@triton.jit
def _weights(p_ptr, q_ptr, p_rows, q_rows, n, m, scale, d, p_valid_ptr, q_valid_ptr, p_label_ptr,
             q_label_ptr, row_lse_ptr, row_grad_ptr, col_lse_ptr, col_grad_ptr,
             HAS_COLS: tl.constexpr, HAS_VALID: tl.constexpr, HAS_LABELS: tl.constexpr,
             BLOCK_D: tl.constexpr, IEEE: tl.constexpr):
    """``(W [BP, BQ] fp32, raw)``: d loss / d logits of one block. The row softmaxes' part (candidates: Q rows),
    plus, with ``HAS_COLS``, the column softmaxes' (candidates: P rows); excluded entries are constants (0)."""
    raw, logits, allowed, inside = _masked_logits(p_ptr, q_ptr, p_rows, q_rows, n, m, scale, d, p_valid_ptr,
                                                  q_valid_ptr, p_label_ptr, q_label_ptr, True, HAS_VALID,
                                                  HAS_LABELS, BLOCK_D, IEEE)
    row_lse = tl.load(row_lse_ptr + p_rows, mask=p_rows < n, other=0.0)
    row_grad = tl.load(row_grad_ptr + p_rows, mask=p_rows < n, other=0.0)
    w = tl.where(allowed, tl.exp(logits - row_lse[:, None]) * row_grad[:, None], 0.0)
    if HAS_COLS:
        _, col_logits, col_allowed, _ = _masked_logits(p_ptr, q_ptr, p_rows, q_rows, n, m, scale, d,
                                                       p_valid_ptr, q_valid_ptr, p_label_ptr, q_label_ptr,
                                                       False, HAS_VALID, HAS_LABELS, BLOCK_D, IEEE)
        col_lse = tl.load(col_lse_ptr + q_rows, mask=q_rows < m, other=0.0)
        col_grad = tl.load(col_grad_ptr + q_rows, mask=q_rows < m, other=0.0)
        w += tl.where(col_allowed, tl.exp(col_logits - col_lse[None, :]) * col_grad[None, :], 0.0)
    return tl.where(inside, w, 0.0), raw

@triton.autotune(configs=CONFIGS, key=["d"])
@triton.jit
def _grad_kernel(p_ptr, q_ptr, grad_ptr, n, m, d, scale_ptr,
                 p_valid_ptr, q_valid_ptr, p_label_ptr, q_label_ptr,
                 row_lse_ptr, row_grad_ptr, col_lse_ptr, col_grad_ptr,
                 ROWS: tl.constexpr, HAS_COLS: tl.constexpr, HAS_VALID: tl.constexpr, HAS_LABELS: tl.constexpr,
                 BLOCK_P: tl.constexpr, BLOCK_Q: tl.constexpr, BLOCK_D: tl.constexpr, IEEE: tl.constexpr):
    """``ROWS``: dP for a block of P rows; else dQ for a block of Q rows. The gradient is written ``BLOCK_D`` dimensions at a time (a ``[block, BLOCK_D]`` fp32
    accumulator, so the block's logits are recomputed once per chunk of ``d``)."""
    scale = tl.load(scale_ptr)
    pid = tl.program_id(0)
    chunk = tl.program_id(1)
    dims = chunk * BLOCK_D + tl.arange(0, BLOCK_D)
    if ROWS:
        own = pid * BLOCK_P + tl.arange(0, BLOCK_P)
        acc = tl.zeros((BLOCK_P, BLOCK_D), tl.float32)
        for start in range(0, m, BLOCK_Q):
            other = start + tl.arange(0, BLOCK_Q)
            w, _ = _weights(p_ptr, q_ptr, own, other, n, m, scale, d, p_valid_ptr, q_valid_ptr,
                            p_label_ptr, q_label_ptr, row_lse_ptr, row_grad_ptr, col_lse_ptr, col_grad_ptr,
                            HAS_COLS, HAS_VALID, HAS_LABELS, BLOCK_D, IEEE)
            q = tl.load(q_ptr + other[:, None].to(tl.int64) * d + dims[None, :],
                        mask=(other[:, None] < m) & (dims[None, :] < d), other=0.0)
            acc += _dot(w.to(q.dtype), q, IEEE)
        tl.store(grad_ptr + own[:, None].to(tl.int64) * d + dims[None, :], acc * scale,
                 mask=(own[:, None] < n) & (dims[None, :] < d))
    else:
        own = pid * BLOCK_Q + tl.arange(0, BLOCK_Q)
        acc = tl.zeros((BLOCK_Q, BLOCK_D), tl.float32)
        for start in range(0, n, BLOCK_P):
            other = start + tl.arange(0, BLOCK_P)
            w, _ = _weights(p_ptr, q_ptr, other, own, n, m, scale, d, p_valid_ptr, q_valid_ptr,
                            p_label_ptr, q_label_ptr, row_lse_ptr, row_grad_ptr, col_lse_ptr, col_grad_ptr,
                            HAS_COLS, HAS_VALID, HAS_LABELS, BLOCK_D, IEEE)
            p = tl.load(p_ptr + other[:, None].to(tl.int64) * d + dims[None, :],
                        mask=(other[:, None] < n) & (dims[None, :] < d), other=0.0)
            acc += _dot(tl.trans(w.to(p.dtype)), p, IEEE)
        tl.store(grad_ptr + own[:, None].to(tl.int64) * d + dims[None, :], acc * scale,
                 mask=(own[:, None] < m) & (dims[None, :] < d))

def _vectors(p, labels_p, labels_q, valid_p, valid_q):
    """Per-row masks as kernel arguments: int8 validity, int64 labels (dummy one-element tensors when absent)."""
    dummy = torch.zeros(1, dtype=torch.int8, device=p.device)
    has_valid = valid_p is not None or valid_q is not None
    has_labels = labels_p is not None
    vp = dummy if valid_p is None else valid_p.to(torch.int8).contiguous()
    vq = dummy if valid_q is None else valid_q.to(torch.int8).contiguous()
    lp = dummy if labels_p is None else labels_p.to(torch.int64).contiguous()
    lq = dummy if labels_q is None else labels_q.to(torch.int64).contiguous()
    return vp, vq, lp, lq, has_valid, has_labels


def _lse(p, q, scale, masks, rows: bool):
    """``[n]`` row (``rows``) or ``[N]`` column log-sum-exps of ``scale * p @ q.T`` with ``masks``."""
    vp, vq, lp, lq, has_valid, has_labels = masks
    n, m, d = p.shape[0], q.shape[0], p.shape[1]
    out = torch.empty(n if rows else m, dtype=torch.float32, device=p.device)

    def grid(meta):
        return (triton.cdiv(n, meta["BLOCK_P"]) if rows else triton.cdiv(m, meta["BLOCK_Q"]),)

    _lse_kernel[grid](p, q, out, n, m, d, scale, vp, vq, lp, lq, ROWS=rows, HAS_VALID=has_valid,
                      HAS_LABELS=has_labels, IEEE=p.dtype == torch.float32)
    return out


def _grads(p, q, scale, masks, row_lse, row_grad, col_lse, col_grad):
    """``(dP [n, d] fp32, dQ [N, d] fp32, dscale fp32)`` of ``sum(row_grad * row_lse) (+ sum(col_grad *
    col_lse))``. ``dscale = sum_ij W_ij (p_i . q_j) = sum_i p_i . dP_i / scale``: no kernel of its own."""
    vp, vq, lp, lq, has_valid, has_labels = masks
    n, m, d = p.shape[0], q.shape[0], p.shape[1]
    has_cols = col_lse is not None
    col_lse = row_lse if col_lse is None else col_lse  # unread placeholders
    col_grad = row_grad if col_grad is None else col_grad.float().contiguous()
    row_grad = row_grad.float().contiguous()
    dp = torch.empty((n, d), dtype=torch.float32, device=p.device)
    dq = torch.empty((m, d), dtype=torch.float32, device=p.device)
    flags = dict(HAS_COLS=has_cols, HAS_VALID=has_valid, HAS_LABELS=has_labels, IEEE=p.dtype == torch.float32)
    vectors = (vp, vq, lp, lq, row_lse, row_grad, col_lse, col_grad)

    def rows_grid(meta):
        return triton.cdiv(n, meta["BLOCK_P"]), triton.cdiv(d, meta["BLOCK_D"])

    def cols_grid(meta):
        return triton.cdiv(m, meta["BLOCK_Q"]), triton.cdiv(d, meta["BLOCK_D"])

    _grad_kernel[rows_grid](p, q, dp, n, m, d, scale, *vectors, ROWS=True, **flags)
    _grad_kernel[cols_grid](p, q, dq, n, m, d, scale, *vectors, ROWS=False, **flags)
    dscale = (p.float() * dp).sum() / scale.reshape(())
    return dp, dq, dscale


class _FusedLogSumExp(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, c, scale, row_labels, labels, valid):
        q, c = q.contiguous(), c.contiguous()
        scale = scale.float().reshape(1).contiguous()
        masks = _vectors(q, row_labels, labels, None, valid)
        lse = _lse(q, c, scale, masks, rows=True)
        ctx.save_for_backward(q, c, scale, lse, *[t for t in masks[:4]])
        ctx.flags = masks[4:]
        return lse

    @staticmethod
    def backward(ctx, grad_lse):
        q, c, scale, lse, *vectors = ctx.saved_tensors
        dq, dc, dscale = _grads(q, c, scale, (*vectors, *ctx.flags), lse, grad_lse, None, None)
        return dq.to(q.dtype), dc.to(c.dtype), dscale.reshape(()), None, None, None


class _FusedPairLogSumExp(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, scale, labels, valid):
        q, k = q.contiguous(), k.contiguous()
        scale = scale.float().reshape(1).contiguous()
        masks = _vectors(q, labels, labels, valid, valid)
        row_lse = _lse(q, k, scale, masks, rows=True)
        col_lse = _lse(q, k, scale, masks, rows=False)
        ctx.save_for_backward(q, k, scale, row_lse, col_lse, *[t for t in masks[:4]])
        ctx.flags = masks[4:]
        return row_lse, col_lse

    @staticmethod
    def backward(ctx, grad_rows, grad_cols):
        q, k, scale, row_lse, col_lse, *vectors = ctx.saved_tensors
        dq, dk, dscale = _grads(q, k, scale, (*vectors, *ctx.flags), row_lse, grad_rows, col_lse, grad_cols)
        return dq.to(q.dtype), dk.to(k.dtype), dscale.reshape(()), None, None


def fused_logsumexp(q, c, scale, targets, labels=None, valid=None):
    """:func:`~mmcore.contrastive.tiled.tiled_logsumexp` (``[n]``) through the Triton kernels."""
    scale = torch.as_tensor(scale, dtype=torch.float32, device=q.device)
    row_labels = labels[targets] if labels is not None else None
    return _FusedLogSumExp.apply(q, c, scale, row_labels, labels, valid)


def fused_pair_logsumexp(q, k, scale, labels=None, valid=None):
    """:func:`~mmcore.contrastive.tiled.tiled_pair_logsumexp` (``([B], [B])``) through the Triton kernels."""
    scale = torch.as_tensor(scale, dtype=torch.float32, device=q.device)
    return _FusedPairLogSumExp.apply(q, k, scale, labels, valid)
