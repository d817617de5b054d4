"""Assembling a recipe: build every component, check it against its contract, and put them in a module.

:func:`assemble` builds the dataset, then :func:`build_model` builds the encoders, loss, strategy and evaluators
from the recipe and the dataset's input specs alone (so a finished run rebuilds its model without its data), then
:func:`probe` runs one small step on real training rows, without gradients and with the RNG untouched, to check
what only running can show: encoder output widths, the strategy's term names, the loss's row shapes and the
evaluators' values. Every problem becomes a :class:`mmcore.RecipeError` line naming the recipe path and the
component's distribution, so ``mmcore validate`` rejects what would otherwise crash at step 1.
"""

from __future__ import annotations

import functools
import numbers

import attrs
import lightning as L
import torch

from ..contracts import (Alignment, AnchorContext, Batch, DataError, DatasetContext, EmbeddedSplit, EncoderContext,
                         EvaluatorContext, LossContext, input_spec)
from ..recipe import Recipe, RecipeError, nearest_hint
from ..registry import ComponentBuildError, Registry, get_registry
from .data import BindingData
from .module import BindingModule
from .objective import term_loss

PROBE_ROWS = 16
"""Training samples used by the probe step."""


def build_component(registry: Registry, kind: str, name: str, config, context, path: str):
    """:meth:`Registry.build`, its problems raised as recipe errors."""
    try:
        return registry.build(kind, name, config, context, path)
    except ComponentBuildError as exc:
        raise RecipeError(exc.problems) from exc


def build_dataset(recipe: Recipe, registry: Registry | None = None):
    """The recipe's dataset splits, checked against the recipe's encoders."""
    registry = registry or get_registry()
    splits = build_component(registry, "datasets", recipe.dataset.name, recipe.dataset.config,
                             DatasetContext(recipe.seed, recipe.modalities), "dataset")
    problems = [
        f"encoders.{m}: the dataset {recipe.dataset.name!r} has no modality {m!r}; it has: " + ", ".join(splits.inputs)
        for m in recipe.encoders if m not in splits.inputs
    ]
    if problems:
        raise RecipeError(problems)
    return splits


def build_model(recipe: Recipe, inputs: dict, observed_pairs: frozenset, class_names: tuple = (),
                registry: Registry | None = None, prompts: tuple = (), pretrained: bool = True) -> BindingModule:
    """Encoders, loss, anchor strategy and evaluators of a recipe, from the input specs (modality ->
    :class:`mmcore.InputSpec`) and the observed pairs alone: no dataset is needed.

    ``pretrained = False`` when the weights come from a checkpoint next (encoders then skip reading pretrained
    weights); ``prompts``: the dataset's zero-shot prompt templates."""
    registry = registry or get_registry()
    modalities = recipe.modalities
    observed = frozenset(p for p in observed_pairs if p <= set(modalities))
    encoders, problems = {}, []
    for m, section in recipe.encoders.items():  # every encoder's problems at once (e.g. each missing library)
        try:
            encoders[m] = build_component(registry, "encoders", section.name, section.config,
                                          EncoderContext(m, input_spec(inputs[m]), recipe.embed_dim, pretrained),
                                          f"encoders.{m}")
        except RecipeError as exc:
            problems += exc.problems
    if problems:
        raise RecipeError(problems)
    problems = [f"encoders.{m}: {_owner(registry, 'encoders', recipe.encoders[m].name)} has no preprocess(raw, "
                f"train=) method, so it cannot take the dataset's raw {input_spec(inputs[m]).media} inputs; use an "
                "encoder for raw media" for m, encoder in encoders.items()
                if input_spec(inputs[m]).media and not callable(getattr(encoder, "preprocess", None))]
    if problems:
        raise RecipeError(problems)
    loss = build_component(registry, "losses", recipe.loss.name, recipe.loss.config, LossContext(recipe.embed_dim),
                           "loss")
    evaluator_context = EvaluatorContext(modalities, recipe.embed_dim, {m: input_spec(inputs[m]) for m in modalities})
    evaluators = [build_component(registry, "evaluators", e.name, e.config, evaluator_context, f"evaluators[{i}]")
                  for i, e in enumerate(recipe.evaluators)]
    module = BindingModule(recipe, encoders, loss, evaluators, observed, tuple(class_names),
                           {m: input_spec(inputs[m]) for m in modalities}, tuple(prompts))
    anchor_context = AnchorContext(modalities, observed, recipe.embed_dim, functools.partial(term_loss, module.loss))
    module.strategy = build_component(registry, "anchor_strategies", recipe.anchor.name, recipe.anchor.config,
                                      anchor_context, "anchor")
    _check_term_names(module, recipe, registry)
    return module


