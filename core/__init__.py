"""mmcore: train and evaluate unified multimodal embedding spaces; methods come as plugins.

The public API a plugin may use is what this module exports (``__all__``); nothing else in ``mmcore.*`` is public.
Names that need torch are imported on first use, so ``import mmcore`` (and ``mmcore --help``) stays fast:

Contracts and data
    ``Component``, ``hookimpl``, ``ConfigError``, ``DataError``, ``InputSpec``, ``Batch``, ``AlignmentTerm``, ``Alignment``,
    ``EmbeddedSplit``, ``DatasetSplits``, the contexts (``EncoderContext``, ``AnchorContext``, ``LossContext``,
    ``EvaluatorContext``, ``DatasetContext``) and the protocols (``Encoder``, ``AnchorStrategy``, ``Loss``,
    ``Evaluator``; see :mod:`mmcore.protocols`).
Helpers for plugins
    pairs: ``anchor_terms``, ``anchor_term_names``, ``pairs_with``, ``observed_pairs``; losses: ``info_nce_rows``,
    ``info_nce_pair_rows``, ``blockwise_rows`` (any row-wise loss, tiled and gathered with no backward to write),
    ``tiled_logsumexp``, ``check_loss_kernel`` (a loss's ``kernel = "torch" | "triton"`` setting), ``add_logit_scale``, ``clamped_logit_scale``, ``MASKED_LOGIT``, ``gather_with_grad``;
    evaluation: ``evaluator``, ``recall_at_k``, ``ranks_of_positives``, ``build_index``, ``class_prototypes``;
    data: ``TensorSplit``, ``select_rows``, ``stratified_split``; encoders: ``projection_head``.
Runs
    ``load`` (a finished run as ``TrainedModel``), ``RunLoadError``, ``load_recipe``, ``RecipeError``,
    ``get_registry``, ``UnknownComponentError``; ``mmcore.testing`` for plugin tests.
"""

from .contracts import (
    KINDS,
    Alignment,
    AlignmentTerm,
    AnchorContext,
    Batch,
    Component,
    ConfigError,
    DataError,
    DatasetContext,
    DatasetSplits,
    EmbeddedSplit,
    EncoderContext,
    EvaluatorContext,
    InputSpec,
    LossContext,
    select_rows,
)
from .hookspecs import hookimpl
from .pairs import anchor_term_names, anchor_terms, observed_pairs, pairs_with
from .protocols import AnchorStrategy, Encoder, Evaluator, Loss, evaluator
from .recipe import RecipeError, load_recipe
from .registry import UnknownComponentError, get_registry

__version__ = "0.1.0"

_LAZY = {
    "TensorSplit": "mmcore.data",
    "stratified_split": "mmcore.splits",
    "projection_head": "mmcore.heads",
    "MASKED_LOGIT": "mmcore.contrastive",
    "info_nce_rows": "mmcore.contrastive.infonce",
    "info_nce_pair_rows": "mmcore.contrastive.infonce",
    "add_logit_scale": "mmcore.contrastive.infonce",
    "clamped_logit_scale": "mmcore.contrastive.infonce",
    "tiled_logsumexp": "mmcore.contrastive.tiled",
    "blockwise_rows": "mmcore.contrastive.blockwise",
    "check_loss_kernel": "mmcore.contrastive.kernels",
    "ranks_of_positives": "mmcore.builtins.evaluators",
    "build_index": "mmcore.builtins.evaluators",
    "recall_at_k": "mmcore.builtins.evaluators",
    "class_prototypes": "mmcore.builtins.evaluators",
    "recall_at_1": "mmcore.builtins.evaluators",
    "unit_rows": "mmcore.builtins.evaluators",
    "summarise_pairs": "mmcore.builtins.evaluators",
    "write_atomic": "mmcore.files",
    "atomic_output": "mmcore.files",
    "check_output": "mmcore.files",
    "OutputExists": "mmcore.files",
    "NotARegularFile": "mmcore.files",
    "file_kind": "mmcore.files",
    "open_regular": "mmcore.files",
    "read_regular": "mmcore.files",
    "replace_refusal": "mmcore.files",
    "gather_with_grad": "mmcore.train.distributed",
    "load": "mmcore.runs.load",
    "TrainedModel": "mmcore.runs.load",
    "RunLoadError": "mmcore.runs.load",
    "testing": "mmcore.testing",
}

__all__ = [
    "KINDS", "Alignment", "AlignmentTerm", "AnchorContext", "AnchorStrategy", "Batch", "Component", "ConfigError",
    "DataError", "DatasetContext", "DatasetSplits", "EmbeddedSplit", "Encoder", "EncoderContext", "Evaluator",
    "EvaluatorContext", "InputSpec", "Loss", "LossContext", "RecipeError", "UnknownComponentError",
    "anchor_term_names", "anchor_terms", "evaluator", "get_registry", "hookimpl", "load_recipe", "observed_pairs",
    "pairs_with", "select_rows", *_LAZY,
]


def __dir__():
    return sorted(set(globals()) | set(_LAZY))


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        module = importlib.import_module(_LAZY[name])
        return module if module.__name__ == f"mmcore.{name}" else getattr(module, name)
    raise AttributeError(f"module 'mmcore' has no attribute {name!r}")
