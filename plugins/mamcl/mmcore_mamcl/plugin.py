"""The ``mamcl`` plugin's hooks: loss ``mamcl``, anchor strategy ``query_target``, dataset ``mixed_targets``,
evaluator ``mixed_pool``. Each component lives in its own module; see their docstrings."""

import mmcore

from .anchor import QueryTargetConfig, build_query_target
from .loss import MAMCLConfig, build_mamcl
from .mixed_pool import MixedPoolConfig, build_mixed_pool
from .mixed_targets import MixedTargetsConfig, build_mixed_targets


@mmcore.hookimpl
def mmcore_losses():
    return [mmcore.Component("mamcl", MAMCLConfig, build_mamcl,
                             "UNITE's modal-aware masked contrastive loss (negatives of the positive's modality)")]


@mmcore.hookimpl
def mmcore_anchor_strategies():
    return [mmcore.Component("query_target", QueryTargetConfig, build_query_target,
                             "one term: each query against its present target, labelled by target modality")]


@mmcore.hookimpl
def mmcore_datasets():
    return [mmcore.Component("mixed_targets", MixedTargetsConfig, build_mixed_targets,
                             "queries retrieving targets of mixed modalities a, b, a+b")]


@mmcore.hookimpl
def mmcore_evaluators():
    return [mmcore.Component("mixed_pool", MixedPoolConfig, build_mixed_pool,
                             "retrieval in one gallery of every target modality (stress test)")]
