"""The recipe schema: the core's own sections (attrs classes) and the structured :class:`Recipe`.

Component sections (``[dataset]``, ``[encoders.<m>]``, ``[anchor]``, ``[loss]``, ``[[evaluators]]``) hold a
component ``name`` and that component's own attrs config; ``[optimizer]`` and ``[trainer]`` are the core's.
"""

from __future__ import annotations

import math
from typing import Any, Literal

import attrs


def _positive(instance, attribute, value):
    if not 0 < value < math.inf:  # also rejects nan, and inf (TOML reads 1e400 as inf)
        raise ValueError(f"'{attribute.name}' must be {'finite' if value == math.inf else '> 0'}, got {value}")


def _non_negative(instance, attribute, value):
    if not 0 <= value < math.inf:  # also rejects nan and inf
        raise ValueError(f"'{attribute.name}' must be {'finite' if value == math.inf else '>= 0'}, got {value}")


MAX_SEED = 2**32 - 1
"""Lightning's ``seed_everything`` (numpy's seed) takes 0 .. 2**32 - 1."""

MAX_NAME_BYTES = 200
"""A run is ``<output_dir>/<name>-<n>``: file systems take 255 bytes per path component."""


def _seed(instance, attribute, value):
    if not 0 <= value <= MAX_SEED:
        raise ValueError(f"'{attribute.name}' must be between 0 and {MAX_SEED} (2**32 - 1), got {value}")


