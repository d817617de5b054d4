"""The recipe schema: the core's own sections (attrs classes) and the structured :class:`Recipe`.

Component sections (``[dataset]``, ``[encoders.<m>]``, ``[anchor]``, ``[loss]``, ``[[evaluators]]``) hold a
component ``name`` and that component's own attrs config; ``[optimizer]`` and ``[trainer]`` are the core's.
"""

from __future__ import annotations

from typing import Any, Literal

import attrs


def _positive(instance, attribute, value):
    if not value > 0:  # also rejects nan
        raise ValueError(f"'{attribute.name}' must be > 0, got {value}")


def _non_negative(instance, attribute, value):
    if not value >= 0:  # also rejects nan
        raise ValueError(f"'{attribute.name}' must be >= 0, got {value}")


@attrs.frozen
class ComponentSection:
    """A component chosen by ``name`` plus its structured config (an instance of the component's attrs class)."""

    name: str
    config: Any


@attrs.frozen
class EncoderSection(ComponentSection):
    """An encoder section. Core settings of every encoder: ``frozen = true`` keeps all its weights fixed (a
    pretrained anchor); ``lr`` and ``weight_decay`` give it its own optimizer settings (a pretrained tower wants a
    lower learning rate than new heads); None means the ``[optimizer]`` value."""

    frozen: bool = False
    lr: float | None = None
    weight_decay: float | None = None


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
    seed: int = 0
    output_dir: str = "runs"
    name: str = ""

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
    seed: int = 0
    output_dir: str = "runs"
    name: str = ""

