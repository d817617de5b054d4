"""Loss ``mamcl``: UNITE's modal-aware masked contrastive loss (Kong et al., arXiv 2505.19650).

Every pair of an :class:`mmcore.AlignmentTerm` carries a modality id (``term.labels``, ``[B]`` long: the modality
of its candidate, compositions distinct). Row ``i`` competes only against candidates ``j`` whose id equals the id
of its own positive; the positive itself is always kept::

    L_i = -log( exp(s q_i.c_i) / sum_j 1[label_j == label_i] exp(s q_i.c_j) )

so the candidates of another modality are never negatives and modalities stop competing. The mask is rebuilt from
the ``[N]`` ids by :func:`mmcore.info_nce_rows`; it is never a ``[B, B]`` tensor in this interface, so the loss is
exact under the runner's cross-rank gather (the ids are gathered with the candidates).

Directions. ``forward`` (query -> candidate) is always masked. ``reverse`` (candidate -> query) is masked when
``mask_reverse = true`` (our default): row ``j`` then competes against the queries whose positive has the same
modality id as its own. UNITE's released training code masks ``sim_q2c`` only and builds ``sim_c2q`` from the
unmasked similarities, so its reverse term has every query as a negative: ``mask_reverse = false`` reproduces that.

Temperature: UNITE fixes it at 0.03 (``temperature = 0.03``, ``learnable = false``); the logit scale is clamped at
``max_logit_scale`` like the built-in ``infonce`` (0.03 is a scale of 33, below the default clamp of 100).
Without labels (``candidate_labels is None``) the loss is plain InfoNCE.
"""

import functools
from typing import Literal

import attrs

import mmcore


@attrs.frozen
class MAMCLConfig:
    """``temperature``: fixed (or initial) temperature, 0.03 as in UNITE; ``learnable``: train it (UNITE: no);
    ``max_logit_scale``: clamp on ``1 / temperature``; ``mask_reverse``: also mask the
    candidate -> query direction (UNITE leaves it unmasked; see the module docstring); ``tile_size``: 0 for the
    plain loss, or the block size of the tiled one that never builds ``[B, B]`` (same values and gradients, for
    large batches; labels are masked per block); ``kernel``: ``"torch"`` or ``"triton"``, who computes the tiles
    (``mmcore.check_loss_kernel``: the fused Triton kernels on CUDA, opt-in)."""

    temperature: float = attrs.field(default=0.03, validator=attrs.validators.gt(0.0))
    learnable: bool = False
    max_logit_scale: float = attrs.field(default=100.0, validator=attrs.validators.gt(0.0))
    mask_reverse: bool = True
    tile_size: int = attrs.field(default=0, validator=attrs.validators.ge(0))
    kernel: Literal["torch", "triton"] = "torch"


def masked_directions(mask_reverse: bool) -> frozenset:
    """The directions whose negatives are restricted to the positive's modality."""
    return frozenset({"forward", "reverse"} if mask_reverse else {"forward"})


@functools.cache
def _make_mamcl_module():
    from torch import nn

    class MAMCL(nn.Module):
        """Row-wise MAMCL; the runner pairs the two directions and gathers candidates. Owns the log logit scale."""

        def __init__(self, config: MAMCLConfig):
            super().__init__()
            mmcore.add_logit_scale(self, config.temperature, config.learnable, config.max_logit_scale)
            self.masked = masked_directions(config.mask_reverse)
            self.tile_size = config.tile_size
            self.kernel = config.kernel

        @property
        def logit_scale(self):
            """Scalar ``s = 1 / temperature``, clamped at ``max_logit_scale`` (as the built-in ``infonce``)."""
            return mmcore.clamped_logit_scale(self)

        def rows(self, query, candidates, targets, candidate_labels=None, candidate_valid=None, direction="forward",
                 term=None):
            """``[n]`` row losses of ``query`` (``[n, d]``) against ``candidates`` (``[N, d]``).

            targets: ``[n]`` column of each row's positive; candidate_labels: ``[N]`` modality id per pair, or None
            (then plain InfoNCE); candidate_valid: ``[N]`` bool, invalid candidates are never negatives; term: the
            term's name (the core always passes it; unused).
            """
            if direction not in ("forward", "reverse"):
                raise ValueError(f"direction must be 'forward' or 'reverse', got {direction!r}")
            labels = candidate_labels if direction in self.masked else None
            return mmcore.info_nce_rows(query, candidates, targets, self.logit_scale, labels, candidate_valid,
                                        self.tile_size, self.kernel)

    return MAMCL


def build_mamcl(config: MAMCLConfig, context: mmcore.LossContext):
    """An ``nn.Module`` with ``rows(...)`` and ``logit_scale`` (the loss contract)."""
    mmcore.check_loss_kernel(config.kernel, config.tile_size)
    return _make_mamcl_module()(config)
