"""The hooks a plugin implements, and what the host does with what they return.

A plugin is a module registered under the ``mmcore`` entry-point group of its distribution::

    # pyproject.toml
    [project.entry-points.mmcore]
    myplugin = "my_package.plugin"

    # my_package/plugin.py: imports attrs and mmcore only
    import attrs, mmcore

    @attrs.frozen
    class TwoLayerConfig:                       # the recipe section, structured by cattrs (unknown keys rejected)
        hidden: int = 256

    def build_two_layer(config, context):       # context: mmcore.EncoderContext
        from .modules import TwoLayer           # the torch code lives in its own module, imported here
        return TwoLayer(context.input_dim, config.hidden, context.embed_dim)

    @mmcore.hookimpl
    def mmcore_encoders():
        return [mmcore.Component("two_layer", TwoLayerConfig, build_two_layer, "a two-layer MLP")]

Every component hook takes no argument and returns a list of :class:`mmcore.Component` ``(name, config, build,
description)``. The hooks are called once per process, when the registry loads (``mmcore.get_registry()``; every
``mmcore`` command, ``--help`` included), so they must be cheap: no torch import, no I/O. ``build(config,
context)`` is called when a recipe is assembled (``mmcore run``, ``mmcore validate``, ``mmcore.testing.run_recipe``)
and, for every kind but datasets, when a finished run is loaded (``mmcore.load``, ``eval``, ``embed``, ``export``):
from the run directory alone, without its training data. Implement only the hooks you need.

============================  ===================================  ===================================================
hook                          ``build(config, context)`` gets      and returns
============================  ===================================  ===================================================
``mmcore_encoders``           ``EncoderContext(modality, input,    ``nn.Module``: ``forward(inputs) -> [b, embed_dim]``
                              embed_dim)``                         on the ``b`` present rows; ``inputs``: a tensor
                                                                   ``[b, *input.shape]`` or a dict of them
``mmcore_anchor_strategies``  ``AnchorContext(modalities,          ``nn.Module``: ``forward(z, present, batch) ->
                              observed_pairs, embed_dim, loss)``   Alignment``, ``term_names()``,
                                                                   ``trained_pairs(observed)``
``mmcore_losses``             ``LossContext(embed_dim)``           ``nn.Module``: ``rows(query, candidates, targets,
                                                                   candidate_labels, candidate_valid, direction,
                                                                   term=) -> [n]``
``mmcore_evaluators``         ``EvaluatorContext(modalities,       callable ``(EmbeddedSplit) -> dict[str, float]``
                              embed_dim)``                         and ``summary_metrics`` (``mmcore.evaluator``)
``mmcore_datasets``           ``DatasetContext(seed,               ``DatasetSplits(train, val, test, inputs,
                              modalities)``                        observed_pairs, class_names)``
============================  ===================================  ===================================================

Assembling a recipe builds, in this order: the dataset; the encoders (one per ``[encoders.<m>]``); the loss; the
evaluators; the anchor strategy (it receives the loss through its context). Each built object is checked against
its contract (:func:`mmcore.protocols.contract_problems`), the strategy's ``term_names()`` against
``[loss.per_term]``, and then one probe step runs on the first 16 training samples, without gradients and outside
autocast (:func:`mmcore.train.build.probe`): encoder output shapes, the strategy's terms, the loss's row shape, the
evaluators' values. ``mmcore validate`` does all of it, so a component that breaks its contract is rejected before
training with exit status 2 and one line per problem: ``<recipe path>: <component> (from <distribution>) ...``.
A :class:`mmcore.ConfigError` ``("field", message)`` raised by a build is shown as ``<section>.<field>: message``.

``mmcore_commands`` is not a component kind: it adds subcommands to the command line.
"""

import pluggy

hookspec = pluggy.HookspecMarker("mmcore")
hookimpl = pluggy.HookimplMarker("mmcore")


