"""Geometry of two modalities in one embedding space: the gap, pair cosines, collapse and principal angles.

All functions take numpy arrays of row vectors (``[n, d]``; the evaluator passes L2-normalised float32
embeddings) and compute in float64. Following Liang et al. (2022) and Yi, Douady & Chen (2025):

- gap vector ``delta = mean(a) - mean(b)`` and gap ``|delta|``; angle between ``mean(a)`` and ``mean(b)``;
- paired cosines: true pairs ``cos(a_i, b_i)`` against random pairs ``cos(a_i, b_pi(i))`` (``pi`` a seeded
  derangement), paired alignment error ``mean(1 - cos(a_i, b_i))``;
- dimension collapse: effective rank ``exp(H(p))`` with ``p = s / sum(s)`` over the singular values ``s``
  (Roy & Vetterli 2007), and ``k_energy``: the fewest directions holding ``energy`` (0.99) of ``sum(s**2)``;
- principal subspace: the top ``k_energy`` right singular vectors; principal angles between two subspaces
  ``theta = arccos(svdvals(Ua.T @ Ub))``, smallest first.

Centring (a choice; the paper's code is not public): by default nothing is centred. The spectra and subspaces are
those of the raw (uncentred) second moment ``Z.T @ Z``: the linear subspace through the sphere's centre in which a
modality lives, mean direction included. That is the "hyperplane" of the subspace-constraint analysis, and the
mean direction is what makes the gap. ``center=True`` removes each modality's mean first (the covariance spectrum).
"""

from __future__ import annotations

import numpy as np


NOISE_FLOOR = 1e-6
"""Singular values below this fraction of the largest are numerical zeros (see :func:`spectrum`)."""


def _rows(x) -> np.ndarray:
    return np.asarray(x, dtype=np.float64)


def _unit(v: np.ndarray) -> np.ndarray:
    norm = np.linalg.norm(v, axis=-1, keepdims=True)
    return v / np.maximum(norm, 1e-12)


def _degrees_between(u: np.ndarray, v: np.ndarray) -> float:
    """Angle between two vectors ``[d]`` in degrees (0 when either is zero)."""
    nu, nv = np.linalg.norm(u), np.linalg.norm(v)
    if nu < 1e-12 or nv < 1e-12:
        return 0.0
    return float(np.degrees(np.arccos(np.clip(u @ v / (nu * nv), -1.0, 1.0))))


def gap(a, b) -> dict:
    """Liang's gap between paired sets ``a, b`` (``[n, d]`` each).

    Returns ``gap`` = ``|mean(a) - mean(b)|`` and ``mean_angle_deg`` = angle between the two mean vectors.
    """
    mean_a, mean_b = _rows(a).mean(0), _rows(b).mean(0)
    return {"gap": float(np.linalg.norm(mean_a - mean_b)), "mean_angle_deg": _degrees_between(mean_a, mean_b)}


def derangement(n: int, seed: int) -> np.ndarray:
    """A seeded permutation ``pi`` of ``range(n)`` with no fixed point (``n >= 2``): ``pi[i] != i``.

    Built as a random cyclic order: ``order`` shuffled, each element sent to its successor in the cycle.
    """
    order = np.random.default_rng(seed).permutation(n)
    pi = np.empty(n, dtype=np.int64)
    pi[order] = np.roll(order, -1)
    return pi


def pair_cosines(a, b, seed: int = 0) -> dict:
    """True-pair against random-pair cosines of paired rows ``a[i] <-> b[i]`` (``[n, d]``, ``n >= 2``).

    ``cos_true`` = mean cos(a_i, b_i); ``cos_random`` = mean cos(a_i, b_pi(i)) for a seeded derangement ``pi``;
    ``align_error`` = mean(1 - cos(a_i, b_i)). Rows are normalised here, so unnormalised input is fine.
    """
    a, b = _unit(_rows(a)), _unit(_rows(b))
    true = np.einsum("ij,ij->i", a, b)
    random = np.einsum("ij,ij->i", a, b[derangement(len(a), seed)])
    return {"cos_true": float(true.mean()), "cos_random": float(random.mean()),
            "align_error": float(np.mean(1.0 - true))}


