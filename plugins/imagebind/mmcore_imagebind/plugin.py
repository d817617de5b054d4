"""Anchor strategy ``imagebind``: one fixed anchor modality (Girdhar et al., 2023).

Every other modality ``m`` is aligned to the anchor ``A`` with symmetric InfoNCE on the samples where both are
present. No pair of non-anchor modalities is ever trained together: their alignment must *emerge* through ``A``.
Freeze the anchor's encoder with ``frozen = true`` in its ``[encoders.<A>]`` section to bind new modalities into a
pretrained space, as ImageBind does.
"""

import attrs

import mmcore


@attrs.frozen
class ImageBindConfig:
    """``modality``: the anchor modality (must have an encoder in the recipe)."""

    modality: str


def build_imagebind(config: ImageBindConfig, context: mmcore.AnchorContext):
    from torch import nn

    if config.modality not in context.modalities:
        raise mmcore.ConfigError(
            "modality",
            f"anchor modality {config.modality!r} has no encoder; modalities: {', '.join(context.modalities)}",
        )

    anchor = config.modality

    class FixedAnchor(nn.Module):
        """Terms ``m-A`` for every non-anchor ``m``: query ``z[m]``, key ``z[A]``, rows where both are present."""

        def forward(self, z, present, batch):
            terms = [
                mmcore.AlignmentTerm(f"{m}-{anchor}", z[m], z[anchor], present[m] & present[anchor])
                for m in context.modalities if m != anchor
            ]
            return mmcore.Alignment(terms)

        def trained_pairs(self, observed):
            return {pair for pair in observed if anchor in pair}

    return FixedAnchor()


@mmcore.hookimpl
def mmcore_anchor_strategies():
    return [mmcore.Component("imagebind", ImageBindConfig, build_imagebind, "fixed anchor modality (ImageBind)")]
