"""Which implementation computes the tiled InfoNCE log-sum-exps: the PyTorch tiles or the fused Triton kernels.

``kernel = "torch"`` (the default): :mod:`mmcore.contrastive.tiled`, on any device. ``kernel = "triton"``:
:mod:`mmcore.contrastive.fused` on CUDA tensors of width up to :data:`~mmcore.contrastive.fused.MAX_DIM` (and on any
tensor under ``TRITON_INTERPRET=1``); the PyTorch tiles elsewhere (the probe step of ``mmcore validate`` runs on the
CPU). Both give the same values and gradients; the choice is speed only, and ``"triton"`` stays opt-in until the
GPU benchmark (``benchmarks/fused_loss.py``) has measured it faster. It applies to the tiled loss only
(``tile_size > 0``): the plain loss is one cuBLAS product.
"""

from __future__ import annotations

import importlib.util
import os

KERNELS = ("torch", "triton")


def check_loss_kernel(kernel: str, tile_size: int) -> None:
    """``mmcore.ConfigError("kernel", ...)`` unless ``kernel`` can run with ``tile_size`` here."""
    from ..contracts import ConfigError

    if kernel not in KERNELS:
        raise ConfigError("kernel", f"must be one of {', '.join(map(repr, KERNELS))}, got {kernel!r}")
    if kernel == "triton" and tile_size <= 0:
        raise ConfigError("kernel", '"triton" is the tiled loss\'s kernel: set tile_size (e.g. 8192) as well')
    if kernel == "triton" and importlib.util.find_spec("triton") is None:
        raise ConfigError("kernel", '"triton" needs Triton: pip install triton')


def use_fused(kernel: str, tensor) -> bool:
    """Whether the Triton kernels compute this call (``tensor``: the queries ``[n, d]``)."""
    if kernel != "triton":
        return False
    interpreted = os.environ.get("TRITON_INTERPRET", "") == "1"
    from .fused import MAX_DIM

    return (tensor.is_cuda or interpreted) and tensor.shape[1] <= MAX_DIM
