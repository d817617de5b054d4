"""A plugin whose hook raises KeyboardInterrupt of its own (no Ctrl-C was pressed)."""

import mmcore


@mmcore.hookimpl
def mmcore_encoders():
    raise KeyboardInterrupt("from the plugin")
