"""Components that ship with mmcore, registered through the same hooks as any plugin (like pytest's own plugins)."""
