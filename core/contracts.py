"""The data that flows between the core and its components.

Everything here is plain data (attrs classes) so that importing it costs nothing: torch tensors appear only as
field values. Shapes use ``B`` for the batch, ``N`` for a split, ``d`` for the embedding width.

Batch contract
    A batch maps modality name -> input tensor ``[B, input_dim]`` with a presence mask ``[B]`` per modality.
    Sparse pairing is the normal case: a sample may lack any modality. Absent rows hold zeros and must be ignored
    through ``present``.

Anchor-strategy contract
    From the normalised embeddings ``z[m]`` (``[B, d]``) and masks of a batch, a strategy returns an
    :class:`Alignment`: the contrastive terms (which embeddings align with which anchor, on which rows, with which
    weight) plus any auxiliary losses it computes itself. A strategy is an ``nn.Module``: its parameters are
    trained and checkpointed with the model.

Loss contract
    A loss scores query rows against a candidate pool, see :mod:`mmcore.builtins.losses`. The runner owns the
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


@attrs.frozen
class Batch:
    """One training or evaluation batch.

    inputs:  modality -> ``[B, input_dim]`` float tensor (zeros where absent)
    present: modality -> ``[B]`` bool tensor
    labels:  ``[B]`` long class labels, or None
    ids:     ``[B]`` long sample ids (unique within a split), or None
    """

    inputs: dict
    present: dict
    labels: Any = None
    ids: Any = None

    @property
    def size(self) -> int:
        return next(iter(self.present.values())).shape[0]

    @classmethod
    def from_collated(cls, data: dict) -> "Batch":
        """Build from a default-collated dict ``{"inputs", "present", "label"?, "id"?}``."""
        return cls(data["inputs"], data["present"], data.get("label"), data.get("id"))


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
    """Given to an encoder's build: map ``[B, input_dim]`` to ``[B, embed_dim]`` (the runner normalises)."""

    modality: str
    input_dim: int
    embed_dim: int


@attrs.frozen
class AnchorContext:
    """Given to an anchor strategy's build.

    modalities:     the recipe's modalities, in recipe order
    observed_pairs: unordered modality pairs that co-occur in training samples (the pairing plan)
    loss:           the recipe's loss, as a callable ``loss(term) -> scalar`` the strategy may use for its own terms
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
class DatasetSplits:
    """What a dataset's build returns.

    train, val, test: ``torch.utils.data.Dataset`` whose items are dicts ``{"inputs": {m: [input_dim]},
                      "present": {m: bool}, "label": int, "id": int}``
    input_dims:       modality -> input width
    observed_pairs:   unordered pairs (frozensets) that co-occur in training samples
    class_names:      optional names, index = label
    """

    train: Any
    val: Any
    test: Any
    input_dims: dict
    observed_pairs: frozenset
    class_names: tuple = ()


@attrs.frozen
class EmbeddedSplit:
    """Embeddings of a whole split, given to evaluators (numpy, float32, L2-normalised).

    z:              modality -> ``[N, d]`` (rows of absent samples are zeros)
    present:        modality -> ``[N]`` bool
    labels:         ``[N]`` int, or None
    reference:      the same structure for (a subset of) the training split, for prototypes and kNN, or None
    trained_pairs:  unordered pairs the anchor strategy aligned directly; every other pair is *emergent*
    class_names:    optional names, index = label
    """

    z: dict
    present: dict
    labels: Any = None
    reference: Any = None
    trained_pairs: frozenset = frozenset()
    class_names: tuple = ()

    @property
    def modalities(self) -> list:
        return list(self.z)
