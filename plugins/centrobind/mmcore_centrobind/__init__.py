"""CentroBind centroid anchors for mmcore (registered through the ``mmcore`` entry-point group)."""
