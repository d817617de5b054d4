"""A plugin whose hook returns a generator that raises GeneratorExit half-way."""

import mmcore


@mmcore.hookimpl
def mmcore_losses():
    yield from ()
    raise GeneratorExit("generator gave up")
