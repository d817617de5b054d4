"""Contrastive loss math: InfoNCE rows (plain and tiled) and the generic blockwise path for any row-wise loss."""

MASKED_LOGIT = -1.0e4
"""Logit given to excluded candidates: ``exp`` of it underflows to exactly 0 next to any real logit (|logit| <= the
logit-scale clamp), yet it stays finite, so rows that lose every candidate (padding rows) give no NaN gradients."""
