"""ImageBind-style fixed anchors for mmcore (registered through the ``mmcore`` entry-point group)."""
