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
    """``anchor``: the anchor modality (must have an encoder in the recipe). The key was ``modality`` before; it
    still works, with a warning naming ``anchor``."""

    __mmcore_renamed__ = {"modality": "anchor"}

    anchor: str


def build_imagebind(config: ImageBindConfig, context: mmcore.AnchorContext):
    from torch import nn

    if config.anchor not in context.modalities:
        raise mmcore.ConfigError(
            "anchor",
            f"anchor modality {config.anchor!r} has no encoder; modalities: {', '.join(context.modalities)}",
        )

    anchor = config.anchor

    class FixedAnchor(nn.Module):
        """Terms ``m-A`` for every non-anchor ``m``: query ``z[m]``, key ``z[A]``, rows where both are present."""

        def forward(self, z, present, batch):
            return mmcore.Alignment(mmcore.anchor_terms(z, present, anchor, context.modalities))

        def term_names(self):
            return mmcore.anchor_term_names(anchor, context.modalities)

        def trained_pairs(self, observed):
            return mmcore.pairs_with(anchor, observed)

    return FixedAnchor()


@mmcore.hookimpl
def mmcore_anchor_strategies():
    return [mmcore.Component("imagebind", ImageBindConfig, build_imagebind, "fixed anchor modality (ImageBind)")]
