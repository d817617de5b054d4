"""Built-in encoder: an MLP projection head."""

import attrs

from ..hookspecs import hookimpl
from ..contracts import Component


@attrs.frozen
class MLPConfig:
    """``hidden``: widths of the hidden layers (``[]`` gives a linear projection); ``dropout`` after each."""

    hidden: list[int] = attrs.field(factory=lambda: [256])
    dropout: float = attrs.field(default=0.0, validator=attrs.validators.and_(attrs.validators.ge(0.0),
                                                                              attrs.validators.lt(1.0)))
    layer_norm: bool = True


def build_mlp(config: MLPConfig, context):
    """``[B, input_dim] -> [B, embed_dim]``: Linear-(LayerNorm)-GELU-(Dropout) blocks, then a linear projection."""
    from torch import nn

    layers, width = [], context.input_dim
    for size in config.hidden:
        layers += [nn.Linear(width, size)]
        if config.layer_norm:
            layers += [nn.LayerNorm(size)]
        layers += [nn.GELU()]
        if config.dropout:
            layers += [nn.Dropout(config.dropout)]
        width = size
    layers.append(nn.Linear(width, context.embed_dim))
    return nn.Sequential(*layers)


@hookimpl
def mmcore_encoders():
    return [Component("mlp", MLPConfig, build_mlp, "MLP projection head (hidden widths, dropout, layer norm)")]
