"""A plugin that prints at import and in its hook, then replaces sys.stdout: mmcore's stdout must stay data."""

import os
import sys

import attrs

import mmcore

print("hostile-print: printed at import")
sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - the hostile act itself


@attrs.frozen
class NoConfig:
    pass


def build(config, context):
    print("hostile-print: printed in build")
    from torch import nn

    return nn.Linear(context.input_dim, context.embed_dim)


@mmcore.hookimpl
def mmcore_encoders():
    print("hostile-print: printed in mmcore_encoders")
    return [mmcore.Component("hostile_print_linear", NoConfig, build)]
