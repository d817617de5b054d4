"""The five component contracts as :class:`typing.Protocol` classes, and the checks the core runs on a built one.

Each ``Component.build(config, context)`` returns an object in one of these shapes. The registry checks the
structural part when it builds a component (:func:`contract_problems`: the right kind of object, the required
methods and their keywords); assembling a recipe then runs one small probe step (an encoder's output width, a
strategy's term names, a loss's row shape, an evaluator's values; see :mod:`mmcore.train.build`). Both happen in
``mmcore validate``, so a component that breaks its contract is rejected before training, naming its
distribution, not at step 1.

What the host does with each object is documented on the hook specs (:mod:`mmcore.hookspecs`).
"""

from __future__ import annotations

import inspect
from typing import Any, Mapping, Protocol, runtime_checkable


@runtime_checkable
class Encoder(Protocol):
    """An ``nn.Module``: ``forward(inputs) -> [b, embed_dim]`` for ``b`` present rows of one modality.

    ``inputs`` is a ``[b, *spec.shape]`` tensor or a dict of such tensors (``EncoderContext.input``).
    Optional: ``collate(values: list) -> batch input`` (e.g. padding variable-length token ids) and
    ``preprocess(raw) -> input`` (one raw item -> tensors), both run in DataLoader workers.
    """

    def forward(self, inputs: Any) -> Any: ...


@runtime_checkable
class AnchorStrategy(Protocol):
    """An ``nn.Module`` deciding what each modality aligns to.

    ``forward(z, present, batch) -> Alignment``; ``term_names() -> tuple[str, ...]``: the name of every term it
    makes or scores through ``AnchorContext.loss`` (fixed at build time); ``trained_pairs(observed) -> set`` of
    unordered pairs it aligns directly (every other observed pair is reported as emergent).
    """

    def forward(self, z: Mapping, present: Mapping, batch: Any) -> Any: ...

    def term_names(self) -> tuple: ...

    def trained_pairs(self, observed: frozenset) -> set: ...


@runtime_checkable
class Loss(Protocol):
    """An ``nn.Module`` scoring query rows against a candidate pool:

    ``rows(query [n, d], candidates [N, d], targets [n], candidate_labels [N] | None, candidate_valid [N] | None,
    direction, term=name) -> [n]``. Optional: ``pair_rows(query, key, labels, valid, term=) -> ([B], [B])`` (both
    directions of a symmetric term in one process), ``logit_scale`` (logged as ``train/temperature``),
    ``per_term`` (term name -> module with ``logit_scale``; names checked against the strategy's terms).
    """

    def rows(self, query, candidates, targets, candidate_labels=None, candidate_valid=None, direction="forward",
             term=None): ...


@runtime_checkable
class Evaluator(Protocol):
    """A callable ``(EmbeddedSplit) -> dict[str, float]``, optionally with ``summary_metrics``: the keys (a tuple
    of str) that summarise a run, shown by the CLI and ``mmcore report`` when present (none if absent)."""

    summary_metrics: tuple

    def __call__(self, split: Any) -> Mapping: ...


def _is_module(obj) -> bool:
    from torch import nn

    return isinstance(obj, nn.Module)


def _accepts_keyword(function, name: str) -> bool:
    try:
        parameters = inspect.signature(function).parameters
    except (TypeError, ValueError):
        return True
    return name in parameters or any(p.kind is p.VAR_KEYWORD for p in parameters.values())


def _missing(obj, names) -> list:
    return [name for name in names if not callable(getattr(obj, name, None))]


def contract_problems(kind: str, obj: Any) -> list:
    """What a built component of ``kind`` lacks, as short sentences (empty when it keeps its contract)."""
    from .contracts import DatasetSplits

    if kind == "encoders":
        return [] if _is_module(obj) else [f"build returned {type(obj).__name__}, not a torch.nn.Module"]
    if kind == "anchor_strategies":
        if not _is_module(obj):
            return [f"build returned {type(obj).__name__}, not a torch.nn.Module"]
        return [f"the strategy has no {name}() method" for name in _missing(obj, ("term_names", "trained_pairs"))]
    if kind == "losses":
        if not _is_module(obj):
            return [f"build returned {type(obj).__name__}, not a torch.nn.Module"]
        if _missing(obj, ("rows",)):
            return ["the loss has no rows(query, candidates, targets, candidate_labels, candidate_valid, "
                    "direction, term=) method"]
        problems = []
        if not _accepts_keyword(obj.rows, "term"):
            problems.append("its rows() takes no term= keyword (the core passes every term's name)")
        if callable(getattr(obj, "pair_rows", None)) and not _accepts_keyword(obj.pair_rows, "term"):
            problems.append("its pair_rows() takes no term= keyword")
        return problems
    if kind == "evaluators":
        problems = [] if callable(obj) else [f"build returned {type(obj).__name__}, which is not callable"]
        summary = getattr(obj, "summary_metrics", ())
        if not isinstance(summary, (tuple, list)) or not all(isinstance(k, str) for k in summary):
            problems.append(f"its summary_metrics must be a tuple of metric names, got {summary!r}")
        return problems
    if kind == "datasets":
        if not isinstance(obj, DatasetSplits):
            return [f"build returned {type(obj).__name__}, not mmcore.DatasetSplits"]
        problems = []
        for split in ("train", "val", "test"):
            data = getattr(obj, split)
            if not (hasattr(data, "__len__") and hasattr(data, "__getitem__")):
                problems.append(f"its {split} split is not a map-style dataset (__len__ and __getitem__)")
            elif len(data) == 0:
                problems.append(f"its {split} split is empty")
        if not obj.inputs:
            problems.append("it declares no modality inputs")
        return problems
    raise KeyError(kind)


def evaluator(function, summary_metrics=()):
    """Give a plain function ``(EmbeddedSplit) -> dict`` the evaluator contract: ``summary_metrics`` attached."""
    function.summary_metrics = tuple(summary_metrics)
    return function
