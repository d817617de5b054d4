"""The data that flows between the core and its components (the *what*; :mod:`mmcore.protocols` says the *who*).

Everything here is plain data (attrs classes) so that importing it costs nothing: torch tensors appear only as
field values. Shapes use ``B`` for the batch, ``N`` for a split, ``d`` for the embedding width.

Batch contract
    A batch maps modality name -> that modality's input for ``B`` samples, with a presence mask ``[B]`` per
    modality. An input is whatever the dataset yields and the encoder accepts, described by an :class:`InputSpec`:
    a tensor ``[B, *shape]`` (``[B, input_dim]`` for feature vectors, ``[B, 3, H, W]`` for images), or a dict of
    such tensors (token ids and an attention mask). Sparse pairing is the normal case: a sample may lack any
    modality. Absent rows hold placeholders (zeros); the core runs an encoder on the present rows only.

Anchor-strategy contract
    From the normalised embeddings ``z[m]`` (``[B, d]``, zeros on absent rows) and masks of a batch, a strategy
    returns an :class:`Alignment`: the contrastive terms (which embeddings align with which anchor, on which rows,
    with which weight) plus any auxiliary losses it computes itself. A strategy is an ``nn.Module``: its
    parameters are trained and checkpointed with the model.

Loss contract
    A loss scores query rows against a candidate pool, see :mod:`mmcore.contrastive`. The core owns the
    symmetric pairing, the masking and the cross-rank gather, so a loss never sees more than "these queries,
    these candidates, these positives".
"""

from __future__ import annotations

from typing import Any, Callable

import attrs

KINDS = ("encoders", "anchor_strategies", "losses", "evaluators", "datasets")
"""The five component kinds, in the order ``mmcore plugins`` lists them."""


@attrs.frozen
class Component:
    """A named, configurable piece a plugin contributes.

    ``config`` is an attrs class: a recipe section is structured into it by cattrs (unknown keys rejected).
    ``build(config, context)`` makes the runtime object; what ``context`` holds and what must be returned depends
    on the kind (see the hook specs in :mod:`mmcore.hookspecs`).
    """

    name: str
    config: type
    build: Callable[..., Any]
    description: str = ""


class ConfigError(ValueError):
    """Raised by a component's ``build`` when a setting is invalid in context.

    ``field`` names the offending setting so the recipe error can point at ``<section>.<field>``.
    """

    def __init__(self, field: str, message: str):
        super().__init__(message)
        self.field = field


MEDIA_KINDS = ("", "image", "audio", "text")
"""Values of :attr:`InputSpec.media` (``""``: a tensor input, described by shape and dtype)."""


class DataError(ValueError):
    """Raised by a dataset while a run reads it (``__getitem__``, ``get_batch``) for input data that is wrong: a file
    that cannot be decoded, a malformed row. The message names the file and its row. ``mmcore run`` stops with it
    (exit 1, no traceback, checkpoints kept) instead of training on a wrong batch. Must be constructible from the
    message alone, so a DataLoader worker re-raises it with its type."""


def data_error_message(exc: BaseException) -> str:
    """The message of a :class:`DataError`, without the worker traceback torch's DataLoader adds to it."""
    text = str(exc)
    if "Original Traceback" in text:
        last = [line for line in text.strip().splitlines() if line.strip()][-1]
        text = last.split(": ", 1)[1] if ": " in last else last
    return text


def _as_shape(value) -> tuple:
    if isinstance(value, int):
        return (value,)
    return tuple(None if v is None else int(v) for v in value)