@hookspec
def mmcore_encoders():
    """Return encoders: per-modality networks into the shared space (a list of :class:`mmcore.Component`).

    ``build(config, context)`` is called once per ``[encoders.<modality>]`` section naming the component, when a
    recipe is assembled and when a finished run is loaded (the input spec then comes from the run's ``model.json``).

    :param context: :class:`mmcore.EncoderContext`: ``modality`` (the section's modality), ``input`` (the
        :class:`mmcore.InputSpec` the dataset declares for it: ``(input_dim,)`` float32 for feature vectors,
        ``(3, H, W)`` for images, ``fields`` for a dict such as token ids and an attention mask, ``None`` for a
        dimension of variable size), ``embed_dim`` (width of the shared space); ``input_dim``: the width of a flat
        vector input (``ValueError`` for any other input).

    :returns: an ``nn.Module``.

        Required: ``forward(inputs) -> [b, embed_dim]``, where ``inputs`` is ``[b, *input.shape]`` (a tensor) or a
        dict of such tensors, holding only the ``b`` rows of the batch where the modality is present; ``b`` may be 0
        (no sample of the batch has the modality).

        Optional, both run in the DataLoader workers: ``preprocess(raw, train=False) -> input`` (one sample's stored
        value to tensors; ``train`` is True in the training loader only, for augmentation) and ``collate(values:
        list) -> batch input`` (e.g. padding variable-length token ids into ``{"ids": [B, L], "mask": [B, L]}``).
        When any encoder of a recipe has one, every split is read item by item (a dataset's ``get_batch`` is not
        used). Required for a raw-media input (``InputSpec.raw``): the core preprocesses present items only, and
        passes ``None`` (never calling the encoder) when no row of a batch has the modality.

        ``context.pretrained`` is False when the weights are restored from a checkpoint right after the build:
        build the architecture only (no download, no weight file read).

    What the host does: it calls the encoder on the present rows only (absent rows never reach it), L2-normalises
    its output and scatters it into ``[B, embed_dim]`` with zeros on absent rows; that is the ``z[modality]`` the
    anchor strategy receives. ``frozen = true`` in the section sets ``requires_grad = False`` on its parameters
    (the module still follows ``train()``/``eval()``); ``trainer.compile = true`` wraps it in ``torch.compile``
    after the probe step. Under ``trainer.precision = "bf16-mixed"`` it runs under autocast. Its parameters are
    trained (no weight decay on those with fewer than 2 dimensions) and checkpointed. ``mmcore.load(run).encode``
    and ``mmcore export`` call ``forward`` directly on arrays shaped as ``input`` says (``collate`` is not applied);
    for raw media, ``encode`` applies ``preprocess(item, train=False)`` and ``collate`` first, as evaluation does.
    ``lr`` and ``weight_decay`` in the section put its parameters in optimizer groups of their own.
    ``grad_checkpointing = true`` in the section calls its ``set_grad_checkpointing(True)`` (or that of its
    outermost submodules that have one; transformers' ``activation_checkpointing_enable`` likewise), else wraps its
    ``forward`` in ``torch.utils.checkpoint``. With ``trainer.embed_chunk = n`` (the cached step) ``forward`` is
    called on at most ``n`` present rows at a time, twice per training step: without a graph, then with a graph
    and the RNG state of the first call; the gradient equals the whole batch's when a row's output does not depend
    on the other rows of its call (not so for BatchNorm in training mode).

    Checked by ``mmcore validate``: the build returns an ``nn.Module`` (contract check); the probe step runs it on
    the present rows of the first 16 training samples, which must give a tensor ``[rows, embed_dim]``.
    """


@hookspec
def mmcore_anchor_strategies():
    """Return anchor strategies: what each modality is aligned to (a fixed modality, a centroid, a bridge...).

    ``build(config, context)`` is called once, for the ``[anchor]`` section, after the encoders, loss and
    evaluators are built.

    :param context: :class:`mmcore.AnchorContext`: ``modalities`` (the recipe's, in recipe order),
        ``observed_pairs`` (unordered pairs, ``frozenset({a, b})``, that co-occur in training samples, restricted
        to the recipe's modalities), ``embed_dim``, and ``loss``: the recipe's loss as ``loss(term) -> scalar``,
        the term's mean over the global batch's valid rows, unweighted (for terms the strategy scores itself, e.g.
        to transform their gradient).

    :returns: an ``nn.Module``; its parameters are trained with the model (no weight decay on those with fewer
        than 2 dimensions) and checkpointed.

        Required: ``forward(z, present, batch) -> mmcore.Alignment``: ``z[m]`` is ``[B, embed_dim]``,
        L2-normalised, zeros on absent rows; ``present[m]`` is ``[B]`` bool; ``batch`` is the
        :class:`mmcore.Batch` (inputs, labels, ids). Under ``bf16-mixed`` ``z`` is in the dtype autocast gives the
        normalised output (bfloat16 on the CPU; on CUDA autocast computes the norm in float32, so float32): do
        not assume one. ``Alignment(terms, aux_losses)``: ``terms`` are :class:`mmcore.AlignmentTerm` ``(name,
        query [B, d], key [B, d], mask [B] bool, weight=1.0, symmetric=True, labels=None or [B] long)``, row ``i``
        of ``query`` matching row ``i`` of ``key``; ``aux_losses`` maps a name to a scalar tensor.

        Required: ``term_names() -> tuple[str, ...]``: every term name ``forward`` can return or scores through
        ``context.loss``, fixed at build time. By convention ``"<query>-<key>"`` (``"text-image"``), the names
        ``train/loss/<term>`` and ``[loss.per_term]`` use.

        Required: ``trained_pairs(observed) -> set`` of the unordered pairs among ``observed`` that it aligns
        directly; every other observed pair is reported as emergent. There is no default.

    What the host does: for each term, ``weight * term_loss(loss, term)``: rows outside ``mask`` are still passed
    to the loss (so shapes are equal across ranks) but are never counted and never negatives; the value is the mean
    over the global batch's valid rows (a symmetric term averages its forward and reverse directions). The
    objective is the sum of the weighted terms plus the aux losses as returned. ``train/loss/<name>`` is logged for
    every term (after weighting) and aux loss, ``train/loss`` for the total; a NaN or infinite value stops the run
    or skips the batch (``trainer.on_nonfinite``). An aux loss must not share a name with a term of the same
    ``Alignment`` (an error). ``trained_pairs(observed_pairs)`` is recorded in ``model.json`` and ``pairs.json``
    and given to the evaluators as ``EmbeddedSplit.trained_pairs``.

    Checked by ``mmcore validate``: an ``nn.Module`` with callable ``term_names`` and ``trained_pairs`` (contract
    check); ``term_names()`` returns distinct non-empty strings and names every ``[loss.per_term]`` key; the probe
    step (in ``eval()`` mode) must return an ``Alignment`` whose term names are declared and distinct, none equal to
    an aux loss's, each term ``query``/``key`` ``[B, d]`` and ``mask`` ``[B]``, and each aux loss a scalar tensor.
    """


