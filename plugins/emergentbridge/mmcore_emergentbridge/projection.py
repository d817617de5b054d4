"""Per-sample projections away from the anchor-alignment direction.

Two ways to keep the proxy term from moving a new modality's embedding along its anchor direction:

- :func:`project_out` projects *vectors*: ``P_i v = v - (v . u_i) u_i`` with ``u_i`` a unit vector per row. Used
  inside the loss (``projection = "loss"``): the gradient of any function of ``P_i v`` w.r.t. ``v`` lies in
  ``u_i``-perp because ``P_i`` is a symmetric projection.
- :func:`project_gradient` projects *gradients*: identity in the forward pass, and in the backward pass removes from
  each row's incoming gradient its components along that row's orthonormal directions (``projection =
  "gradient"``).

Shapes: ``n`` rows, ``d`` dims, ``k`` directions per row.
"""

import functools


def project_out(v, u):
    """``[n, d], [n, d] -> [n, d]``: ``v_i - (v_i . u_i) u_i``. ``u`` rows must be unit vectors (or zero)."""
    return v - (v * u).sum(-1, keepdim=True) * u


def orthonormal_directions(directions, eps: float = 1e-12):
    """Gram-Schmidt per row: ``[n, k, d] -> [n, k, d]`` orthonormal rows spanning the same subspace.

    A direction that is (numerically) inside the span of the previous ones, or zero, becomes a zero row, so it
    removes nothing. Runs without gradient: the result is a constant of the backward pass.
    """
    import torch

    with torch.no_grad():
        basis = []
        for j in range(directions.shape[1]):
            e = directions[:, j]
            for previous in basis:
                e = project_out(e, previous)
            norm = e.norm(dim=-1, keepdim=True)
            scale = torch.linalg.vector_norm(directions[:, j], dim=-1, keepdim=True)
            keep = norm > eps + 1e-6 * scale
            basis.append(torch.where(keep, e / norm.clamp_min(eps), torch.zeros_like(e)))
        return torch.stack(basis, dim=1)


@functools.cache
def _project_gradient_function():
    import torch

    class ProjectGradient(torch.autograd.Function):
        """``forward(x [n, d], basis [n, k, d]) = x``; ``backward``: ``g_i - sum_k (g_i . e_ik) e_ik``.

        ``basis`` must hold orthonormal (or zero) rows per sample, see :func:`orthonormal_directions`.
        """

        @staticmethod
        def forward(ctx, x, basis):
            ctx.save_for_backward(basis)
            return x.view_as(x)

        @staticmethod
        def backward(ctx, grad):
            (basis,) = ctx.saved_tensors
            basis = basis.to(grad.dtype)
            coefficients = torch.einsum("bd,bkd->bk", grad, basis)
            return grad - torch.einsum("bk,bkd->bd", coefficients, basis), None

    return ProjectGradient


def project_gradient(x, basis):
    """``x`` unchanged, but the gradient flowing back into ``x`` loses its components along ``basis``.

    x:     ``[n, d]``
    basis: ``[n, k, d]`` orthonormal (or zero) directions per row (a constant: no gradient flows into it)
    """
    return _project_gradient_function().apply(x, basis.detach())
