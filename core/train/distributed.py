"""Collectives over the training processes: the rank layout and a gather that keeps gradients.

The one place that chooses torch's autograd gather (its name has moved between torch releases). Every function is
the identity, or a no-op, in a single process.
"""

from __future__ import annotations

import torch


def world() -> tuple[int, int]:
    """``(world size, this rank)``; ``(1, 0)`` outside a process group."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_world_size(), torch.distributed.get_rank()
    return 1, 0


def gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    """Concatenate ``x`` (``[n, ...]``, same shape on every rank) from all ranks -> ``[world * n, ...]``.

    Gradients flow back to the rank that produced each row (the backward sums the incoming gradients across
    ranks). The identity when not distributed.
    """
    size, _ = world()
    if size == 1:
        return x
    # The autograd gather has moved between torch releases; older names warn as deprecated on newer torch.
    from torch.distributed import _functional_collectives as funcol

    gather = getattr(funcol, "all_gather_single_autograd", None) or getattr(funcol, "all_gather_tensor_autograd", None)
    if gather is not None:
        return funcol.wait_tensor(gather(x.contiguous(), 0, torch.distributed.group.WORLD))
    from torch.distributed.nn.functional import all_gather

    return torch.cat(all_gather(x), dim=0)


def gather_no_grad(x: torch.Tensor) -> torch.Tensor:
    """Like :func:`gather_with_grad` for masks and labels."""
    size, _ = world()
    if size == 1:
        return x
    parts = [torch.empty_like(x) for _ in range(size)]
    torch.distributed.all_gather(parts, x.contiguous())
    return torch.cat(parts, dim=0)


def sum_over_ranks(x: torch.Tensor) -> torch.Tensor:
    size, _ = world()
    if size == 1:
        return x
    x = x.clone()
    torch.distributed.all_reduce(x)
    return x
