"""The tiled log-sum-exps of :mod:`mmcore.contrastive.tiled` as fused Triton kernels (CUDA), forward and backward.

Same contract, values and gradients as ``tiled_logsumexp`` / ``tiled_pair_logsumexp`` (the PyTorch path stays the
reference and the CPU path). For a logit matrix ``l = scale * P @ Q.T`` (``P [n, d]``, ``Q [m, d]``), each
program owns a block of P rows and sweeps the Q rows block by block: it computes the block's product with
``tl.dot`` (block pointers, a loop over ``d`` in chunks of ``BLOCK_D``: any ``d`` up to 1024), rebuilds the
exclusions inside the block from per-row vectors (``valid``, modality ``labels``; never an ``[n, m]`` mask), and
keeps what it needs in fp32. Nothing of size ``n x m`` is stored: memory is ``O((n + m) d)``.

- :func:`_lse_kernel`: each P row's log-sum-exp over the Q rows, online (running max and sum). The columns of a
  pair term are the same kernel with the roles swapped (``Q`` rows over ``P``).
- :func:`_grad_kernel`: ``dP = scale * W @ Q`` for one block of P rows and ``BLOCK_D`` dimensions, recomputing
  each block's product; ``W`` is the row softmaxes' ``p * g`` and/or (pair terms) the column softmaxes', rebuilt
  from the saved log-sum-exps. ``dQ`` is the same kernel with the roles swapped; the scale's gradient follows
  from ``dP`` (``sum_i P_i . dP_i / scale``).

Cost of a symmetric pair term: two forward sweeps (``4 B^2 d`` FLOPs) and two backward sweeps. The backward
recomputes each block's product once per chunk of ``d`` it writes (``d / BLOCK_D`` times; a ``[block, d]`` fp32
accumulator for ``d = 512`` does not fit in registers: every ``BLOCK_D >= 128`` configuration spills), so its
work is ``(4 + 4 d / BLOCK_D) B^2 d``: in all ``(8 + 4 d / BLOCK_D) B^2 d`` against the ``8 B^2 d`` the benchmark
counts (``benchmarks/fused_loss.py``), 40 ``B^2 d`` at ``d = 512``, ``BLOCK_D = 64``. This design cannot reach the
GEMM rate at large ``d``; one product per block in the backward (``d``-chunks of ``dP`` added in global memory,
as Inf-CL does) is the next step once a GPU can time it. Block sizes are autotuned per ``d`` among configurations
chosen from ptxas's register report; none is timed on a GPU yet.

Element offsets are int64 (block pointers). Inputs in bf16, fp16 or fp32; products in the input dtype (fp32 as
IEEE fp32, not TF32), everything else fp32. Excluded entries get :data:`~mmcore.contrastive.MASKED_LOGIT`, exactly
as the PyTorch path; entries past the ends count nowhere. ``TRITON_INTERPRET=1`` runs the same kernels on the CPU
(how CI checks them).
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


def _configs(shapes) -> list:
    """The autotuner's candidates, ``(BLOCK_P, BLOCK_Q, BLOCK_D, warps, stages)`` each; one small configuration in
    the interpreter."""
    if INTERPRETED:
        return [triton.Config(dict(BLOCK_P=16, BLOCK_Q=16, BLOCK_D=16))]
    return [triton.Config(dict(BLOCK_P=bp, BLOCK_Q=bq, BLOCK_D=bd), num_warps=w, num_stages=st)
            for bp, bq, bd, w, st in shapes]


# Chosen from ptxas's register report for sm_90, bf16, validity and labels on (tests/test_fused_kernels.py checks
# that the first of each does not spill); backward configurations with BLOCK_D >= 128 all spilled. Not yet timed
# on a GPU.
LSE_CONFIGS = _configs([(128, 64, 64, 8, 3), (128, 64, 32, 8, 3), (64, 64, 32, 4, 3), (128, 32, 64, 8, 3),
                        (64, 64, 128, 4, 3)])
GRAD_CONFIGS = _configs([(128, 64, 32, 8, 3), (64, 64, 32, 4, 3), (128, 32, 64, 8, 3), (128, 64, 64, 8, 3)])


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
def _product(p_ptr, q_ptr, p_start, q_start, n, m, d, BLOCK_P: tl.constexpr, BLOCK_Q: tl.constexpr,
             BLOCK_D: tl.constexpr, IEEE: tl.constexpr):
    """``[BLOCK_P, BLOCK_Q]`` fp32 block ``P[p_start:] @ Q[q_start:].T``, ``BLOCK_D`` dimensions at a time (block
    pointers: no per-element address registers); rows and dimensions past the ends read as zeros."""
    p_block = tl.make_block_ptr(p_ptr, (n, d), (d, 1), (p_start, 0), (BLOCK_P, BLOCK_D), (1, 0))
    q_block = tl.make_block_ptr(q_ptr, (m, d), (d, 1), (q_start, 0), (BLOCK_Q, BLOCK_D), (1, 0))
    raw = tl.zeros((BLOCK_P, BLOCK_Q), dtype=tl.float32)
    for _ in range(0, d, BLOCK_D):
        p = tl.load(p_block, boundary_check=(0, 1), padding_option="zero")
        q = tl.load(q_block, boundary_check=(0, 1), padding_option="zero")
        raw += _dot(p, tl.trans(q), IEEE)
        p_block = tl.advance(p_block, (0, BLOCK_D))
        q_block = tl.advance(q_block, (0, BLOCK_D))
    return raw


@triton.jit
def _same_label(p_rows, q_rows, n, m, p_label_ptr, q_label_ptr, HAS_LABELS: tl.constexpr):
    """``[BP, BQ]`` bool: both entries in range and, with labels, of the same label."""
    same = (p_rows[:, None] < n) & (q_rows[None, :] < m)
    if HAS_LABELS:
        p_label = tl.load(p_label_ptr + p_rows, mask=p_rows < n, other=-1)
        q_label = tl.load(q_label_ptr + q_rows, mask=q_rows < m, other=-2)
        same = same & (p_label[:, None] == q_label[None, :])
    return same


@triton.jit
def _valid(valid_ptr, rows, size, HAS_VALID: tl.constexpr):
    """``[block]`` bool: the rows' validity (all True without a validity vector)."""
    if HAS_VALID:
        return tl.load(valid_ptr + rows, mask=rows < size, other=0) != 0
    return rows >= 0


