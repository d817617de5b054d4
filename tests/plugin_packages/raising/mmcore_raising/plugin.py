"""A plugin that imports fine but raises inside a hook call."""

import mmcore


@mmcore.hookimpl
def mmcore_losses():
    raise RuntimeError("this plugin's hook is broken")
