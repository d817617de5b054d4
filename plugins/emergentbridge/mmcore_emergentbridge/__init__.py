"""EmergentBridge bridge anchors with orthogonal proxy alignment for mmcore (``mmcore`` entry-point group)."""