@triton.autotune(configs=LSE_CONFIGS, key=["d"])
@triton.jit
def _lse_kernel(p_ptr, q_ptr, out_ptr, n, m, d, scale_ptr, q_valid_ptr, p_label_ptr, q_label_ptr,
                HAS_VALID: tl.constexpr, HAS_LABELS: tl.constexpr,
                BLOCK_P: tl.constexpr, BLOCK_Q: tl.constexpr, BLOCK_D: tl.constexpr, IEEE: tl.constexpr):
    """``out[i] = log sum_j exp(l_ij)`` for a block of P rows over every Q row (the candidates), online.
    ``l_ij = scale * P_i . Q_j``, or MASKED_LOGIT where Q row ``j`` is invalid or its label differs."""
    scale = tl.load(scale_ptr)
    start = tl.program_id(0) * BLOCK_P
    own = start + tl.arange(0, BLOCK_P)
    best = tl.full((BLOCK_P,), float("-inf"), tl.float32)
    total = tl.zeros((BLOCK_P,), tl.float32)
    for q_start in range(0, m, BLOCK_Q):
        other = q_start + tl.arange(0, BLOCK_Q)
        raw = _product(p_ptr, q_ptr, start, q_start, n, m, d, BLOCK_P, BLOCK_Q, BLOCK_D, IEEE)
        allowed = _same_label(own, other, n, m, p_label_ptr, q_label_ptr, HAS_LABELS)
        allowed = allowed & _valid(q_valid_ptr, other, m, HAS_VALID)[None, :]
        logits = tl.where(other[None, :] < m, tl.where(allowed, raw * scale, _MASKED), float("-inf"))
        new_best = tl.maximum(best, tl.max(logits, 1))
        safe = tl.where(new_best == float("-inf"), 0.0, new_best)
        total = total * tl.exp(best - safe) + tl.sum(tl.exp(logits - safe[:, None]), 1)
        best = new_best
    tl.store(out_ptr + own, best + tl.log(tl.where(total > 0, total, 1.0)), mask=own < n)


