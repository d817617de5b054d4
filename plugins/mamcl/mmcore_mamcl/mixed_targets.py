"""Dataset ``mixed_targets``: queries of one modality retrieve candidates of several target modalities.

Modalities: ``query``, ``a``, ``b`` and the composition ``a+b``. Each item ``k`` has a class ``y_k`` and two
shared latents, ``u_k = mu_u[y_k] + spread * eps`` and ``v_k = mu_v[y_k] + spread * eps'`` (``[latent_dim]``
each). Views are fixed random two-layer networks of their latents plus a private latent, as in the core's
``synthetic`` generator, then observation noise and standardisation::

    x_query = view_q([u, v, p_q]) + query_noise * n   # the query describes the whole item
    x_a     = view_a([u, p_a])    + noise * n         # target "a" carries only u
    x_b     = view_b([v, p_b])    + noise * n         # target "b" carries only v
    x_a+b   = [x_a, x_b]                              # the composed target carries both (concatenated inputs)

So the target modalities of one item share its class and part of its content: ``a+b`` contains ``a`` and ``b``,
and a candidate of another modality can match a query about as well as its positive does. A query does not say
which modality it wants, so with plain InfoNCE over a mixed batch a query whose positive is an ``a`` is pushed away
from the ``b`` and ``a+b`` candidates that match it, against the rows whose positive is a ``b`` or an ``a+b``.
This is the situation MAMCL is for.

Training and validation rows hold ``query`` plus exactly one target modality, ``TARGETS[row % 3]``, so every batch
mixes the three. With ``repeats = r`` each item fills ``r`` consecutive rows, each with a freshly noised query and
another target (``r = 3``: every item is paired once with ``a``, ``b`` and ``a+b``, as the same media recur across
tasks in UNITE's instruction data; ``r = 1``: every row is a new item). The test split holds distinct items with
every target present, so each target modality gives one candidate pool over the same test items. Everything
derives from ``seed`` through one ``torch.Generator``.
"""

from __future__ import annotations

import attrs

import mmcore

QUERY = "query"
TARGETS = ("a", "b", "a+b")


@attrs.frozen
class MixedTargetsConfig:
    """See the module docstring. ``input_dim`` is the width of ``query``, ``a`` and ``b`` (``a+b`` has twice
    it); ``noise`` is the targets' observation noise, ``query_noise`` the query's (the signal has unit scale)."""

    num_classes: int = attrs.field(default=20, validator=attrs.validators.gt(1))
    train_size: int = attrs.field(default=3072, validator=attrs.validators.gt(0))
    val_size: int = attrs.field(default=300, validator=attrs.validators.gt(0))
    test_size: int = attrs.field(default=1000, validator=attrs.validators.gt(0))
    latent_dim: int = attrs.field(default=8, validator=attrs.validators.gt(0))
    private_dim: int = attrs.field(default=4, validator=attrs.validators.ge(0))
    input_dim: int = attrs.field(default=32, validator=attrs.validators.gt(0))
    hidden_dim: int = attrs.field(default=64, validator=attrs.validators.gt(0))
    class_separation: float = attrs.field(default=1.5, validator=attrs.validators.ge(0.0))
    spread: float = attrs.field(default=1.0, validator=attrs.validators.ge(0.0))
    noise: float = attrs.field(default=0.1, validator=attrs.validators.ge(0.0))
    query_noise: float = attrs.field(default=0.1, validator=attrs.validators.ge(0.0))
    repeats: int = attrs.field(default=3, validator=attrs.validators.gt(0))
    seed: int = 0


def _clean_view(latent, config: MixedTargetsConfig, gen):
    """``[N, k] -> [N, input_dim]``: a fixed random tanh network of ``[latent, private]``, standardised."""
    import torch

    n = latent.shape[0]
    latent = torch.cat([latent, torch.randn(n, config.private_dim, generator=gen)], dim=1)
    w1 = torch.randn(latent.shape[1], config.hidden_dim, generator=gen) / latent.shape[1] ** 0.5
    w2 = torch.randn(config.hidden_dim, config.input_dim, generator=gen) / config.hidden_dim ** 0.5
    clean = torch.tanh(latent @ w1 * 1.5) @ w2
    return (clean - clean.mean(0)) / clean.std(0).clamp_min(1e-6)


