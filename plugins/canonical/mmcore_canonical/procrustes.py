"""One orthogonal map between two embedding spaces, up to a mean shift (Gupta et al. 2026, arXiv 2602.17584).

Given paired anchors ``x`` (source model) and ``y`` (target model), both ``[n, d]``::

    mu_x, mu_y = mean(x), mean(y)
    U, S, Vt = svd((x - mu_x).T @ (y - mu_y))
    R = U @ Vt                               # [d, d], orthogonal: argmin |(x - mu_x) R - (y - mu_y)|_F
    apply: y ~ (x - mu_source) @ R + mu_target

The same ``R`` serves every modality; each modality ``m`` uses its own means ``mu_source[m]``, ``mu_target[m]``.

With ``n <= d`` anchors the centred anchors span at most ``n - 1`` dimensions: ``R`` is determined only on that
span (it maps it exactly as the data say) and is an arbitrary orthogonal completion elsewhere, so held-out points
are mapped poorly. ``mmcore align`` reports how results change with the number of anchors.
"""

from __future__ import annotations

import numpy as np


def fit_procrustes(source, target) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Fit on paired rows ``source``, ``target`` (``[n, d]`` each) -> ``(R [d, d], mu_source [d], mu_target [d])``.

    ``R`` is orthogonal (``R.T @ R = I``) and minimises ``|(source - mu_source) R - (target - mu_target)|_F``.
    Computed in float64.
    """
    x, y = np.asarray(source, dtype=np.float64), np.asarray(target, dtype=np.float64)
    if x.shape != y.shape or x.ndim != 2:
        raise ValueError(f"source and target must be paired [n, d] arrays, got {x.shape} and {y.shape}")
    mu_x, mu_y = x.mean(0), y.mean(0)
    u, _, vt = np.linalg.svd((x - mu_x).T @ (y - mu_y))
    return u @ vt, mu_x, mu_y


def apply(x, rotation, mean_source, mean_target) -> np.ndarray:
    """Map source-space rows ``x`` (``[n, d]``) into the target space: ``(x - mean_source) @ rotation + mean_target``.

    The result is not re-normalised (callers that search by cosine normalise it)."""
    return (np.asarray(x, dtype=np.float64) - mean_source) @ rotation + mean_target


def relative_residual(mapped, target) -> float:
    """``|mapped - target|_F / |target|_F`` (``[n, d]`` each; the target uncentred)."""
    target = np.asarray(target, dtype=np.float64)
    return float(np.linalg.norm(np.asarray(mapped, dtype=np.float64) - target) / np.linalg.norm(target))