@triton.autotune(configs=GRAD_CONFIGS, key=["d"])
@triton.jit
def _grad_kernel(p_ptr, q_ptr, grad_ptr, n, m, d, scale_ptr, p_valid_ptr, q_valid_ptr, p_label_ptr, q_label_ptr,
                 p_lse_ptr, p_grad_ptr, q_lse_ptr, q_grad_ptr,
                 P_TERM: tl.constexpr, Q_TERM: tl.constexpr, HAS_VALID: tl.constexpr, HAS_LABELS: tl.constexpr,
                 BLOCK_P: tl.constexpr, BLOCK_Q: tl.constexpr, BLOCK_D: tl.constexpr, IEEE: tl.constexpr):
    """``dP = scale * W @ Q`` for a block of P rows and ``BLOCK_D`` of the dimensions (``program_id(1)``), each
    block's logits recomputed. ``W_ij = d loss / d l_ij``: with ``P_TERM``, the softmaxes of the P rows over the Q
    rows (``p_lse``, ``p_grad``); with ``Q_TERM``, those of the Q rows over the P rows (``q_lse``, ``q_grad``);
    excluded entries are constants of the loss (0)."""
    scale = tl.load(scale_ptr)
    start = tl.program_id(0) * BLOCK_P
    chunk = tl.program_id(1) * BLOCK_D
    own = start + tl.arange(0, BLOCK_P)
    own_valid = _valid(p_valid_ptr, own, n, HAS_VALID)
    p_lse = tl.load(p_lse_ptr + own, mask=own < n, other=0.0)
    p_grad = tl.load(p_grad_ptr + own, mask=own < n, other=0.0)
    acc = tl.zeros((BLOCK_P, BLOCK_D), tl.float32)
    for q_start in range(0, m, BLOCK_Q):
        other = q_start + tl.arange(0, BLOCK_Q)
        logits = scale * _product(p_ptr, q_ptr, start, q_start, n, m, d, BLOCK_P, BLOCK_Q, BLOCK_D, IEEE)
        same = _same_label(own, other, n, m, p_label_ptr, q_label_ptr, HAS_LABELS)
        w = tl.zeros((BLOCK_P, BLOCK_Q), tl.float32)
        if P_TERM:
            allowed = same & _valid(q_valid_ptr, other, m, HAS_VALID)[None, :]
            w += tl.where(allowed, tl.exp(logits - p_lse[:, None]) * p_grad[:, None], 0.0)
        if Q_TERM:
            q_lse = tl.load(q_lse_ptr + other, mask=other < m, other=0.0)
            q_grad = tl.load(q_grad_ptr + other, mask=other < m, other=0.0)
            allowed = same & own_valid[:, None]
            w += tl.where(allowed, tl.exp(logits - q_lse[None, :]) * q_grad[None, :], 0.0)
        q_block = tl.make_block_ptr(q_ptr, (m, d), (d, 1), (q_start, chunk), (BLOCK_Q, BLOCK_D), (1, 0))
        q = tl.load(q_block, boundary_check=(0, 1), padding_option="zero")
        acc += _dot(w.to(q.dtype), q, IEEE)
    out = tl.make_block_ptr(grad_ptr, (n, d), (d, 1), (start, chunk), (BLOCK_P, BLOCK_D), (1, 0))
    tl.store(out, acc * scale, boundary_check=(0, 1))


def _vectors(p):
    """A one-element placeholder for a pointer argument the kernel does not read."""
    return torch.zeros(1, dtype=torch.int8, device=p.device)


def _as_valid(valid, like):
    return _vectors(like) if valid is None else valid.to(torch.int8).contiguous()


def _as_labels(labels, like):
    return _vectors(like) if labels is None else labels.to(torch.int64).contiguous()


def _lse(p, q, scale, q_valid, p_labels, q_labels):
    """``[n]`` log-sum-exps of each row of ``scale * p @ q.T`` over the valid, same-label rows of ``q``."""
    n, m, d = p.shape[0], q.shape[0], p.shape[1]
    out = torch.empty(n, dtype=torch.float32, device=p.device)
    _lse_kernel[lambda meta: (triton.cdiv(n, meta["BLOCK_P"]),)](
        p, q, out, n, m, d, scale, _as_valid(q_valid, p), _as_labels(p_labels, p), _as_labels(q_labels, p),
        HAS_VALID=q_valid is not None, HAS_LABELS=p_labels is not None, IEEE=p.dtype == torch.float32)
    return out


def _grad(p, q, scale, p_valid, q_valid, p_labels, q_labels, p_side, q_side):
    """``[n, d]`` fp32 gradient for ``p`` of the log-sum-exps of ``p``'s rows (``p_side = (lse, grad)``) and/or
    of ``q``'s rows (``q_side``), over ``scale * p @ q.T``; None for a side that has none."""
    n, m, d = p.shape[0], q.shape[0], p.shape[1]
    out = torch.empty((n, d), dtype=torch.float32, device=p.device)
    placeholder = torch.zeros(1, dtype=torch.float32, device=p.device)
    p_lse, p_grad = p_side if p_side is not None else (placeholder, placeholder)
    q_lse, q_grad = q_side if q_side is not None else (placeholder, placeholder)
    has_valid = p_valid is not None or q_valid is not None
    _grad_kernel[lambda meta: (triton.cdiv(n, meta["BLOCK_P"]), triton.cdiv(d, meta["BLOCK_D"]))](
        p, q, out, n, m, d, scale, _as_valid(p_valid, p), _as_valid(q_valid, p), _as_labels(p_labels, p),
        _as_labels(q_labels, p), p_lse, p_grad.float().contiguous(), q_lse, q_grad.float().contiguous(),
        P_TERM=p_side is not None, Q_TERM=q_side is not None, HAS_VALID=has_valid,
        HAS_LABELS=p_labels is not None, IEEE=p.dtype == torch.float32)
    return out


