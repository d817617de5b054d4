"""A third-party plugin as a user would write it: a linear encoder and a mean-cosine evaluator."""

import attrs

import mmcore


@attrs.frozen
class LinearConfig:
    bias: bool = True


def build_linear(config, context):
    from torch import nn

    return nn.Linear(context.input_dim, context.embed_dim, bias=config.bias)


@attrs.frozen
class PairCosineConfig:
    pass


def build_pair_cosine(config, context):
    def evaluate(split):
        a, b = split.modalities[:2]
        rows = split.present[a] & split.present[b]
        return {"example/pair_cosine": float((split.z[a][rows] * split.z[b][rows]).sum(1).mean())}

    return evaluate


@mmcore.hookimpl
def mmcore_encoders():
    return [mmcore.Component("example_linear", LinearConfig, build_linear)]


@mmcore.hookimpl
def mmcore_evaluators():
    return [mmcore.Component("example_pair_cosine", PairCosineConfig, build_pair_cosine)]
