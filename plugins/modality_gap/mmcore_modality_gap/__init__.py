"""Modality-gap diagnostics for mmcore (evaluator ``modality_gap``, registered through the ``mmcore`` entry-point
group). The math lives in :mod:`.measures` (gap, collapse, principal angles) and :mod:`.remedies` (shared-space
projection, hyperplane rotation); :mod:`.plugin` turns it into metrics."""