@attrs.frozen
class InputSpec:
    """What one modality's input looks like for one sample: a tensor, or a dict of named tensors.

    shape:  per-sample shape, without the batch dimension: ``(input_dim,)`` for a feature vector, ``(3, H, W)``
            for an image; ``None`` marks a dimension of variable size (padded by the encoder's ``collate``)
    dtype:  torch dtype name of the tensor (``"float32"``, ``"int64"``, ...)
    fields: for a dict input, name -> :class:`InputSpec` of each entry (``shape``/``dtype`` then unused)
    media:  ``"image"``, ``"audio"`` or ``"text"`` for raw media (``InputSpec.raw("image")``): the dataset
            yields one raw item per sample (a decoded image, a ``(waveform, rate)`` pair, a string, or a file
            path; ``None`` where absent), and the encoder's ``preprocess(raw, train=)`` turns it into tensors
            in the DataLoader workers (``shape``/``dtype``/``fields`` then unused: the encoder decides them)

    Datasets declare one per modality (``DatasetSplits.inputs``); the run directory records them, so a trained
    run rebuilds its encoders without its training data. ``InputSpec.vector(24)`` is the flat default.
    """

    shape: tuple = attrs.field(default=(), converter=_as_shape)
    dtype: str = "float32"
    fields: dict = attrs.field(factory=dict)
    media: str = attrs.field(default="", validator=attrs.validators.in_(MEDIA_KINDS))

    @classmethod
    def vector(cls, dim: int) -> "InputSpec":
        """A flat float feature vector ``[dim]``."""
        return cls((dim,))

    @classmethod
    def raw(cls, kind: str) -> "InputSpec":
        """Raw media of ``kind`` (``"image"``, ``"audio"``, ``"text"``), preprocessed by the encoder."""
        return cls(media=kind)

    @property
    def is_vector(self) -> bool:
        return (not self.fields and not self.media and len(self.shape) == 1 and self.shape[0] is not None
                and self.dtype == "float32")

    @property
    def dim(self) -> int:
        """The width of a flat vector input (``ValueError`` for any other input)."""
        if not self.is_vector:
            raise ValueError(f"input {self.describe()} is not a flat float vector")
        return self.shape[0]

    def describe(self) -> str:
        if self.media:
            return f"raw {self.media}"
        if self.fields:
            return "{" + ", ".join(f"{k}: {v.describe()}" for k, v in self.fields.items()) + "}"
        dims = ", ".join("*" if d is None else str(d) for d in self.shape)
        return f"{self.dtype}[{dims}]"

    def to_dict(self) -> dict:
        if self.media:
            return {"media": self.media}
        if self.fields:
            return {"fields": {k: v.to_dict() for k, v in self.fields.items()}}
        return {"shape": [d for d in self.shape], "dtype": self.dtype}

    @classmethod
    def from_dict(cls, data: dict) -> "InputSpec":
        if "media" in data:
            return cls(media=data["media"])
        if "fields" in data:
            return cls(fields={k: cls.from_dict(v) for k, v in data["fields"].items()})
        return cls(tuple(data["shape"]), data.get("dtype", "float32"))

    def example(self, rows: int = 2, length: int = 1):
        """A placeholder input of ``rows`` samples, all ones (variable dimensions of size ``length``), e.g. the
        example input of an export trace."""
        import torch

        if self.media:
            raise ValueError(f"raw {self.media} input has no tensor example; its encoder's preprocess makes one")
        if self.fields:
            return {k: v.example(rows, length) for k, v in self.fields.items()}
        shape = [rows, *(length if d is None else d for d in self.shape)]
        return torch.ones(shape, dtype=getattr(torch, self.dtype))


def input_spec(value) -> "InputSpec":
    """An :class:`InputSpec` from a spec, or from an ``int`` width (a flat vector)."""
    if isinstance(value, InputSpec):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return InputSpec.vector(value)
    raise TypeError(f"expected an mmcore.InputSpec or an int width, got {type(value).__name__} {value!r}")


def select_rows(inputs, rows):
    """The rows ``rows`` (``[B]`` bool or ``[k]`` long) of one modality's batch input (a tensor or a dict)."""
    if isinstance(inputs, dict):
        return {k: select_rows(v, rows) for k, v in inputs.items()}
    return inputs[rows]


