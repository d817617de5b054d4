"""Loss ``siglip``: SigLIP's pairwise sigmoid loss (Zhai et al., "Sigmoid Loss for Language Image Pre-Training",
ICCV 2023), row-wise for mmcore's loss contract.

Every (query, candidate) pair is an independent binary classification: positive for the row's own target,
negative otherwise. Row ``i`` of query ``q_i`` against the allowed candidates ``c_j``::

    L_i = sum_j allowed_ij * -log sigmoid(z_ij * (t * q_i.c_j + b)),    z_ij = +1 if j == target_i else -1

``t`` is a learnable scale (``t = exp(t')``, ``t'`` initialised at ``log 10``, clamped at ``max_logit_scale``) and
``b`` a learnable bias (initialised at -10, so the many negatives start with a small loss). The core averages the
rows over the valid rows of the global batch, which is the paper's ``-1/|B| sum_i sum_j``. ``allowed_ij``: the
candidate is valid and, with ``candidate_labels``, has the modality id of row ``i``'s positive (as MAMCL), so
invalid candidates and candidates of other modalities contribute nothing.

Both directions of a symmetric term sum the same pairs (row ``i`` of one is column ``i`` of the other), so the
core's average of the two equals the one-direction loss; with labels the rule is symmetric too.

Computed only through :func:`mmcore.blockwise_rows` with ``reduce="sum"``: ``tile_size = 0`` builds the
``[n, N]`` matrix, ``tile_size > 0`` checkpoints ``tile x tile`` blocks (same values and gradients, autograd's own
backward).
"""

import torch
import torch.nn.functional as F
from torch import nn

import mmcore


def sigmoid_block(scale, bias):
    """The block function of :func:`mmcore.blockwise_rows` for scale ``t`` and bias ``b`` (scalar tensors, which
    receive gradients): ``[tn]`` sums over the block's allowed columns of ``-log sigmoid(z (t s + b))``."""

    def block(scores, positive, allowed):
        logits = scores * scale + bias
        losses = -F.logsigmoid(torch.where(positive, logits, -logits))
        if allowed is not None:
            losses = losses.masked_fill(~allowed, 0.0)
        return losses.sum(1)

    return block


class SigLIP(nn.Module):
    """Row-wise sigmoid loss. Owns ``log_logit_scale`` (``t'``) and ``logit_bias`` (``b``), parameters when
    ``learnable``, else buffers (checkpointed either way)."""

    def __init__(self, config):
        super().__init__()
        mmcore.add_logit_scale(self, 1.0 / config.scale_init, config.learnable, config.max_logit_scale)
        bias = torch.tensor(float(config.bias_init))
        if config.learnable:
            self.logit_bias = nn.Parameter(bias)
        else:
            self.register_buffer("logit_bias", bias)
        self.tile_size = config.tile_size

    @property
    def logit_scale(self):
        """Scalar ``t``, clamped at ``max_logit_scale`` (the core logs ``1 / t`` as ``train/temperature``)."""
        return mmcore.clamped_logit_scale(self)

    def rows(self, query, candidates, targets, candidate_labels=None, candidate_valid=None, direction="forward",
             term=None):
        """``[n]`` row losses of ``query`` (``[n, d]``) against ``candidates`` (``[N, d]``).

        targets: ``[n]`` column of each row's positive; candidate_labels: ``[N]`` modality id per candidate, or
        None; candidate_valid: ``[N]`` bool, invalid candidates contribute nothing. ``direction`` and ``term`` do
        not change the loss (one scale and bias for every term and both directions).
        """
        if direction not in ("forward", "reverse"):
            raise ValueError(f"direction must be 'forward' or 'reverse', got {direction!r}")
        block = sigmoid_block(self.logit_scale, self.logit_bias)
        return mmcore.blockwise_rows(block, query, candidates, targets, candidate_labels, candidate_valid,
                                     tile_size=self.tile_size, reduce="sum")