def _observe(clean, noise: float, gen):
    """Add observation noise ``[N, w]`` and standardise each column."""
    import torch

    x = clean + noise * torch.randn(clean.shape, generator=gen)
    return (x - x.mean(0)) / x.std(0).clamp_min(1e-6)


def _rows_of_items(size: int, repeats: int, first_item: int):
    """Training-plan rows: row ``r`` shows item ``first_item + r // repeats`` with target ``TARGETS[r % 3]``."""
    import torch

    rows = torch.arange(size)
    return first_item + rows // repeats, rows % len(TARGETS)


def generate(config: MixedTargetsConfig) -> dict:
    """All splits: ``{"train"|"val"|"test": (inputs, present, labels)}``; inputs ``{m: [n, width]}``, present
    ``{m: [n] bool}``, labels ``[n]`` long (the item's class).

    Train/val rows hold ``query`` and one target; with ``repeats = r`` each item fills ``r`` consecutive rows, so it
    is paired with ``r`` different targets, each time through a freshly noised query. Test rows are distinct items
    holding every target.
    """
    import torch

    gen = torch.Generator().manual_seed(config.seed)
    rep = config.repeats
    n_train, n_val = -(-config.train_size // rep), -(-config.val_size // rep)
    n_items = n_train + n_val + config.test_size
    mu_u = torch.randn(config.num_classes, config.latent_dim, generator=gen) * config.class_separation
    mu_v = torch.randn(config.num_classes, config.latent_dim, generator=gen) * config.class_separation
    classes = torch.randint(0, config.num_classes, (n_items,), generator=gen)
    u = mu_u[classes] + config.spread * torch.randn(n_items, config.latent_dim, generator=gen)
    v = mu_v[classes] + config.spread * torch.randn(n_items, config.latent_dim, generator=gen)

    query_clean = _clean_view(torch.cat([u, v], dim=1), config, gen)
    x_a = _observe(_clean_view(u, config, gen), config.noise, gen)
    x_b = _observe(_clean_view(v, config, gen), config.noise, gen)
    targets = {"a": x_a, "b": x_b, "a+b": torch.cat([x_a, x_b], dim=1)}

    plans = {
        "train": _rows_of_items(config.train_size, rep, 0),
        "val": _rows_of_items(config.val_size, rep, n_train),
        "test": (torch.arange(config.test_size) + n_train + n_val, None),
    }
    all_items = torch.cat([items for items, _ in plans.values()])
    queries = _observe(query_clean[all_items], config.query_noise, gen)  # one fresh query per row
    splits, start = {}, 0
    for split, (items, target_of_row) in plans.items():
        size = len(items)
        inputs = {QUERY: queries[start:start + size]}
        start += size
        inputs.update({t: x[items] for t, x in targets.items()})
        present = {m: torch.ones(size, dtype=torch.bool) for m in inputs}
        if target_of_row is not None:
            present.update({t: target_of_row == k for k, t in enumerate(TARGETS)})
        splits[split] = (inputs, present, classes[items])
    return splits


def build_mixed_targets(config: MixedTargetsConfig, context=None) -> mmcore.DatasetSplits:
    splits = {name: mmcore.TensorSplit(*parts) for name, parts in generate(config).items()}
    return mmcore.DatasetSplits(
        train=splits["train"],
        val=splits["val"],
        test=splits["test"],
        inputs={QUERY: config.input_dim, "a": config.input_dim, "b": config.input_dim,
                    "a+b": 2 * config.input_dim},
        observed_pairs=frozenset(frozenset((QUERY, t)) for t in TARGETS),
        class_names=tuple(f"class {k}" for k in range(config.num_classes)),
    )