@hookspec
def mmcore_losses():
    """Return losses: row-wise contrastive objectives of queries against a candidate pool.

    ``build(config, context)`` is called once, for the ``[loss]`` section (the built-in ``infonce`` when the
    recipe has none).

    :param context: :class:`mmcore.LossContext`: ``embed_dim``.

    :returns: an ``nn.Module``; its parameters (a temperature, a bias) are trained with the model, with no weight
        decay on those with fewer than 2 dimensions, and checkpointed.

        Required: ``rows(query, candidates, targets, candidate_labels=None, candidate_valid=None,
        direction="forward", term=None) -> [n]``: the loss of each query row ``[n, d]`` against the candidate pool
        ``[N, d]``; ``targets`` ``[n]`` long is each row's positive column; ``candidate_labels`` ``[N]`` long (the
        terms' ``labels``, gathered) or None, for losses that restrict negatives to candidates with the label of the
        row's positive; ``candidate_valid`` ``[N]`` bool: invalid candidates must never be negatives; ``direction``
        is ``"forward"`` (query -> key) or ``"reverse"`` (key -> query, symmetric terms only); ``term`` is the
        term's name (for settings that differ by term). Return finite values on every row, masked ones included
        (they are multiplied away, but a NaN there would reach the gradients).

        Optional: ``pair_rows(query, key, labels, valid, term=None) -> (forward [B], reverse [B])``, both
        directions of a symmetric term at once (``mmcore.info_nce_pair_rows``). It must agree with ``rows`` in
        both directions: nothing checks it at run time, so test it.

        Optional: ``logit_scale`` (a scalar tensor; ``1 / logit_scale`` is logged as ``train/temperature``) and
        ``per_term`` (a ``ModuleDict``, term name -> module with a ``logit_scale``, logged as
        ``train/temperature/<term>``).

    What the host does (:func:`mmcore.train.objective.term_loss`): rank ``r`` of ``W`` processes scores its own
    ``B`` query rows against the candidates of every rank, gathered with gradients (``N = W * B``,
    ``targets = arange(B) + r * B``; ``candidate_valid`` is the gathered term mask), in the forward direction and,
    for a symmetric term, the reverse one; with one process and a symmetric term it calls ``pair_rows`` instead
    when the loss has one. It keeps the rows inside the term's mask, averages them over the global batch's valid
    rows, and averages the two directions. A loss written for one process is therefore already correct under DDP.

    Checked by ``mmcore validate``: an ``nn.Module`` with a callable ``rows`` taking ``term=`` (and ``pair_rows``,
    if present, taking ``term=``) (contract check); every ``per_term`` name is a term of the strategy; the probe
    step calls ``rows(query, key, arange(B), labels, mask, "forward", term=name)`` on each probe term, which must
    return a tensor ``[B]``. The probe does not call ``pair_rows`` nor the reverse direction.
    """


