"""Contrastive loss math: InfoNCE rows (plain and tiled) and the generic blockwise path for any row-wise loss."""
