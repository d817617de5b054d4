"""Built-in loss ``infonce``: its settings and registration (the module is in ``infonce.py``, the math in
:mod:`mmcore.contrastive.infonce`).

A loss is row-wise: ``rows(query, candidates, targets, candidate_labels, candidate_valid, direction)`` returns the
loss of each query row against the whole candidate pool, ``[n]``; ``direction`` is ``"forward"`` (query -> key) or
``"reverse"`` (key -> query) and ``candidate_labels`` are the pairs' modality ids (``AlignmentTerm.labels``). The
runner pairs the two directions of a symmetric term, drops masked rows, gathers the candidates of every rank and
averages; a loss never re-implements any of that. A loss whose ``rows`` takes ``term=`` gets the term's name.
"""

from typing import Literal

import attrs

from ..contracts import Component
from ..hookspecs import hookimpl


@attrs.frozen
class TermTemperature:
    """``[loss.per_term]`` entry: one term's own temperature, fixed unless ``learnable``."""

    temperature: float = attrs.field(validator=attrs.validators.gt(0.0))
    learnable: bool = False


@attrs.frozen
class InfoNCEConfig:
    """``temperature``: initial (or fixed) temperature; ``learnable``: train it; ``max_logit_scale``: clamp on
    ``1 / temperature`` (100 as in CLIP and ImageBind); ``tile_size``: 0 for the plain loss, or the block size
    of the tiled loss that never builds the ``[B, B]`` logits (same values and gradients, for large batches);
    ``per_term``: temperatures of their own for some terms, by term name, e.g. ImageBind's fixed per-modality
    ones: ``audio-image = { temperature = 0.05 }``. Other terms share ``temperature``. The names are checked
    against the anchor strategy's terms before training. ``kernel``: ``"torch"`` (the PyTorch tiles) or
    ``"triton"`` (fused Triton kernels on CUDA, same values and gradients, opt-in until measured faster; see
    :mod:`mmcore.contrastive.kernels`); for the tiled loss only."""

    temperature: float = attrs.field(default=0.07, validator=attrs.validators.gt(0.0))
    learnable: bool = True
    max_logit_scale: float = attrs.field(default=100.0, validator=attrs.validators.gt(0.0))
    tile_size: int = attrs.field(default=0, validator=attrs.validators.ge(0))
    per_term: dict[str, TermTemperature] = attrs.field(factory=dict)
    kernel: Literal["torch", "triton"] = "torch"


def build_infonce(config: InfoNCEConfig, context):
    from ..contrastive.kernels import check_loss_kernel
    from .infonce import InfoNCE

    check_loss_kernel(config.kernel, config.tile_size)
    return InfoNCE(config)


@hookimpl
def mmcore_losses():
    return [Component("infonce", InfoNCEConfig, build_infonce, "symmetric InfoNCE, learnable clamped temperature")]
