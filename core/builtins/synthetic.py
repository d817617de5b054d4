"""Built-in dataset ``synthetic``: a seeded latent-variable multimodal generator, made in-process.

Each sample ``i`` has a class ``y_i`` and a shared latent ``s_i = mu[y_i] + spread * eps_i`` (``[shared_dim]``):
the class structure lives in ``mu``, the instance identity in ``eps``. Each modality ``m`` also has a private
latent ``p_i^m`` (``[private_dim]``) that no other modality sees. Its input is a fixed random two-layer network of
both::

    x_i^m = W2^m tanh(W1^m [informativeness_m * s_i, p_i^m]) + noise_m * n_i^m

then standardised. A weak modality has high ``noise`` or low ``informativeness``. ``pairing`` is the training
plan: each training sample observes one group of modalities (groups assigned round-robin); validation follows the
same plan and the test split observes every modality. Everything derives from ``seed`` through one
``torch.Generator``, so the data never depends on call order or the global RNG.
"""

from __future__ import annotations

import attrs

from ..contracts import Component, ConfigError
from ..hookspecs import hookimpl
from ..pairs import observed_pairs


@attrs.frozen
class ModalitySpec:
    """One synthetic modality: input width, observation noise (the signal has unit scale) and the weight of the
    shared latent in its input (0 = the modality carries nothing shared)."""

    input_dim: int = attrs.field(default=32, validator=attrs.validators.gt(0))
    noise: float = attrs.field(default=0.3, validator=attrs.validators.ge(0.0))
    informativeness: float = attrs.field(default=1.0, validator=attrs.validators.ge(0.0))


def _default_modalities() -> dict:
    return {"image": ModalitySpec(48), "text": ModalitySpec(32), "audio": ModalitySpec(40)}


@attrs.frozen
class SyntheticConfig:
    """See the module docstring. ``pairing = []`` observes every modality in every training sample."""

    modalities: dict[str, ModalitySpec] = attrs.field(factory=_default_modalities)
    num_classes: int = attrs.field(default=10, validator=attrs.validators.gt(1))
    train_size: int = attrs.field(default=4000, validator=attrs.validators.gt(0))
    val_size: int = attrs.field(default=500, validator=attrs.validators.gt(0))
    test_size: int = attrs.field(default=1000, validator=attrs.validators.gt(0))
    shared_dim: int = attrs.field(default=16, validator=attrs.validators.gt(0))
    private_dim: int = attrs.field(default=8, validator=attrs.validators.ge(0))
    hidden_dim: int = attrs.field(default=64, validator=attrs.validators.gt(0))
    class_separation: float = attrs.field(default=1.5, validator=attrs.validators.ge(0.0))
    spread: float = attrs.field(default=1.0, validator=attrs.validators.ge(0.0))
    pairing: list[list[str]] = attrs.field(factory=list)
    seed: int = 0


def _pairing_groups(config: SyntheticConfig) -> list:
    names = list(config.modalities)
    if not config.pairing:
        return [names]
    for index, group in enumerate(config.pairing):
        unknown = [m for m in group if m not in config.modalities]
        if unknown:
            raise ConfigError(f"pairing[{index}]", f"unknown modality {unknown[0]!r}; modalities: {', '.join(names)}")
        if len(group) < 1:
            raise ConfigError(f"pairing[{index}]", "a pairing group needs at least one modality")
    return [list(g) for g in config.pairing]


def generate(config: SyntheticConfig) -> dict:
    """Make all splits. Returns ``{"train"|"val"|"test": (inputs, present, labels)}`` of tensors."""
    import torch

    gen = torch.Generator().manual_seed(config.seed)
    groups = _pairing_groups(config)
    sizes = {"train": config.train_size, "val": config.val_size, "test": config.test_size}
    total = sum(sizes.values())
    means = torch.randn(config.num_classes, config.shared_dim, generator=gen) * config.class_separation
    labels = torch.randint(0, config.num_classes, (total,), generator=gen)
    shared = means[labels] + config.spread * torch.randn(total, config.shared_dim, generator=gen)

    inputs = {}
    for name, spec in config.modalities.items():
        private = torch.randn(total, config.private_dim, generator=gen)
        latent = torch.cat([spec.informativeness * shared, private], dim=1)
        w1 = torch.randn(latent.shape[1], config.hidden_dim, generator=gen) / latent.shape[1] ** 0.5
        w2 = torch.randn(config.hidden_dim, spec.input_dim, generator=gen) / config.hidden_dim ** 0.5
        clean = torch.tanh(latent @ w1 * 1.5) @ w2
        clean = (clean - clean.mean(0)) / clean.std(0).clamp_min(1e-6)
        x = clean + spec.noise * torch.randn(total, spec.input_dim, generator=gen)
        inputs[name] = (x - x.mean(0)) / x.std(0).clamp_min(1e-6)

    splits, start = {}, 0
    for split, size in sizes.items():
        rows = slice(start, start + size)
        start += size
        present = {m: torch.ones(size, dtype=torch.bool) for m in config.modalities}
        if split != "test":
            plan = torch.arange(size) % len(groups)
            present = {m: torch.tensor([m in groups[g] for g in plan.tolist()]) for m in config.modalities}
        splits[split] = ({m: x[rows] for m, x in inputs.items()}, present, labels[rows])
    return splits


def build_synthetic(config: SyntheticConfig, context=None):
    from ..contracts import DatasetSplits
    from ..data import TensorSplit

    splits = {name: TensorSplit(*parts) for name, parts in generate(config).items()}
    observed = observed_pairs(_pairing_groups(config))
    return DatasetSplits(
        train=splits["train"],
        val=splits["val"],
        test=splits["test"],
        inputs={m: spec.input_dim for m, spec in config.modalities.items()},
        observed_pairs=observed,
        class_names=tuple(f"class {k}" for k in range(config.num_classes)),
    )


@hookimpl
def mmcore_datasets():
    return [Component("synthetic", SyntheticConfig, build_synthetic, "seeded latent-variable multimodal data")]
