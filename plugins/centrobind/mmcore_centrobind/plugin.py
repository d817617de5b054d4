"""Anchor strategy ``centrobind``: a per-sample centroid of all present modalities as the anchor (CentroBind,
"Anchors Aweigh! Sail for Optimal Unified Multi-Modal Representations", arXiv 2410.02086).

Instead of one fixed anchor modality, every sample's anchor is the (weighted) mean of its present modalities'
normalised embeddings; every modality, including what would have been the anchor, is aligned to it with the
recipe's symmetric contrastive loss. The paper's code is not public: the treatment of normalisation, gradients,
the aligned modality's own share of its centroid and missing modalities are settings of ours (see
``CentroBindConfig`` and ``plugins/centrobind/README.md``).
"""

import math
from typing import Any

import attrs

import mmcore

from .centroid import centroid_keys, co_present


def _positive_weights(instance, attribute, value):
    for name, weight in value.items():
        if not (isinstance(weight, (int, float)) and math.isfinite(weight) and weight > 0):
            raise ValueError(f"'{attribute.name}.{name}' must be a finite number > 0, got {weight!r}")


def _bool_or_auto(instance, attribute, value):
    if not (isinstance(value, bool) or value == "auto"):
        raise ValueError(f"'{attribute.name}' must be true, false or \"auto\", got {value!r}")


@attrs.frozen
class CentroBindConfig:
    """Settings of the centroid anchor (defaults: the reading in the project's methods notes, except that
    ``leave_one_out`` is ``"auto"``, not ``false``: see the README).

    renormalize:    re-normalise the centroid to unit length (else the raw weighted mean, of norm <= 1, is the key)
    detach_anchor:  stop the gradient through the centroid: each term only moves its query modality
    leave_one_out:  ``true``: the key of modality ``m`` is the centroid of the *other* present modalities;
                    ``false``: the paper's literal centroid, ``m`` included; ``"auto"`` (default): per sample,
                    ``true``'s key with exactly two present modalities (where the literal centroid is met without
                    aligning anything, and collapses sparse pairing) and ``false``'s with three or more, so
                    fully paired data gets the paper's centroid. Measured (plugin README): only ``true`` beats a
                    weak fixed anchor on kNN and matches a strong one with three modalities.
    weights:        modality -> weight > 0 in the weighted mean (modalities not named weigh 1.0); every name must
                    be a recipe modality
    """

    renormalize: bool = attrs.field(default=True, validator=attrs.validators.instance_of(bool))
    detach_anchor: bool = attrs.field(default=False, validator=attrs.validators.instance_of(bool))
    leave_one_out: Any = attrs.field(default="auto", validator=_bool_or_auto)
    weights: dict[str, float] = attrs.field(factory=dict, validator=_positive_weights)


def _every_row_has_every_modality(batch, modalities) -> bool:
    """Whether the host already knows that every row of ``batch`` has every modality (``Batch.rows``): then
    ``"auto"`` is one setting for the whole batch, computed as that setting alone (no per-row choice)."""
    rows = getattr(batch, "rows", None) or {}
    return all(isinstance(rows.get(m), str) for m in modalities)


def build_centrobind(config: CentroBindConfig, context: mmcore.AnchorContext):
    from torch import nn

    unknown = [m for m in config.weights if m not in context.modalities]
    if unknown:
        raise mmcore.ConfigError(
            "weights", f"unknown modality {unknown[0]!r}; modalities: {', '.join(context.modalities)}")
    if len(context.modalities) < 2:
        raise mmcore.ConfigError("name", "a centroid anchor needs at least two modalities")
    modalities = tuple(context.modalities)
    weights = dict(config.weights)

    class CentroidAnchor(nn.Module):
        """One term per modality ``m``: query ``z[m]`` ``[B, d]``, key its centroid ``[B, d]``, rows where ``m``
        is present and the sample has at least two present modalities. No parameters of its own."""

        def forward(self, z, present, batch):
            z = {m: z[m] for m in modalities}
            present = {m: present[m].bool() for m in modalities}
            leave_one_out = config.leave_one_out
            if leave_one_out == "auto" and _every_row_has_every_modality(batch, modalities):
                leave_one_out = len(modalities) == 2  # "auto"'s choice for every row, read on the host
            keys = centroid_keys(z, present, weights, config.renormalize, config.detach_anchor, leave_one_out)
            enough = co_present(present)
            terms = [mmcore.AlignmentTerm(f"{m}-centroid", z[m], keys[m], present[m] & enough)
                     for m in modalities]
            return mmcore.Alignment(terms)

        def term_names(self):
            return tuple(f"{m}-centroid" for m in modalities)

        def trained_pairs(self, observed):
            """Every observed pair: co-present modalities are tied to each other through their shared centroid."""
            return set(observed)

    return CentroidAnchor()


@mmcore.hookimpl
def mmcore_anchor_strategies():
    return [mmcore.Component("centrobind", CentroBindConfig, build_centrobind,
                             "per-sample centroid of the present modalities (CentroBind)")]