def assemble(recipe: Recipe, registry: Registry | None = None) -> tuple[BindingModule, BindingData]:
    """Build every component of a recipe and probe them (see the module docstring). Raises RecipeError for
    settings that are invalid in context and for components that break their contracts."""
    registry = registry or get_registry()
    L.seed_everything(recipe.seed, workers=True, verbose=False)
    splits = build_dataset(recipe, registry)
    module = build_model(recipe, splits.inputs, splits.observed_pairs, splits.class_names, registry,
                         splits.prompts)
    module.source_names = tuple(splits.source_names)
    check_something_to_train(module, splits.train, recipe, registry)
    data = BindingData(splits, recipe.trainer.batch_size, recipe.trainer.num_workers, recipe.seed,
                       module.collators())
    probe(module, data, recipe, registry)
    if recipe.trainer.compile:
        for m in list(module.encoders):
            module.encoders[m] = torch.compile(module.encoders[m])
    return module, data


# ------------------------------------------------------------------------------------------ contract checks


def _owner(registry: Registry, kind: str, name: str) -> str:
    return f"{name!r} (from {registry.distribution_of(kind, name)})"


def _check_term_names(module: BindingModule, recipe: Recipe, registry: Registry) -> None:
    """The declared term names: strings, distinct, and every ``per_term`` setting of the loss names one."""
    who = _owner(registry, "anchor_strategies", recipe.anchor.name)
    try:
        names = tuple(module.strategy.term_names())
    except Exception as exc:  # noqa: BLE001
        raise RecipeError([f"anchor: {who}: term_names() failed: {type(exc).__name__}: {exc}"]) from exc
    if not all(isinstance(n, str) and n for n in names) or len(set(names)) != len(names):
        raise RecipeError([f"anchor: {who}: term_names() must return distinct non-empty strings, got {names!r}"])
    problems = [f"loss.per_term.{name}: the anchor strategy makes no term {name!r}"
                f"{nearest_hint(name, names, 'its terms')}"
                for name in getattr(module.loss, "per_term", {}) if name not in names]
    if problems:
        raise RecipeError(problems)


def _never_present(train, modalities) -> list:
    """The modalities whose presence mask is all False in the training split, for a split that exposes its masks
    (``train.present``: modality -> ``[N]``, as :class:`mmcore.TensorSplit` does); ``[]`` when it does not."""
    present = getattr(train, "present", None)
    if not isinstance(present, dict):
        return []
    try:
        return [m for m in modalities if m in present and not bool(torch.as_tensor(present[m]).bool().any())]
    except (TypeError, ValueError, RuntimeError):  # masks of another kind: nothing to say
        return []


def check_something_to_train(module: BindingModule, train, recipe: Recipe, registry: Registry) -> None:
    """RecipeError unless the anchor strategy trains at least one pair the training split observes
    (``module.trained_pairs``): otherwise a run would end "successfully" with its weights untouched. The lines
    name what is missing: modalities never present (when the split exposes its presence masks) or never observed
    with another one, and no pair observed at all."""
    modalities = recipe.modalities
    if module.trained_pairs:
        _check_every_encoder_trains(module, train, modalities)
        return
    observed = module.observed_pairs
    absent = _never_present(train, modalities)
    problems = [f"dataset: modality {m!r} is never present in the training split" for m in absent]
    if not observed:
        problems.append(f"dataset: no two modalities of the recipe ({', '.join(modalities)}) are ever observed "
                        "together in the training split: there is nothing to align")
    else:
        problems += [f"dataset: modality {m!r} is never observed together with another modality in the training "
                     "split" for m in modalities if m not in absent and not any(m in pair for pair in observed)]
        pairs = ", ".join(sorted("-".join(sorted(p)) for p in observed))
        problems.append(f"anchor: {_owner(registry, 'anchor_strategies', recipe.anchor.name)} trains none of the "
                        f"pairs the training split observes ({pairs}): nothing would be trained")
    raise RecipeError(problems)


