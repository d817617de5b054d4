"""Re-running a finished run's evaluators on its test split (``mmcore eval``)."""

from __future__ import annotations

from pathlib import Path

from .embed import embed_and_evaluate
from .load import load


def evaluate_run(run_dir: Path, checkpoint: str = "last", overrides: list = ()) -> dict:
    """Re-run a trained run's evaluators on its checkpoint and its test split. Returns the metrics (nothing in the
    run is changed). The checkpoint (``last``, ``best`` or a file name in ``RUN_DIR/checkpoints``) is loaded by
    :func:`mmcore.load` (``weights_only=True``)."""
    model = load(Path(run_dir), checkpoint)
    return embed_and_evaluate(model, "test", overrides)[1]
