"""The objective: a contrastive term's mean loss over the global batch, for any loss in the loss contract."""

from __future__ import annotations

import torch
from torch import nn

from .distributed import gather_no_grad, gather_with_grad, sum_over_ranks, world


def term_loss(loss: nn.Module, term) -> torch.Tensor:
    """Mean contrastive loss of one :class:`mmcore.AlignmentTerm` over the global batch's valid rows.

    Each rank scores its own query rows against the candidates of every rank (gathered with gradients, with their
    masks and labels). Rank ``r`` returns ``world * (sum of its valid rows' losses) / (valid rows on all ranks)``:
    the gather's backward sums gradients over ranks and DDP averages them, so the update equals the single-process
    gradient of the global mean. A symmetric term averages its query->key and key->query directions. Rows outside
    ``term.mask`` are passed to the loss (shapes stay equal across ranks) but never counted, and are never
    negatives (``candidate_valid``).
    """
    size, rank = world()
    mask = term.mask.bool()
    n = mask.shape[0]
    mask_all = gather_no_grad(mask)
    labels = None if term.labels is None else gather_no_grad(term.labels)
    if term.symmetric and size == 1 and hasattr(loss, "pair_rows"):  # one matmul for both directions
        rows, back = loss.pair_rows(term.query, term.key, labels, mask_all, term=term.name)
        if every_row_known(mask):  # the masked mean below, to the bit, in a third of the operations
            return (rows.sum() + back.sum()) / 2 / n
        total = (torch.where(mask, rows, 0.0).sum() + torch.where(mask, back, 0.0).sum()) / 2
    else:
        targets = torch.arange(n, device=mask.device) + rank * n
        rows = loss.rows(term.query, gather_with_grad(term.key), targets, labels, mask_all, "forward",
                         term=term.name)
        total = torch.where(mask, rows, 0.0).sum()
        if term.symmetric:
            back = loss.rows(term.key, gather_with_grad(term.query), targets, labels, mask_all, "reverse",
                             term=term.name)
            total = (total + torch.where(mask, back, 0.0).sum()) / 2
    count = sum_over_ranks(mask.sum().to(rows.dtype)).clamp_min(1.0)
    return total * size / count


def every_row_known(mask: torch.Tensor) -> bool:
    """Whether every row of a ``[B]`` bool mask is set, where reading it costs no wait for a device: on the CPU.
    On an accelerator this is False without looking (reading the mask there would make the host wait for the
    device every step), and the masked computation runs; it gives the same values."""
    return mask.device.type == "cpu" and bool(mask.all())