@hookspec
def mmcore_evaluators():
    """Return evaluators: functions from an embedded split to named metrics.

    ``build(config, context)`` is called once per ``[[evaluators]]`` entry (default: ``retrieval``, ``zero_shot``,
    ``knn``).

    :param context: :class:`mmcore.EvaluatorContext`: ``modalities`` (the recipe's, in recipe order) and
        ``embed_dim``.

    :returns: a callable ``(EmbeddedSplit) -> dict[str, float]``, with ``summary_metrics``: a tuple of the metric
        names that summarise a run. It is optional (an evaluator without it summarises nothing), but give it:
        ``mmcore.evaluator(function, summary_metrics)`` attaches it (to the very function given, so make a fresh
        function per build when it depends on the config).

    What the host does: after training (and in ``mmcore eval``) it embeds the test split and calls every evaluator
    with an :class:`mmcore.EmbeddedSplit`: ``z[m]`` ``[N, d]`` numpy float32, L2-normalised, zeros on absent rows;
    ``present[m]`` ``[N]`` bool; ``labels`` ``[N]`` int or None; ``trained_pairs`` (every other pair is emergent);
    ``class_names``; ``reference``: the same structure for a training subset (the first 5000 training samples, or
    all of them if fewer), for prototypes and kNN. The metrics of all evaluators are merged into one dict (a later
    evaluator's key replaces an earlier one's), logged as ``test/<key>`` and written to ``metrics.json``; the
    ``summary_metrics`` are recorded in ``model.json`` and shown by ``mmcore run`` and ``mmcore report``.

    Checked by ``mmcore validate``: callable, ``summary_metrics`` (when present) a tuple or list of str (contract
    check); the probe step calls it on the 16 embedded probe samples (their own reference set), which must return
    a dict of str -> number. An evaluator must therefore cope with tiny splits and modalities or pairs with no
    rows.
    """


@hookspec
def mmcore_datasets():
    """Return datasets: train/val/test splits of multimodal samples with presence masks.

    ``build(config, context)`` is called once, for the ``[dataset]`` section, first of all the components; not
    when a finished run is loaded (only ``TrainedModel.data()``, ``mmcore eval`` and ``embed_split`` build it).

    :param context: :class:`mmcore.DatasetContext`: ``seed`` (the recipe's: derive every split and generated value
        from it, e.g. through a seeded ``torch.Generator``) and ``modalities`` (those the recipe has encoders for).

    :returns: :class:`mmcore.DatasetSplits` ``(train, val, test, inputs, observed_pairs=frozenset(),
        class_names=())``.

        ``train``, ``val``, ``test``: map-style datasets (``__len__``, ``__getitem__``) of items ``{"inputs": {m:
        input}, "present": {m: bool}, "id": int, "label": int}``: every modality in every item (a placeholder where
        absent), ``id`` unique within the split (the test step needs it), ``label`` optional (without it the
        label-based evaluators report nothing). A split may offer ``get_batch(indices) -> collated batch``
        (:class:`mmcore.TensorSplit` does: tensors of any shape and dtype per modality), which the core then uses
        to fetch whole batches at once. With ``trainer.num_workers > 0`` the splits are used in DataLoader
        worker processes (pickled where processes are spawned): open files lazily, in the worker.

        ``inputs``: modality -> :class:`mmcore.InputSpec` (an ``int`` means a flat float vector of that width):
        what the encoder receives per sample. ``observed_pairs``: the unordered pairs that co-occur in training
        samples (``mmcore.observed_pairs(groups)``). ``class_names``: optional, index = label.

    What the host does: training batches are ``trainer.batch_size`` samples per process (the global batch is
    ``batch_size x devices x num_nodes``), shuffled in an order that depends only on ``(seed, epoch)``, the last
    incomplete batch dropped; validation and test batches are in order. The input specs and observed pairs are
    recorded in ``model.json``, so the run loads without its data.

    Checked by ``mmcore validate``: a ``DatasetSplits`` whose three splits are non-empty map-style datasets and
    which declares at least one input (contract check); every modality with an encoder is among its ``inputs``;
    the probe step fetches the first 16 training samples exactly as the loaders would and encodes them.
    """


@hookspec
def mmcore_commands(subparsers):
    """Add subcommands to the ``mmcore`` command line (not a component kind: an extension of the CLI).

    ``subparsers`` is argparse's: ``p = subparsers.add_parser("align", help=...)``, add arguments, then
    ``p.set_defaults(func=handler)`` where ``handler(args) -> int`` is the exit status. Import heavy modules inside
    the handler, not here: this hook runs for every ``mmcore`` invocation, ``--help`` included. A hook that raises
    is reported as a warning naming the distribution, and the CLI goes on without its commands.
    """
