"""The ``siglip`` plugin's hook: loss ``siglip``. Importing it imports attrs and mmcore only, never torch; the
module class is in :mod:`mmcore_siglip.loss`, imported by the build."""

import math

import attrs

import mmcore


def _finite(instance, attribute, value):
    if not math.isfinite(value):
        raise ValueError(f"{attribute.name} must be finite, got {value}")


@attrs.frozen
class SigLIPConfig:
    """``scale_init``: initial (or fixed) logit scale ``t`` (SigLIP: 10, i.e. ``t' = log 10``); ``bias_init``:
    initial (or fixed) logit bias ``b`` (SigLIP: -10); ``learnable``: train ``t`` and ``b`` (SigLIP: yes);
    ``max_logit_scale``: clamp on ``t`` (as the built-in ``infonce``; must be >= ``scale_init``); ``tile_size``:
    0 for the plain loss (builds ``[B, B]``), or the block size of the tiled one (same values and gradients, no
    ``[B, B]`` kept; see ``mmcore.blockwise_rows``)."""

    scale_init: float = attrs.field(default=10.0, validator=[attrs.validators.gt(0.0), _finite])
    bias_init: float = attrs.field(default=-10.0, validator=_finite)
    learnable: bool = True
    max_logit_scale: float = attrs.field(default=100.0, validator=attrs.validators.gt(0.0))
    tile_size: int = attrs.field(default=0, validator=attrs.validators.ge(0))


def build_siglip(config: SigLIPConfig, context):
    """An ``nn.Module`` with ``rows(...)`` and ``logit_scale`` (the loss contract)."""
    if config.scale_init > config.max_logit_scale:
        raise mmcore.ConfigError("scale_init", f"{config.scale_init} is above max_logit_scale "
                                               f"{config.max_logit_scale}: the scale would start clamped")
    from .loss import SigLIP

    return SigLIP(config)


@mmcore.hookimpl
def mmcore_losses():
    return [mmcore.Component("siglip", SigLIPConfig, build_siglip,
                             "SigLIP's pairwise sigmoid loss, learnable scale and bias, optionally tiled")]
