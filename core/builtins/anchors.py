"""Built-in anchor strategy ``pairwise``: every pair of modalities observed together is aligned directly.

The no-anchor baseline (CLIP's objective, applied to every co-observed pair): nothing has to emerge, so it bounds
what a binding method can reach when all pairs are supervised. It also gives the core a complete recipe without any
plugin installed (``mmcore.testing`` uses it).
"""

import itertools

import attrs

from ..contracts import Alignment, AlignmentTerm, Component
from ..hookspecs import hookimpl


@attrs.frozen
class PairwiseConfig:
    """No settings: the pairs come from the dataset's pairing plan."""


def build_pairwise(config: PairwiseConfig, context):
    from torch import nn

    pairs = [(a, b) for a, b in itertools.combinations(context.modalities, 2)
             if frozenset((a, b)) in context.observed_pairs]

    class Pairwise(nn.Module):
        """Term ``a-b`` for each observed pair: query ``z[a]``, key ``z[b]``, rows where both are present."""

        def forward(self, z, present, batch):
            return Alignment([AlignmentTerm(f"{a}-{b}", z[a], z[b], present[a] & present[b]) for a, b in pairs])

        def term_names(self):
            return tuple(f"{a}-{b}" for a, b in pairs)

        def trained_pairs(self, observed):
            return {frozenset(p) for p in pairs} & set(observed)

    return Pairwise()


@hookimpl
def mmcore_anchor_strategies():
    return [Component("pairwise", PairwiseConfig, build_pairwise, "align every observed pair directly")]