@attrs.frozen
class Batch:
    """One training or evaluation batch.

    inputs:  modality -> the modality's input for the batch: a ``[B, *shape]`` tensor or a dict of them (see
             :class:`InputSpec`); absent rows hold placeholders
    present: modality -> ``[B]`` bool tensor
    labels:  ``[B]`` long class labels, or None (items say ``label``)
    ids:     ``[B]`` long sample ids (unique within a split), or None (items say ``id``)
    rows:    modality -> ``"all"`` (every row present) or the ``[k]`` long indices of its present rows, computed
             on the host before the batch reached the device, or None (a batch built elsewhere): a strategy may
             branch on it without waiting for the device
    """

    inputs: dict
    present: dict
    labels: Any = None
    ids: Any = None
    rows: Any = None

    @property
    def size(self) -> int:
        return next(iter(self.present.values())).shape[0]

    @classmethod
    def from_collated(cls, data: dict) -> "Batch":
        """Build from a collated dict ``{"inputs", "present", "label"?, "id"?}``."""
        return cls(data["inputs"], data["present"], data.get("label"), data.get("id"), data.get("rows"))


@attrs.frozen
class AlignmentTerm:
    """A contrastive term: row ``i`` of ``query`` should match row ``i`` of ``key`` and no other key.

    query, key:   ``[B, d]`` L2-normalised embeddings
    mask:         ``[B]`` bool, rows taking part (both sides present); other rows are neither queries nor
                  candidates
    weight:       scale of this term in the total loss
    symmetric:    also score key -> query (averaged with query -> key)
    labels:       optional ``[B]`` long modality id of each pair (e.g. the modality of its key, compositions
                  distinct), for losses that restrict negatives to pairs of the same modality (MAMCL). Losses
                  that do not use them ignore them. Never a ``[B, B]`` mask: tiled and distributed losses
                  rebuild the mask per tile from these ids.
    """

    name: str
    query: Any
    key: Any
    mask: Any
    weight: float = 1.0
    symmetric: bool = True
    labels: Any = None


@attrs.frozen
class Alignment:
    """What an anchor strategy returns for one batch: contrastive terms plus auxiliary scalar losses."""

    terms: list = attrs.field(factory=list)
    aux_losses: dict = attrs.field(factory=dict)


@attrs.frozen
class EncoderContext:
    """Given to an encoder's build: map the modality's input (``[b, *input.shape]``, or a dict) to
    ``[b, embed_dim]``. The core normalises the output and calls the encoder on present rows only."""

    modality: str
    input: InputSpec = attrs.field(converter=input_spec)
    embed_dim: int = 0
    pretrained: bool = True
    """False when the weights will be restored from a checkpoint right after the build (``mmcore.load``,
    ``mmcore eval``): build the architecture only, without downloading or reading pretrained weights."""

    @property
    def input_dim(self) -> int:
        """The input width, for encoders of flat feature vectors (``ValueError`` for other inputs)."""
        return self.input.dim


@attrs.frozen
class AnchorContext:
    """Given to an anchor strategy's build.

    modalities:     the recipe's modalities, in recipe order
    observed_pairs: unordered modality pairs that co-occur in training samples (the pairing plan)
    loss:           the recipe's loss, as a callable ``loss(term) -> scalar`` (the mean over the global batch's
                    valid rows, unweighted) the strategy may use for terms it scores itself; a term scored so
                    must still be named in ``term_names()``
    embed_dim:      width of the shared space
    """

    modalities: tuple
    observed_pairs: frozenset
    embed_dim: int
    loss: Any = None


@attrs.frozen
class LossContext:
    """Given to a loss's build."""

    embed_dim: int


@attrs.frozen
class EvaluatorContext:
    """Given to an evaluator's build: the recipe's modalities (recipe order), the embedding width, and each
    modality's :class:`InputSpec` (e.g. to find the raw-text modality that embeds class prompts)."""

    modalities: tuple = ()
    embed_dim: int = 0
    inputs: dict = attrs.field(factory=dict)


@attrs.frozen
class DatasetContext:
    """Given to a dataset's build: the recipe's ``seed`` (use it for splits and generated data, so ``seed`` means
    the same run everywhere) and the modalities the recipe has encoders for (recipe order)."""

    seed: int = 0
    modalities: tuple = ()


def _input_specs(value: dict) -> dict:
    return {m: input_spec(v) for m, v in dict(value).items()}


