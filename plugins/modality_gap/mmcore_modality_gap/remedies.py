"""The two post-hoc remedies of Yi, Douady & Chen (2025); their effect is measured with ``mmcore.recall_at_1``.

- Shared-space projection: keep the principal-vector directions common to both modalities' principal subspaces,
  project both modalities onto them and re-normalise. For a principal pair ``(u_i, v_i)`` at angle ``theta_i``
  the shared direction is the bisector ``w_i = (u_i + v_i) / |u_i + v_i|``; the ``w_i`` are orthonormal (principal
  vectors satisfy ``u_i . v_j = cos(theta_i) delta_ij``), and ``w_i = u_i = v_i`` when ``theta_i = 0``.
- Hyperplane rotation: orthogonal Procrustes on paired rows, ``R = argmin |b R - a|_F`` over orthogonal ``R``
  (``U S Vt = svd(b.T @ a)``, ``R = U Vt``), uncentred: a rotation about the sphere's centre keeps unit vectors
  unit, and rotating ``b``'s subspace onto ``a``'s is the remedy.

Shapes: rows ``[n, d]``; bases ``[d, k]``.
"""

from __future__ import annotations

import numpy as np

from .measures import principal_vectors


def shared_directions(basis_a, basis_b, max_angle_deg: float = 45.0, rank: int = 0) -> np.ndarray:
    """Orthonormal shared directions ``[d, r]`` of two principal subspaces.

    ``rank > 0``: the ``rank`` principal pairs of smallest angle; otherwise every pair with angle below
    ``max_angle_deg``. ``r`` may be 0 (no common direction).
    """
    theta, u, v = principal_vectors(basis_a, basis_b)
    keep = min(rank, len(theta)) if rank > 0 else int((theta < max_angle_deg).sum())
    w = u[:, :keep] + v[:, :keep]
    return w / np.linalg.norm(w, axis=0, keepdims=True) if keep else w


def project(z, directions) -> np.ndarray:
    """Coordinates of rows ``z`` (``[n, d]``) on orthonormal ``directions`` (``[d, r]``), re-normalised
    -> ``[n, r]`` float32 (rows with no component stay zero)."""
    coords = np.asarray(z, dtype=np.float64) @ directions
    norms = np.linalg.norm(coords, axis=1, keepdims=True)
    return (coords / np.maximum(norms, 1e-12)).astype(np.float32)


def procrustes_rotation(source, target) -> np.ndarray:
    """Orthogonal ``R`` (``[d, d]``) minimising ``|source @ R - target|_F`` over paired rows ``[n, d]`` (uncentred).

    With fewer than ``d`` independent pairs ``R`` is determined only on their span (the rest is an arbitrary
    orthogonal completion).
    """
    u, _, vt = np.linalg.svd(np.asarray(source, dtype=np.float64).T @ np.asarray(target, dtype=np.float64))
    return u @ vt
