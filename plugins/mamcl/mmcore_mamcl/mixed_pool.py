"""Evaluator ``mixed_pool``: retrieval against ONE gallery holding the candidates of every target modality.

The stress test next to the per-modality pools (the built-in ``retrieval`` evaluator gives ``query -> t`` over
the test samples holding ``t``: one pool per target modality, the way UNITE evaluates). Here the gallery is every
present candidate of every target modality of the test split. Metrics:

- ``mixed_pool/query-><t>/R@K``: query ``i`` (holding ``t``) must rank ``t_i`` above every candidate of every
  target modality from the *other* samples; the other targets of sample ``i`` itself are left out of the count
  (they are correct answers of another modality). ``mixed_pool/mean/R@K`` averages over targets.
- ``mixed_pool/any/R@1``: the top-1 of the whole gallery is a candidate of the query's own sample (any modality).
- ``mixed_pool/gap/<t>``: the modality gap ``|mean(z[query]) - mean(z[t])|`` over the rows holding both (Liang et
  al. 2022), which tells how far apart the pools sit from the queries.

MAMCL never ranks a candidate of another modality during training, so it is not expected to win here.
"""

from __future__ import annotations

import attrs

import mmcore


@attrs.frozen
class MixedPoolConfig:
    """``query``: the query modality; ``targets``: the gallery's modalities (default: every other modality);
    ``ks``: the K of Recall@K; ``chunk_size``: queries scored at once (memory ``chunk_size x gallery``)."""

    query: str = "query"
    targets: list[str] = attrs.field(factory=list)
    ks: list[int] = attrs.field(factory=lambda: [1, 5, 10])
    chunk_size: int = attrs.field(default=1024, validator=attrs.validators.gt(0))


def mixed_gallery(split, targets: tuple):
    """``(vectors [M, d], owner [M] sample row)`` over every present candidate of every target modality."""
    import numpy as np

    vectors = [split.z[t][split.present[t]] for t in targets]
    owners = [np.flatnonzero(split.present[t]) for t in targets]
    return np.concatenate(vectors).astype(np.float32), np.concatenate(owners)


def mixed_pool(split, config: MixedPoolConfig = MixedPoolConfig()) -> dict:
    """The metrics of the module docstring; ``{}`` when the query modality is missing."""
    import numpy as np

    if config.query not in split.z:
        return {}
    targets = tuple(config.targets) or tuple(m for m in split.modalities if m != config.query)
    targets = tuple(t for t in targets if t in split.z)
    gallery, owner = mixed_gallery(split, targets)
    if not len(gallery):
        return {}
    metrics, per_target = {}, {}
    for t in targets:
        rows = np.flatnonzero(split.present[config.query] & split.present[t])
        if not len(rows):
            continue
        # rank of t_i among the candidates of the other samples (sample i's other targets are not counted)
        ranks = mmcore.ranks_of_positives(split.z[config.query][rows], gallery, config.chunk_size,
                                          positives=split.z[t][rows], owners=(rows, owner))
        per_target[t] = {f"R@{k}": float(np.mean(ranks <= k)) for k in config.ks}
        gap = split.z[config.query][rows].mean(0) - split.z[t][rows].mean(0)
        metrics[f"mixed_pool/gap/{t}"] = float(np.linalg.norm(gap))
        metrics.update({f"mixed_pool/{config.query}->{t}/{key}": v for key, v in per_target[t].items()})
    for k in config.ks:
        values = [v[f"R@{k}"] for v in per_target.values()]
        if values:
            metrics[f"mixed_pool/mean/R@{k}"] = float(np.mean(values))

    rows = np.flatnonzero(split.present[config.query])
    if len(rows):
        hits = 0
        for start in range(0, len(rows), config.chunk_size):
            chunk = rows[start:start + config.chunk_size]
            top = (split.z[config.query][chunk] @ gallery.T).argmax(1)
            hits += int((owner[top] == chunk).sum())
        metrics["mixed_pool/any/R@1"] = hits / len(rows)
    return metrics


def build_mixed_pool(config: MixedPoolConfig, context=None):
    return mmcore.evaluator(lambda split: mixed_pool(split, config), ("mixed_pool/any/R@1",))
