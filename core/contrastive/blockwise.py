"""Row-wise losses computed in blocks, for any loss, with autograd's own backward (no hand-written gradient).

A plugin writes the loss of one block of the similarity matrix, ``block(scores, positive, allowed) -> [tn]``, and
:func:`blockwise_rows` applies it to every block and merges the blocks of a row: ``reduce="sum"`` adds them (a
loss that is a sum over candidates, such as SigLIP's sigmoid loss), ``reduce="logsumexp"`` log-sum-exps them (the
denominator of a softmax loss: InfoNCE is ``blockwise_rows(lse_block, ...) - positive logit``).

``tile_size = 0`` is the plain path: one block, the whole ``[n, N]`` matrix, kept for backward as autograd keeps
it. ``tile_size > 0`` visits ``tile x tile`` blocks, each under ``torch.utils.checkpoint`` (non-reentrant), so
backward recomputes a block instead of keeping it: peak memory ``O((n + N) d + tile^2 + n N / tile)`` (the last
term: one ``[tn]`` output per block, kept to merge the blocks). Parameters the block captures (a scale, a bias)
get their gradients through the checkpoint. Masks are rebuilt inside each block from the ``[N]`` vectors.

The cost: the forward runs every block twice (once forward, once in backward), like any activation checkpoint;
:mod:`mmcore.contrastive.tiled` is the hand-written, faster form for InfoNCE.
"""

from __future__ import annotations

import torch
from torch.utils.checkpoint import checkpoint

REDUCTIONS = ("sum", "logsumexp")


def _blocks(n: int, tile: int) -> list[slice]:
    """Consecutive slices of ``range(n)``, each ``tile`` long (the last one shorter)."""
    return [slice(start, min(start + tile, n)) for start in range(0, n, tile)]


def _block_masks(targets, row_labels, candidate_labels, candidate_valid, rows: slice, cols: slice):
    """``(positive, allowed)`` of block ``(rows, cols)``, both bool ``[tn, tN]`` (``allowed`` None: all allowed).

    positive: True at each row's target column. allowed: the candidate is valid and, with labels, has the label of
    the row's positive (``row_labels = candidate_labels[targets]``). Built from ``[n]`` and ``[N]`` vectors only.
    """
    col_ids = torch.arange(cols.start, cols.stop, device=targets.device)
    positive = targets[rows, None] == col_ids[None, :]
    shape = positive.shape
    allowed = None
    if candidate_valid is not None:
        allowed = candidate_valid[cols][None, :].expand(shape)
    if candidate_labels is not None:
        same = candidate_labels[cols][None, :] == row_labels[rows][:, None]
        allowed = same if allowed is None else allowed & same
    return positive, allowed


def _block_rows(block, query_blk, cand_blk, targets, row_labels, candidate_labels, candidate_valid, rows: slice,
                cols: slice):
    """``block`` applied to block ``(rows, cols)``: fp32 scores ``query_blk @ cand_blk.T`` (the rows and columns
    of the block) and the block's masks, made here (so a checkpoint recomputes them rather than keeping them);
    returns ``[tn]``."""
    positive, allowed = _block_masks(targets, row_labels, candidate_labels, candidate_valid, rows, cols)
    return block(_at_least_fp32(query_blk @ cand_blk.T), positive, allowed)


def _at_least_fp32(scores):
    """bf16/fp16 products become fp32; fp32 and fp64 stay as they are."""
    return scores if scores.dtype in (torch.float32, torch.float64) else scores.float()


def _merge(parts: list, reduce: str):
    """Merge the ``[tn]`` outputs of a row block's column blocks."""
    if len(parts) == 1:
        return parts[0]
    stacked = torch.stack(parts, dim=0)  # [column blocks, tn]
    return stacked.sum(0) if reduce == "sum" else torch.logsumexp(stacked, dim=0)


def blockwise_rows(block, query, candidates, targets, candidate_labels=None, candidate_valid=None,
                   tile_size: int = 0, reduce: str = "sum"):
    """``[n]`` row losses of ``query`` against ``candidates``, one ``block`` of the similarity matrix at a time.

    block:            ``block(scores, positive, allowed) -> [tn]``, a pure function of one block:
                      scores ``[tn, tN]``, the raw products ``query_blk @ cand_blk.T`` (computed in the inputs'
                      dtype, handed over as fp32; fp64 stays fp64): the block applies its own scale and bias, and
                      tensors it captures get gradients; positive ``[tn, tN]`` bool, True at each row's target
                      column; allowed ``[tn, tN]`` bool, or None when every candidate is allowed. Entries that are
                      not allowed must not change the result: the block masks them out
    query:            ``[n, d]``
    candidates:       ``[N, d]``
    targets:          ``[n]`` long, column of each row's positive in ``candidates``
    candidate_labels: optional ``[N]`` long modality ids: row ``i`` is allowed only the candidates whose id equals
                      its positive's id (MAMCL's rule)
    candidate_valid:  optional ``[N]`` bool; invalid candidates are not allowed
    tile_size:        0: one block (builds ``[n, N]``); ``> 0``: ``tile_size x tile_size`` blocks, each
                      checkpointed, so no ``[n, N]`` tensor exists in forward or backward
    reduce:           ``"sum"``: row = sum of its blocks' outputs; ``"logsumexp"``: row = their log-sum-exp
    Returns ``[n]`` (the block's dtype, fp32 for fp32 scores). Tiled and plain agree to rounding, values and
    gradients, whenever ``block`` is row-wise and merges along columns as ``reduce`` says.
    """
    if reduce not in REDUCTIONS:
        raise ValueError(f"reduce must be one of {REDUCTIONS}, got {reduce!r}")
    if tile_size < 0:
        raise ValueError(f"tile_size must be >= 0, got {tile_size}")
    n, big_n = query.shape[0], candidates.shape[0]
    row_labels = None if candidate_labels is None else candidate_labels[targets]
    vectors = (targets, row_labels, candidate_labels, candidate_valid)
    if tile_size == 0 or n == 0 or big_n == 0:
        return _block_rows(block, query, candidates, *vectors, slice(0, n), slice(0, big_n))
    # split once: each block's gradient is then [tile, d], summed per piece, and one concatenation in backward
    # (slicing inside the loops would give every block a zero-padded [n, d] / [N, d] gradient)
    row_blocks, col_blocks = _blocks(n, tile_size), _blocks(big_n, tile_size)
    query_pieces, cand_pieces = query.split(tile_size), candidates.split(tile_size)
    out = []
    for rows, query_blk in zip(row_blocks, query_pieces):
        parts = [checkpoint(_block_rows, block, query_blk, cand_blk, *vectors, rows, cols, use_reentrant=False)
                 for cols, cand_blk in zip(col_blocks, cand_pieces)]
        out.append(_merge(parts, reduce))
    return torch.cat(out)
