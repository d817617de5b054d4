"""mmcore: train and evaluate unified multimodal embedding spaces; methods come as plugins.

The public API a plugin may use is what this module exports. Names that need torch are imported on first use, so
``import mmcore`` (and ``mmcore --help``) stays fast.
"""

from .contracts import (
    KINDS,
    Alignment,
    AlignmentTerm,
    AnchorContext,
    Batch,
    Component,
    ConfigError,
    DatasetSplits,
    EmbeddedSplit,
    EncoderContext,
    LossContext,
)
from .hookspecs import hookimpl
from .recipe import RecipeError, load_recipe
from .registry import UnknownComponentError, get_registry

__version__ = "0.1.0"

_LAZY = {
    "TensorSplit": "mmcore.data",
    "info_nce_rows": "mmcore.builtins.losses",
    "info_nce_pair_rows": "mmcore.builtins.losses",
    "add_logit_scale": "mmcore.builtins.losses",
    "clamped_logit_scale": "mmcore.builtins.losses",
    "ranks_of_positives": "mmcore.builtins.evaluators",
    "build_index": "mmcore.builtins.evaluators",
    "recall_at_k": "mmcore.builtins.evaluators",
    "class_prototypes": "mmcore.builtins.evaluators",
    "gather_with_grad": "mmcore.runner",
    "load": "mmcore.trained",
    "TrainedModel": "mmcore.trained",
    "RunLoadError": "mmcore.trained",
    "testing": "mmcore.testing",
}

__all__ = [
    "KINDS", "Alignment", "AlignmentTerm", "AnchorContext", "Batch", "Component", "ConfigError", "DatasetSplits",
    "EmbeddedSplit", "EncoderContext", "LossContext", "RecipeError", "UnknownComponentError", "get_registry",
    "hookimpl", "load_recipe", *_LAZY,
]


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        module = importlib.import_module(_LAZY[name])
        return module if module.__name__ == f"mmcore.{name}" else getattr(module, name)
    raise AttributeError(f"module 'mmcore' has no attribute {name!r}")
