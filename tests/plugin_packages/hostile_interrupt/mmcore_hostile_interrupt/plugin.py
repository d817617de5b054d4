"""A plugin that raises KeyboardInterrupt of its own while it is imported (no Ctrl-C was pressed)."""

raise KeyboardInterrupt