def spectrum(z, center: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Singular values ``[d]`` (descending) and right singular vectors ``[d, d]`` (columns) of ``z`` (``[n, d]``).

    Computed from the ``d x d`` second moment ``z.T @ z`` (``eigh`` in float64), so memory is ``O(d^2)`` whatever
    ``n``. ``center``: subtract the column mean first. Singular values below ``NOISE_FLOOR * s_max`` are set to 0:
    float32 embeddings carry about 7 digits, and the Gram's eigenvalues are exact only to ``eps * s_max**2``, so a
    truly zero direction comes out as about ``1e-8 * s_max``, which would otherwise nudge the effective rank.
    """
    z = _rows(z)
    if center:
        z = z - z.mean(0)
    eigenvalues, vectors = np.linalg.eigh(z.T @ z)
    order = np.argsort(eigenvalues)[::-1]
    s = np.sqrt(np.clip(eigenvalues[order], 0.0, None))
    s[s < NOISE_FLOOR * s[0]] = 0.0
    return s, vectors[:, order]


def effective_rank(singular_values) -> float:
    """``exp(-sum p log p)`` with ``p = s / sum(s)`` (zeros skipped); 0 for an all-zero spectrum.

    Equals ``k`` for ``k`` equal non-zero singular values and lies in ``[1, k]`` otherwise.
    """
    s = np.asarray(singular_values, dtype=np.float64)
    total = s.sum()
    if total <= 0:
        return 0.0
    p = s[s > 0] / total
    return float(np.exp(-(p * np.log(p)).sum()))


def energy_rank(singular_values, energy: float = 0.99) -> int:
    """The fewest leading singular directions whose ``sum(s**2)`` reaches ``energy`` of the total (``k99``)."""
    power = np.asarray(singular_values, dtype=np.float64) ** 2
    total = power.sum()
    if total <= 0:
        return 0
    cumulative = np.cumsum(power) / total
    return int(np.searchsorted(cumulative, energy - 1e-12) + 1)


def principal_basis(z, energy: float = 0.99, center: bool = False) -> np.ndarray:
    """Orthonormal basis ``[d, k]`` of the principal subspace of ``z`` (``[n, d]``), ``k = energy_rank``."""
    s, vectors = spectrum(z, center)
    return vectors[:, :energy_rank(s, energy)]


def collapse(z, energy: float = 0.99, center: bool = False) -> dict:
    """Dimension-collapse measures of one modality ``z`` (``[n, d]``): ``erank`` and ``k`` (= ``k_energy``)."""
    s, _ = spectrum(z, center)
    return {"erank": effective_rank(s), "k": energy_rank(s, energy)}


def principal_vectors(basis_a, basis_b) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Principal angles and vectors between ``span(basis_a)`` and ``span(basis_b)`` (orthonormal ``[d, ka]``,
    ``[d, kb]``).

    Returns ``(theta_deg [r], u [d, r], v [d, r])`` with ``r = min(ka, kb)``, angles ascending, ``u[:, i]`` in A and
    ``v[:, i]`` in B with ``u_i . v_j = cos(theta_i) * delta_ij`` (both sets orthonormal).
    """
    p, cosines, qt = np.linalg.svd(basis_a.T @ basis_b, full_matrices=False)
    theta = np.degrees(np.arccos(np.clip(cosines, -1.0, 1.0)))
    return theta, basis_a @ p, basis_b @ qt.T


def principal_angles(basis_a, basis_b) -> np.ndarray:
    """Principal angles in degrees, smallest first: ``arccos(svdvals(Ua.T @ Ub))``."""
    return principal_vectors(basis_a, basis_b)[0]
