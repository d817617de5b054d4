"""The recipe schema: the core's own sections (attrs classes) and the structured :class:`Recipe`.

Component sections (``[dataset]``, ``[encoders.<m>]``, ``[anchor]``, ``[loss]``, ``[[evaluators]]``) hold a
component ``name`` and that component's own attrs config; ``[optimizer]``, ``[trainer]`` and ``[logger]`` are the core's.
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


def _betas(instance, attribute, value):
    if not all(0 <= b < 1 for b in value):  # also rejects nan and inf
        raise ValueError(f"'{attribute.name}' must be two numbers in [0, 1), got {list(value)}")


DEFAULT_BETAS = (0.9, 0.999)
DEFAULT_EPS = 1e-8
"""torch's AdamW/Adam defaults."""


@attrs.frozen
class OptimizerSettings:
    """``[optimizer]``: AdamW/Adam/SGD over every trainable parameter, with an optional cosine schedule.

    ``betas`` and ``eps`` are Adam's (AdamW's) moment decays and denominator term; SGD (momentum 0.9) has neither,
    so they are refused with it unless left at their defaults. Parameters with fewer than 2 dimensions (biases,
    norms, temperatures) never get weight decay (:meth:`mmcore.train.module.BindingModule.parameter_groups`).

    ``implementation``: how torch runs the update. ``"foreach"`` (the default): one kernel per operation over all
    parameters. ``"fused"``: one kernel for the whole update (torch's ``fused=True``, on the CPU and CUDA): on the
    project's CPU machine the AdamW step of three small MLPs took 0.10 ms against 0.28 ms, which is a tenth of a
    small model's training step. The two agree to float rounding (2e-7 after 50 steps), not to the bit, so the same
    seed gives slightly different runs with each.
    """

    name: Literal["adamw", "adam", "sgd"] = "adamw"
    lr: float = attrs.field(default=1e-3, validator=_positive)
    weight_decay: float = attrs.field(default=0.0, validator=_non_negative)
    schedule: Literal["constant", "cosine"] = "cosine"
    warmup_steps: int = attrs.field(default=0, validator=_non_negative)
    betas: tuple[float, float] = attrs.field(default=DEFAULT_BETAS, validator=_betas)
    eps: float = attrs.field(default=DEFAULT_EPS, validator=_positive)
    implementation: Literal["foreach", "fused"] = "foreach"

    def __attrs_post_init__(self):
        if self.name == "sgd":
            for key, default in (("betas", DEFAULT_BETAS), ("eps", DEFAULT_EPS)):
                if getattr(self, key) != default:
                    raise ValueError(f"'{key}' is a setting of adam and adamw; SGD (name = \"sgd\") has none")


def _max_epochs(instance, attribute, value):
    if value == -1 and instance.max_steps > 0:
        return
    if not value > 0:
        raise ValueError(f"'{attribute.name}' must be > 0, got {value} (-1: no epoch limit, with max_steps > 0)")


def _max_steps(instance, attribute, value):
    if not (value == -1 or value > 0):
        raise ValueError(f"'{attribute.name}' must be -1 (no step limit) or > 0, got {value}")


def _optional_positive(instance, attribute, value):
    if value is not None and not value > 0:
        hint = "; to switch validation off, set val_every_n_epochs = 0" if attribute.name == "limit_val_batches" else ""
        raise ValueError(f"'{attribute.name}' must be a number of batches > 0 (leave it out for all), got "
                         f"{value}{hint}")


def _fraction(instance, attribute, value):
    if not 0 < value <= 1:  # also rejects nan and inf
        raise ValueError(f"'{attribute.name}' must be a fraction of the training epoch in (0, 1], got {value}")


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

    How long: ``max_epochs``, and ``max_steps`` (optimizer steps, -1: no limit), whichever comes first
    (``max_epochs = -1`` with ``max_steps > 0``: steps only); ``limit_train_batches = n`` trains on the first ``n``
    batches of each epoch's order. The cosine schedule spans what Lightning estimates from all three.
    Validation: every ``val_every_n_epochs`` epochs (0: never, and no sanity check), ``val_check_interval`` (a
    fraction of the epoch: 0.5 validates twice per validated epoch) on at most ``limit_val_batches`` batches.
    Checkpoints (``checkpoints/``): ``checkpoint = "best_and_last"`` keeps ``last.ckpt``, written at the end of every
    ``checkpoint_every_n_epochs``-th epoch and of training, and the best by ``val/loss`` (when there is
    validation); ``"last"`` keeps ``last.ckpt`` only; ``"none"`` writes no checkpoint at all (sweeps: the metrics,
    logs and figures are still written, but ``--resume``, ``mmcore eval``, ``embed``, ``export`` and
    ``mmcore.load`` need a checkpoint). ``drop_last``: the training loader leaves out the last partial batch of an
    epoch (the default; several processes need it, as the cross-rank gather needs equal batch shapes).
    ``log_every_n_steps`` counts optimizer steps across epochs, so a run with fewer batches per epoch still logs
    every ``n`` steps. Lightning's ``fast_dev_run`` is not a setting (see
    :data:`mmcore.recipe.structure.REFUSED_TRAINER_KEYS`).
    """

    max_epochs: int = attrs.field(default=10, validator=_max_epochs)
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
    max_steps: int = attrs.field(default=-1, validator=_max_steps)
    limit_train_batches: int | None = attrs.field(default=None, validator=_optional_positive)
    limit_val_batches: int | None = attrs.field(default=None, validator=_optional_positive)
    val_every_n_epochs: int = attrs.field(default=1, validator=_non_negative)
    val_check_interval: float = attrs.field(default=1.0, validator=_fraction)
    checkpoint: Literal["best_and_last", "last", "none"] = "best_and_last"
    checkpoint_every_n_epochs: int = attrs.field(default=1, validator=_positive)
    drop_last: bool = True

    @property
    def validates(self) -> bool:
        """Whether the run validates at all (``val/loss`` exists, so a best checkpoint can)."""
        return self.val_every_n_epochs > 0


@attrs.frozen
class LoggerSettings:
    """``[logger]``: Lightning loggers written beside TensorBoard (``tb/``, always on: the figures and the HParams
    view go there), each into the run directory and none of them online: ``csv`` (``csv/version_<n>/metrics.csv``,
    a new version for each ``--resume``), ``mlflow`` (a local file store ``mlflow/``, ``mlflow ui
    --backend-store-uri file:RUN_DIR/mlflow``; needs ``pip install mlflow-skinny``), ``wandb`` (offline mode,
    ``wandb/``, ``wandb sync`` uploads it later; needs ``pip install wandb``). The recipe name is the MLflow
    experiment and the W&B project, the run directory's name the run's.

    ``figures = false`` leaves out the pictures (``recall_heatmap.png``, ``embeddings_2d.png``, their TensorBoard
    images and the embedding projector; about 2 s a run on a CPU, which a sweep of many small runs need not
    pay); the metrics, scalars and HParams view are written as always."""

    csv: bool = False
    mlflow: bool = False
    wandb: bool = False
    figures: bool = True


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
    logger: LoggerSettings = LoggerSettings()
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
    logger: LoggerSettings = LoggerSettings()
    embed_dim: int = attrs.field(default=128, validator=_positive)
    seed: int = attrs.field(default=0, validator=_seed)
    output_dir: str = attrs.field(default="runs", validator=_path_text)
    name: str = attrs.field(default="", validator=_one_component)

