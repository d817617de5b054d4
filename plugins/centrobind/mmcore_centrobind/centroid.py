"""The centroid anchor of one batch: a weighted mean of the *present* modalities' normalised embeddings.

Pure functions over ``{modality: tensor}`` dicts; torch is imported inside them so that importing this module
stays free. Shapes: ``z[m]`` is ``[B, d]`` (L2-normalised rows), ``present[m]`` is ``[B]`` bool.
"""


def present_counts(present: dict):
    """``[B]`` long: how many of the modalities in ``present`` each sample has."""
    import torch

    return torch.stack([p.long() for p in present.values()]).sum(0)


def co_present(present: dict, minimum: int = 2):
    """``[B]`` bool: the samples with at least ``minimum`` present modalities (the only ones that get a term)."""
    return present_counts(present) >= minimum


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
                  detach: bool = False, leave_one_out: bool | str = "auto") -> dict:
    """The key each modality is aligned to: ``{m: [B, d]}``.

    ``leave_one_out``:

    - ``False``: every modality gets the same centroid of all present modalities (the same tensor object);
    - ``True``: modality ``m`` gets the centroid of the present modalities other than ``m`` (with two present,
      simply the other one's embedding);
    - ``"auto"``: per row, ``True``'s key where the row has exactly two present modalities, ``False``'s where it
      has three or more. With two, the shared centroid ``normalize(z_m + z_o)`` holds ``z_m`` itself:
      ``z_m . c = sqrt((1 + z_m . z_o) / 2)`` is already 0.71 for unrelated embeddings, so the term is met
      without aligning ``m`` to ``o`` (plugins/centrobind/README.md, "Sparse pairing").

    ``detach`` stops the gradient through the centroid (the query side ``z[m]`` keeps its gradient). Rows with
    fewer than two present modalities get junk keys (callers mask them out).
    """
    import torch

    if leave_one_out not in (True, False, "auto"):
        raise ValueError(f"leave_one_out must be True, False or 'auto', got {leave_one_out!r}")
    weights = weights or {}
    source = {m: v.detach() for m, v in z.items()} if detach else z
    if leave_one_out is False:
        shared = centroid(source, present, weights, list(z), renormalize)
        return {m: shared for m in z}
    others = {m: centroid(source, present, weights, [o for o in z if o != m], renormalize) for m in z}
    if leave_one_out is True:
        return others
    # both keys, chosen per row on the device (no host sync): each row's value is exactly what that row's setting
    # alone computes, and so is its gradient up to the order of the sums (the other key gets a zero gradient; empty
    # rows' keys stay finite)
    shared = centroid(source, present, weights, list(z), renormalize)
    rows = (present_counts(present) == 2)[:, None]  # [B, 1]: rows with exactly two present modalities
    return {m: torch.where(rows, others[m], shared) for m in z}