def _check_every_encoder_trains(module: BindingModule, train, modalities) -> None:
    """RecipeError for a modality with trainable weights that is in none of the pairs the anchor strategy trains
    (never present in the training split, or never observed with a modality it is trained against): its encoder
    would keep its initial weights, and every figure of it would be noise."""
    trained = {m for pair in module.trained_pairs for m in pair}
    idle = [m for m in modalities if m not in trained and m in module.encoders
            and any(p.requires_grad for p in module.encoders[m].parameters())]
    if not idle:
        return
    absent = set(_never_present(train, idle))
    pairs = ", ".join(sorted("-".join(sorted(p)) for p in module.trained_pairs))
    raise RecipeError([f"dataset: modality {m!r} is "
                       + ("never present in the training split" if m in absent else
                          "in none of the pairs the training split observes and the anchor strategy trains")
                       + f" ({pairs}): its encoder would keep its initial weights; give it paired training data, "
                       f"freeze it (encoders.{m}.frozen = true) or leave it out of the recipe" for m in idle])


def probe(module: BindingModule, data: BindingData, recipe: Recipe, registry: Registry | None = None) -> None:
    """One forward step on the first :data:`PROBE_ROWS` training samples (no gradients, RNG untouched), checking
    each component's output against its contract. Raises RecipeError naming the component and distribution."""
    registry = registry or get_registry()
    train = data.splits.train
    rows = list(range(min(PROBE_ROWS, len(train))))
    try:
        batch = Batch.from_collated(data.fetch(train, rows))
    except DataError as exc:
        raise RecipeError([f"dataset: reading the first {len(rows)} training samples: {exc}"]) from exc
    size = batch.size
    was_training = module.training
    with torch.no_grad(), torch.random.fork_rng(devices=[]):
        module.eval()
        try:
            z = _probe_encoders(module, batch, recipe, registry)
            alignment = _probe_strategy(module, z, batch, recipe, registry)
            _probe_loss(module, alignment, size, recipe, registry)
            _probe_evaluators(module, z, batch, recipe, registry)
        finally:
            module.train(was_training)


def _probe_encoders(module, batch, recipe, registry) -> dict:
    z = {}
    for m, section in recipe.encoders.items():
        who = _owner(registry, "encoders", section.name)
        present = batch.present[m].bool()
        index = module.present_rows(present)
        try:
            out = module.encode_present(m, batch.inputs[m], index)
        except Exception as exc:  # noqa: BLE001
            raise RecipeError([f"encoders.{m}: {who} failed on a batch of {module.inputs[m].describe()} inputs: "
                               f"{type(exc).__name__}: {exc}"]) from exc
        expected = (int(present.sum()), recipe.embed_dim)
        if not isinstance(out, torch.Tensor) or tuple(out.shape) != expected:
            got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise RecipeError([f"encoders.{m}: {who} returned {got} for {expected[0]} present rows; expected "
                               f"[rows, embed_dim] = {list(expected)}"])
        z[m] = module.scatter_present(out, batch.size, index)
    return z