def is_utf8(value: str) -> bool:
    """Whether UTF-8 can write ``value``: not so for the surrogate-escaped bytes of a non-UTF-8 file name or
    command-line argument."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _path_text(instance, attribute, value):
    """A path setting: no NUL (no file system takes one) and writable as UTF-8 (the run records it)."""
    if "\0" in value:
        raise ValueError(f"'{attribute.name}' must not contain a NUL character, got {value!r}")
    if not is_utf8(value):
        raise ValueError(f"'{attribute.name}' must be valid UTF-8 text, got {value!r}")


def _one_component(instance, attribute, value):
    """``name`` names the run directory ``<output_dir>/<name>-<n>``, so it is one path component: no separator,
    not ``.`` or ``..``, no control character, at most :data:`MAX_NAME_BYTES` bytes (``""``: the recipe file's
    stem). Otherwise a shared recipe could decide where its run lands (``name = "../../x"``)."""
    _path_text(instance, attribute, value)
    if "/" in value or "\\" in value or value in (".", ".."):
        raise ValueError(f"'{attribute.name}' must be one path component (no '/' or '\\', not '.' or '..'), "
                         f"got {value!r}")
    if any(ord(c) < 32 or ord(c) == 127 for c in value):
        raise ValueError(f"'{attribute.name}' must not contain control characters (a newline, a tab), got {value!r}")
    if len(value.encode("utf-8")) > MAX_NAME_BYTES:
        raise ValueError(f"'{attribute.name}' must be at most {MAX_NAME_BYTES} bytes long, got "
                         f"{len(value.encode('utf-8'))}")


@attrs.frozen
class ComponentSection:
    """A component chosen by ``name`` plus its structured config (an instance of the component's attrs class)."""

    name: str
    config: Any


@attrs.frozen
class EncoderSection(ComponentSection):
    """An encoder section. Core settings of every encoder: ``frozen = true`` keeps all its weights fixed (a
    pretrained anchor); ``lr`` and ``weight_decay`` give it its own optimizer settings (a pretrained tower wants a
    lower learning rate than new heads); None means the ``[optimizer]`` value. ``grad_checkpointing = true`` keeps
    fewer activations and recomputes them in the backward (:func:`mmcore.train.grad_checkpointing.enable`: timm's and
    open_clip's ``set_grad_checkpointing``, transformers' ``gradient_checkpointing_enable``, else
    ``torch.utils.checkpoint`` around the whole encoder)."""

    frozen: bool = False
    lr: float | None = None
    weight_decay: float | None = None
    grad_checkpointing: bool = False


@attrs.frozen
class OptimizerSettings:
    """``[optimizer]``: AdamW/Adam/SGD over every trainable parameter, with an optional cosine schedule."""

    name: Literal["adamw", "adam", "sgd"] = "adamw"
    lr: float = attrs.field(default=1e-3, validator=_positive)
    weight_decay: float = attrs.field(default=0.0, validator=_non_negative)
    schedule: Literal["constant", "cosine"] = "cosine"
    warmup_steps: int = attrs.field(default=0, validator=_non_negative)


@attrs.frozen
class TrainerSettings:
    """``[trainer]``: passed to ``lightning.Trainer`` (``accelerator = "auto"`` uses a GPU when there is one).

    ``compile`` wraps each encoder in ``torch.compile``; ``precision = "bf16-mixed"`` trains in bfloat16 autocast.
    ``on_nonfinite``: a NaN/inf loss term either stops the run (``"stop"``: the message names the term, the step and
    the last good checkpoint) or skips that batch's update (``"skip"``, counted in ``train/skipped_batches``).
    ``embed_chunk = n`` (0: off) selects the cached step (:mod:`mmcore.train.cached`, GradCache): each encoder
    runs on at most ``n`` rows at a time, twice, and the gradient is the whole batch's, so ``batch_size`` is
    limited by the ``[batch_size, embed_dim]`` embeddings rather than by the encoders' activations. It is also how
    mmcore accumulates: there is no ``accumulate_grad_batches``, which would shrink the negatives each query sees.
    """

    max_epochs: int = attrs.field(default=10, validator=_positive)
    batch_size: int = attrs.field(default=256, validator=_positive)
    accelerator: str = "auto"
    devices: int | str = "auto"
    strategy: str = "auto"
    num_nodes: int = attrs.field(default=1, validator=_positive)
    precision: int | str = "32-true"
    num_workers: int = attrs.field(default=0, validator=_non_negative)
    log_every_n_steps: int = attrs.field(default=10, validator=_positive)
    gradient_clip_val: float = attrs.field(default=0.0, validator=_non_negative)
    deterministic: bool = False
    compile: bool = False
    on_nonfinite: Literal["stop", "skip"] = "stop"
    embed_chunk: int = attrs.field(default=0, validator=_non_negative)


def _default_loss() -> dict:
    return {"name": "infonce"}


def _default_evaluators() -> list:
    return [{"name": "retrieval"}, {"name": "prototypes"}, {"name": "knn"}]


@attrs.frozen
class Recipe:
    """A whole run. ``name`` defaults to the recipe file's stem and names the run directory."""

    dataset: ComponentSection
    encoders: dict[str, EncoderSection]
    anchor: ComponentSection
    loss: ComponentSection
    evaluators: list[ComponentSection]
    optimizer: OptimizerSettings = OptimizerSettings()
    trainer: TrainerSettings = TrainerSettings()
    embed_dim: int = attrs.field(default=128, validator=_positive)
    seed: int = attrs.field(default=0, validator=_seed)
    output_dir: str = attrs.field(default="runs", validator=_path_text)
    name: str = attrs.field(default="", validator=_one_component)

    @property
    def modalities(self) -> tuple:
        return tuple(self.encoders)


SECTION_KINDS = {"dataset": "datasets", "anchor": "anchor_strategies", "loss": "losses"}


@attrs.frozen
class _Settings:
    """The non-component part of a recipe, structured by cattrs in one go."""

    optimizer: OptimizerSettings = OptimizerSettings()
    trainer: TrainerSettings = TrainerSettings()
    embed_dim: int = attrs.field(default=128, validator=_positive)
    seed: int = attrs.field(default=0, validator=_seed)
    output_dir: str = attrs.field(default="runs", validator=_path_text)
    name: str = attrs.field(default="", validator=_one_component)