@attrs.frozen
class DatasetSplits:
    """What a dataset's build returns.

    train, val, test: ``torch.utils.data.Dataset`` whose items are dicts ``{"inputs": {m: input},
                      "present": {m: bool}, "label": int, "id": int}``; every modality is in every item (a
                      placeholder where absent). A dataset may also offer ``get_batch(indices) -> collated batch``
                      (as :class:`mmcore.TensorSplit` does): the core then fetches whole batches at once.
                      ``train`` may offer ``epoch_rows(epoch) -> [E] long``: the indices that make training epoch
                      ``epoch`` (the same ``E`` for every epoch, repeats allowed; a function of ``epoch`` alone, so
                      a resumed run sees the same epochs), which the core shuffles by (seed, epoch) instead of
                      every index once (the ``mixture`` dataset's per-epoch draw).
                      ``train`` may instead offer ``training_loader(*, batch_size, collate_fn, num_workers,
                      drop_last, seed, pin_memory, epoch) -> DataLoader``: a streaming split's own loader, used for
                      training in place of the core's sampler. It must give each rank and DataLoader worker distinct
                      samples (it is built after the process group starts), order them by ``seed`` and the epoch
                      (its first ``iter`` is epoch ``epoch``: 0, or where a resumed fit starts; one epoch per
                      ``iter``), make every rank's epoch the same number of batches when ``drop_last``, end an epoch
                      at its ``len()``-th batch (Lightning never exhausts the iterator), and offer ``state_dict()`` /
                      ``load_state_dict(state)``: Lightning saves its position in every checkpoint and, for a run
                      stopped mid-epoch, gives it back on ``--resume``, which must go on from the next batch (the
                      ``shards`` dataset's loader, on litdata, is one). ``len()`` and indexing are still used for
                      the evaluators' reference set.
    inputs:           modality -> :class:`InputSpec` (an ``int`` means a flat vector of that width)
    observed_pairs:   unordered pairs (frozensets) that co-occur in training samples
    class_names:      optional names, index = label
    prompts:          optional prompt templates with one ``{}`` for the class name (``"a photo of a {}"``),
                      for zero-shot classification from text (the ``zero_shot`` evaluator)
    source_names:     for a dataset made of several sources (the ``mixture`` dataset): the name of each source,
                      index = the ``"source"`` value (``[B]`` long) its items and batches then carry; ``()`` for a
                      dataset of one source (its batches carry no ``"source"``)

    Items of raw-media modalities (``InputSpec.raw``) hold ``None`` where absent. An item may also carry
    ``"skipped": n``, the number of its media cells the dataset dropped as undecodable (marked absent), which
    the core sums into ``train/skipped_samples``.
    """

    train: Any
    val: Any
    test: Any
    inputs: dict = attrs.field(converter=_input_specs)
    observed_pairs: frozenset = frozenset()
    class_names: tuple = ()
    prompts: tuple = attrs.field(default=(), converter=tuple)
    source_names: tuple = attrs.field(default=(), converter=tuple)

    @property
    def input_dims(self) -> dict:
        """modality -> width, for datasets of flat vectors only."""
        return {m: spec.dim for m, spec in self.inputs.items()}


@attrs.frozen
class EmbeddedSplit:
    """Embeddings of a whole split, given to evaluators (numpy, float32, L2-normalised).

    z:              modality -> ``[N, d]`` (rows of absent samples are zeros)
    present:        modality -> ``[N]`` bool
    labels:         ``[N]`` int, or None
    reference:      the same structure for (a subset of) the training split, for prototypes and kNN, or None
    trained_pairs:  unordered pairs the anchor strategy aligned directly; every other pair is *emergent*
    class_names:    optional names, index = label
    prompts:        the dataset's prompt templates (``"a photo of a {}"``), for zero-shot from text
    encode:         ``encode(modality, items) -> [n, d]`` normalised float32 numpy: raw items (e.g. prompt strings)
                    through the trained encoder and its eval preprocessing; None when not available
    """

    z: dict
    present: dict
    labels: Any = None
    reference: Any = None
    trained_pairs: frozenset = frozenset()
    class_names: tuple = ()
    prompts: tuple = ()
    encode: Any = attrs.field(default=None, eq=False, repr=False)

    @property
    def modalities(self) -> list:
        return list(self.z)