def _scale_grad(p, dp, scale, rows: int = 65536):
    """``d loss / d scale = sum_ij W_ij (p_i . q_j) = sum_i p_i . dp_i / scale``: no kernel of its own (summed
    ``rows`` at a time: no ``[n, d]`` fp32 copy of ``p``)."""
    total = sum((p[i:i + rows].float() * dp[i:i + rows]).sum() for i in range(0, p.shape[0], rows))
    return total / scale.reshape(())


class _FusedLogSumExp(torch.autograd.Function):
    """Rows of ``q`` against the candidate pool ``c`` (invalid candidates, labels)."""

    @staticmethod
    def forward(ctx, q, c, scale, row_labels, labels, valid):
        q, c = q.contiguous(), c.contiguous()
        scale = scale.float().reshape(1).contiguous()
        lse = _lse(q, c, scale, valid, row_labels, labels)
        ctx.save_for_backward(q, c, scale, lse, row_labels, labels, valid)
        return lse

    @staticmethod
    def backward(ctx, grad):
        q, c, scale, lse, row_labels, labels, valid = ctx.saved_tensors
        dq = _grad(q, c, scale, None, valid, row_labels, labels, (lse, grad), None)
        dc = _grad(c, q, scale, valid, None, labels, row_labels, None, (lse, grad))
        return dq.to(q.dtype), dc.to(c.dtype), _scale_grad(q, dq, scale), None, None, None


class _FusedPairLogSumExp(torch.autograd.Function):
    """Rows and columns of one ``[B, B]`` matrix of pairs (``valid`` and ``labels`` per pair)."""

    @staticmethod
    def forward(ctx, q, k, scale, labels, valid):
        q, k = q.contiguous(), k.contiguous()
        scale = scale.float().reshape(1).contiguous()
        row_lse = _lse(q, k, scale, valid, labels, labels)
        col_lse = _lse(k, q, scale, valid, labels, labels)
        ctx.save_for_backward(q, k, scale, row_lse, col_lse, labels, valid)
        return row_lse, col_lse

    @staticmethod
    def backward(ctx, grad_rows, grad_cols):
        q, k, scale, row_lse, col_lse, labels, valid = ctx.saved_tensors
        dq = _grad(q, k, scale, valid, valid, labels, labels, (row_lse, grad_rows), (col_lse, grad_cols))
        dk = _grad(k, q, scale, valid, valid, labels, labels, (col_lse, grad_cols), (row_lse, grad_rows))
        return dq.to(q.dtype), dk.to(k.dtype), _scale_grad(q, dq, scale), None, None


def _autocast(*tensors):
    """The tensors in CUDA autocast's dtype when it is on (embeddings reach the loss in fp32 there, as
    ``F.normalize`` runs in fp32; the products must still be bf16/fp16 ones, as autocast makes the plain loss's)."""
    if tensors[0].is_cuda and torch.is_autocast_enabled("cuda"):
        dtype = torch.get_autocast_dtype("cuda")
        return tuple(t.to(dtype) for t in tensors)
    return tensors


def fused_logsumexp(q, c, scale, targets, labels=None, valid=None):
    """:func:`~mmcore.contrastive.tiled.tiled_logsumexp` (``[n]``) through the Triton kernels."""
    q, c = _autocast(q, c)
    scale = torch.as_tensor(scale, dtype=torch.float32, device=q.device)
    row_labels = labels[targets] if labels is not None else None
    return _FusedLogSumExp.apply(q, c, scale, row_labels, labels, valid)


def fused_pair_logsumexp(q, k, scale, labels=None, valid=None):
    """:func:`~mmcore.contrastive.tiled.tiled_pair_logsumexp` (``([B], [B])``) through the Triton kernels."""
    q, k = _autocast(q, k)
    scale = torch.as_tensor(scale, dtype=torch.float32, device=q.device)
    return _FusedPairLogSumExp.apply(q, k, scale, labels, valid)