def _probe_strategy(module, z, batch, recipe, registry) -> Alignment:
    who = _owner(registry, "anchor_strategies", recipe.anchor.name)
    try:
        alignment = module.strategy(z, batch.present, batch)
    except Exception as exc:  # noqa: BLE001
        raise RecipeError([f"anchor: {who} failed on a batch: {type(exc).__name__}: {exc}"]) from exc
    if not isinstance(alignment, Alignment):
        raise RecipeError([f"anchor: {who} returned {type(alignment).__name__}, not mmcore.Alignment"])
    declared = set(module.strategy.term_names())
    made = [t.name for t in alignment.terms]
    problems = []
    undeclared = [n for n in made if n not in declared]
    if undeclared:
        problems.append(f"anchor: {who} made term(s) {', '.join(map(repr, undeclared))} that its term_names() "
                        f"does not declare ({', '.join(sorted(declared)) or 'none'})")
    clash = sorted(set(made) & set(alignment.aux_losses))
    if clash:
        problems.append(f"anchor: {who} returned a term and an aux loss of the same name: {', '.join(clash)}")
    if len(set(made)) != len(made):
        problems.append(f"anchor: {who} returned two terms of the same name: {made}")
    if problems:
        raise RecipeError(problems)
    return alignment


def _probe_loss(module, alignment, size, recipe, registry) -> None:
    who = _owner(registry, "losses", recipe.loss.name)
    for term in alignment.terms:
        shapes_ok = (tuple(term.mask.shape) == (size,) and term.query.shape[0] == size and
                     term.key.shape[0] == size)
        if not shapes_ok:
            raise RecipeError([f"anchor: term {term.name!r} has query {tuple(term.query.shape)}, key "
                               f"{tuple(term.key.shape)} and mask {tuple(term.mask.shape)}; expected [B, d], [B, d] "
                               f"and [B] for a batch of B = {size}"])
        targets = torch.arange(size)
        try:
            rows = module.loss.rows(term.query, term.key, targets, term.labels, term.mask.bool(), "forward",
                                    term=term.name)
        except Exception as exc:  # noqa: BLE001
            raise RecipeError([f"loss: {who} failed on term {term.name!r}: {type(exc).__name__}: {exc}"]) from exc
        if not isinstance(rows, torch.Tensor) or tuple(rows.shape) != (size,):
            got = tuple(rows.shape) if isinstance(rows, torch.Tensor) else type(rows).__name__
            raise RecipeError([f"loss: {who}: rows() returned {got} for {size} query rows; expected [n] = [{size}]"])
    for name, value in alignment.aux_losses.items():
        if not isinstance(value, torch.Tensor) or value.numel() != 1:
            raise RecipeError([f"anchor: aux loss {name!r} of {_owner(registry, 'anchor_strategies', recipe.anchor.name)}"
                               f" is {type(value).__name__}, not a scalar tensor"])


def _probe_evaluators(module, z, batch, recipe, registry) -> None:
    probe_split = EmbeddedSplit(
        z={m: v.float().cpu().numpy() for m, v in z.items()},
        present={m: batch.present[m].bool().cpu().numpy() for m in z},
        labels=None if batch.labels is None else batch.labels.cpu().numpy(),
        trained_pairs=module.trained_pairs, class_names=module.class_names)
    probe_split = attrs.evolve(probe_split, reference=probe_split)  # the probe's own rows as the reference set
    for i, (section, evaluate) in enumerate(zip(recipe.evaluators, module.evaluators)):
        who = _owner(registry, "evaluators", section.name)
        try:
            metrics = evaluate(probe_split)
        except Exception as exc:  # noqa: BLE001
            raise RecipeError([f"evaluators[{i}]: {who} failed on {len(batch.present[recipe.modalities[0]])} "
                               f"embedded samples: {type(exc).__name__}: {exc}"]) from exc
        if not isinstance(metrics, dict):
            raise RecipeError([f"evaluators[{i}]: {who} returned {type(metrics).__name__}, not a dict of metrics"])
        bad = [(k, v) for k, v in metrics.items()
               if not isinstance(k, str) or isinstance(v, bool) or not isinstance(v, numbers.Real)]
        if bad:
            key, value = bad[0]
            raise RecipeError([f"evaluators[{i}]: {who} returned metric {key!r} = {value!r}; metrics must be "
                               "str -> number"])
