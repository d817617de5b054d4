"""Anchor strategy ``query_target``: one contrastive term per batch, each query against its own target.

For a batch whose samples hold a ``query`` and one of several target modalities, the term's row ``i`` is
``query = z[query][i]``, ``key = z[t_i][i]`` where ``t_i`` is the target modality present in sample ``i``, and
``labels[i]`` is the position of ``t_i`` in ``targets`` (the pair's modality id; compositions such as ``a+b`` are
modalities of their own, so their ids are distinct). Rows lacking the query or every target take no part.
A loss that ignores labels (``infonce``) then contrasts every query against the candidates of every target
modality; ``mamcl`` restricts each row to candidates of its positive's modality.

A sample holding several targets (not the case in ``mixed_targets`` training batches) uses the first one in
``targets`` order: this is our choice, one pair per sample keeps one term per batch.
"""

import attrs

import mmcore


@attrs.frozen
class QueryTargetConfig:
    """``query``: the query modality; ``targets``: the candidate modalities, in id order (default: every other
    modality of the recipe, in recipe order)."""

    query: str = "query"
    targets: list[str] = attrs.field(factory=list)


def resolve_targets(config: QueryTargetConfig, modalities: tuple) -> tuple:
    """The target modalities (id = position), checked against the recipe's modalities."""
    if config.query not in modalities:
        raise mmcore.ConfigError("query", f"query modality {config.query!r} has no encoder; modalities: "
                                          f"{', '.join(modalities)}")
    targets = tuple(config.targets) or tuple(m for m in modalities if m != config.query)
    unknown = [t for t in targets if t not in modalities]
    if unknown:
        raise mmcore.ConfigError("targets", f"target {unknown[0]!r} has no encoder; modalities: "
                                            f"{', '.join(modalities)}")
    if config.query in targets:
        raise mmcore.ConfigError("targets", f"the query modality {config.query!r} cannot be a target")
    if len(set(targets)) != len(targets) or not targets:
        raise mmcore.ConfigError("targets", "targets must be distinct and at least one")
    return targets


def select_targets(z: dict, present: dict, targets: tuple):
    """Per row, the first present target: ``(key [B, d], ids [B] long, any_present [B] bool)``.

    Rows with no target present get id 0 and the embedding of ``targets[0]`` (meaningless; ``any_present`` is
    False there).
    """
    import torch

    keys = torch.stack([z[t] for t in targets])                    # [T, B, d]
    held = torch.stack([present[t].bool() for t in targets])       # [T, B]
    ids = held.int().argmax(dim=0)                                 # first True per column (0 if none)
    rows = torch.arange(keys.shape[1], device=keys.device)
    return keys[ids, rows], ids.long(), held.any(dim=0)


def build_query_target(config: QueryTargetConfig, context: mmcore.AnchorContext):
    from torch import nn

    targets = resolve_targets(config, context.modalities)
    query = config.query

    class QueryTarget(nn.Module):
        """One term ``query-target``: ``z[query]`` against the present target's embedding, labelled by its id."""

        def forward(self, z, present, batch):
            key, ids, has_target = select_targets(z, present, targets)
            mask = present[query].bool() & has_target
            return mmcore.Alignment([mmcore.AlignmentTerm(f"{query}-target", z[query], key, mask, labels=ids)])

        def term_names(self):
            return (f"{query}-target",)

        def trained_pairs(self, observed):
            return mmcore.pairs_with(query, observed) & {frozenset((query, t)) for t in targets}

    return QueryTarget()
