"""The cached contrastive step (GradCache, Gao et al. 2021): the full batch's gradient with one chunk's activations.

A contrastive loss needs every query scored against every candidate of the batch, so splitting the batch into
micro-batches (gradient accumulation) changes the objective. The cached step keeps the objective and splits only
the encoders' work:

1. :func:`embed_without_graph`: each encoder runs on at most ``chunk`` present rows at a time, without a graph;
   the raw outputs ``[k, d]`` are kept as leaves, with each chunk's RNG state (dropout is replayed exactly).
2. The anchor strategy and the loss run on the leaves as usual (plain, tiled or across ranks), with their graph.
3. :func:`backward_through_encoders`: ``d loss / d leaves`` and the gradients of the strategy's and the loss's own
   parameters in one ``autograd.grad``; then each chunk's encoder runs again, with a graph, and that chunk's slice
   of the leaf gradient is back-propagated into the encoder's parameters.

Peak memory is one chunk's activations per encoder plus the ``[B, d]`` embeddings, whatever ``B``. The price is a
second forward of every trained encoder (frozen ones run once).

How it fits Lightning's automatic optimization (so clipping, schedules, checkpoints, the non-finite guard and DDP
work unchanged): all chunks but each encoder's last are back-propagated inside the training step; the step returns
a *surrogate* loss, equal in value to the loss, whose backward (run by Lightning) back-propagates the last chunk of
every encoder and hands the strategy's and the loss's parameters their gradients. Under DDP the reducer ignores
gradient hooks until the forward has returned, and then sees every trained parameter reach its final gradient
exactly once in that backward, so its all-reduce averages the whole accumulated gradient. The module skips
Lightning's ``zero_grad`` (which runs between the step and the backward) and clears gradients itself at the start
of the step.

Exact for any strategy and loss that see the batch only through the embeddings (centroids over the whole batch,
parameters of their own, aux losses, per-term temperatures). Not exact for encoders whose output for a row depends
on the other rows of its call (BatchNorm in training mode: statistics per chunk, and running statistics updated on
both passes), as in every GradCache.
"""

from __future__ import annotations

import attrs
import torch

from ..contracts import select_rows


@attrs.define
class EncoderCache:
    """One modality's outputs of the graph-free pass.

    raw:    ``[k, d]`` raw encoder outputs on the present rows (a leaf that requires grad when the encoder trains)
    index:  ``[k]`` present rows of the batch, or None when every row is present
    chunks: ``(slice of raw's rows, RNG state)`` per encoder call, in call order
    """

    raw: torch.Tensor
    index: torch.Tensor | None
    chunks: list


def trains(module: torch.nn.Module) -> bool:
    """Whether any parameter of ``module`` is trained (frozen towers run once, LoRA-adapted ones twice)."""
    return any(p.requires_grad for p in module.parameters())


def _rng_state(device: torch.device) -> tuple:
    cuda = torch.cuda.get_rng_state(device) if device.type == "cuda" else None
    return torch.get_rng_state(), cuda


def _replay(encoder, inputs, state: tuple, device: torch.device) -> torch.Tensor:
    """The encoder's output on ``inputs`` with the RNG as it was at the graph-free call; the RNG is left as found."""
    cpu, cuda = state
    devices = [device] if cuda is not None else []
    with torch.random.fork_rng(devices=devices):
        torch.set_rng_state(cpu)
        if cuda is not None:
            torch.cuda.set_rng_state(cuda, device)
        return encoder(inputs)


def embed_without_graph(encoder, inputs, index, count: int, chunk: int, device: torch.device) -> EncoderCache:
    """Run ``encoder`` on the ``count`` present rows (``index``: their batch rows, None for all) ``chunk`` rows at a
    time with no graph (``count = 0``: once, on zero rows). Returns the :class:`EncoderCache`; ``raw`` requires grad when the encoder trains."""
    parts, chunks = [], []
    with torch.no_grad():
        # no present row: one call on zero rows, as the plain step makes (under DDP every encoder that ran must
        # reach the final backward)
        for start in range(0, count, chunk) if count else (0,):
            rows = slice(start, min(start + chunk, count))
            chosen = select_rows(inputs, rows if index is None else index[rows])
            chunks.append((rows, _rng_state(device)))
            parts.append(encoder(chosen))
    # autocast caches its low-precision copies of the weights for the rest of the step; made here, under no_grad,
    # they carry no graph, and the replay would reuse them: no gradient would ever reach those weights
    torch.clear_autocast_cache()
    raw = torch.cat(parts) if len(parts) > 1 else parts[0]
    return EncoderCache(raw.requires_grad_(trains(encoder) and torch.is_grad_enabled()), index, chunks)


def backward_through_encoders(total: torch.Tensor, encoders: dict, inputs: dict, caches: dict, own: list,
                              device: torch.device) -> torch.Tensor:
    """Back-propagate ``total`` (a scalar computed from the caches' leaves) into every trained encoder, chunk by chunk.

    ``encoders``/``inputs``/``caches``: per modality; ``own``: the other trainable parameters ``total`` depends on
    (the strategy's, the loss's). Returns the surrogate loss: ``total``'s value; its backward finishes the
    gradient (each encoder's last chunk, and ``own``'s gradients), see the module docstring.
    """
    leaves = [m for m, cache in caches.items() if cache.raw.requires_grad]
    wanted = [caches[m].raw for m in leaves] + own
    grads = torch.autograd.grad(total, wanted, allow_unused=True) if wanted else ()
    finish = []
    for m, grad in zip(leaves, grads):
        if grad is None:  # no term used this modality in this batch
            continue
        cache = caches[m]
        for i, (rows, state) in enumerate(cache.chunks):
            chosen = select_rows(inputs[m], rows if cache.index is None else cache.index[rows])
            out = _replay(encoders[m], chosen, state, device)
            part = grad[rows].to(out.dtype)
            if i < len(cache.chunks) - 1:
                torch.autograd.backward(out, part)
            else:
                finish.append((out * part).sum())
    for p, grad in zip(own, grads[len(leaves):]):
        if grad is not None:
            finish.append((p * grad).sum())
    surrogate = total.detach()
    for term in finish:
        surrogate = surrogate + (term - term.detach()).to(surrogate.dtype)
    return surrogate
