"""The centroid anchor of one batch: a weighted mean of the *present* modalities' normalised embeddings.

Pure functions over ``{modality: tensor}`` dicts; torch is imported inside them so that importing this module
stays free. Shapes: ``z[m]`` is ``[B, d]`` (L2-normalised rows), ``present[m]`` is ``[B]`` bool.
"""


def co_present(present: dict, minimum: int = 2):
    """``[B]`` bool: the samples with at least ``minimum`` present modalities (the only ones that get a term)."""
    import torch

    counts = torch.stack([p.long() for p in present.values()]).sum(0)
    return counts >= minimum


def centroid(z: dict, present: dict, weights: dict, members, renormalize: bool = True):
    """Weighted mean of ``z[m]`` over ``members`` that are present in each row -> ``[B, d]``.

    ``c_i = sum_m w_m p_im z_im / sum_m w_m p_im`` over ``m in members``, where ``p_im`` is 1 when modality ``m``
    is present in row ``i``; re-normalised to unit length when ``renormalize``. A row with no present member is
    all zeros (callers mask it out). ``weights`` maps a modality to its weight (missing modalities weigh 1).
    """
    import torch
    import torch.nn.functional as F

    members = list(members)
    first = z[members[0]]
    total = torch.zeros(first.shape[:1], dtype=first.dtype, device=first.device)
    summed = torch.zeros_like(first)
    for m in members:
        w = float(weights.get(m, 1.0)) * present[m].to(first.dtype)  # [B]
        summed = summed + w[:, None] * z[m]
        total = total + w
    mean = summed / total.clamp_min(torch.finfo(first.dtype).tiny)[:, None]
    return F.normalize(mean, dim=-1) if renormalize else mean


def centroid_keys(z: dict, present: dict, weights: dict | None = None, renormalize: bool = True,
                  detach: bool = False, leave_one_out: bool = False) -> dict:
    """The key each modality is aligned to: ``{m: [B, d]}``.

    Without ``leave_one_out`` every modality gets the same centroid of all present modalities (the same tensor
    object); with it, modality ``m`` gets the centroid of the present modalities other than ``m``. ``detach``
    stops the gradient through the centroid (the query side ``z[m]`` keeps its gradient).
    """
    weights = weights or {}
    source = {m: v.detach() for m, v in z.items()} if detach else z
    if not leave_one_out:
        shared = centroid(source, present, weights, list(z), renormalize)
        return {m: shared for m in z}
    return {m: centroid(source, present, weights, [o for o in z if o != m], renormalize) for m in z}
