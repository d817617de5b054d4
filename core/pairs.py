"""Modality pairs: from a pairing plan to observed pairs, and the fixed-anchor terms several strategies share.

Pairs are unordered: ``frozenset({a, b})``. Term names are ``"<query>-<key>"`` (``"text-image"``), the form the
CLI, TensorBoard (``train/loss/<term>``) and ``[loss.per_term]`` use.
"""

from __future__ import annotations

import itertools

from .contracts import AlignmentTerm


def observed_pairs(groups) -> frozenset:
    """The unordered pairs inside each group of modalities observed together: ``[["image", "text", "audio"]]`` ->
    ``{image-text, image-audio, text-audio}``."""
    return frozenset(frozenset(p) for group in groups for p in itertools.combinations(list(group), 2)
                     if p[0] != p[1])


def pairs_with(modality: str, observed) -> set:
    """The observed pairs that include ``modality`` (what a fixed anchor trains directly)."""
    return {pair for pair in observed if modality in pair}


def anchor_term_names(anchor: str, modalities) -> tuple:
    """``("<m>-<anchor>", ...)`` for every modality but the anchor, in order."""
    return tuple(f"{m}-{anchor}" for m in modalities if m != anchor)


def anchor_terms(z: dict, present: dict, anchor: str, modalities) -> list:
    """Symmetric terms ``z[m]`` (query) against ``z[anchor]`` (key) on the rows having both, for every modality
    ``m`` but the anchor; named as :func:`anchor_term_names`. ``z[m]``: ``[B, d]``; ``present[m]``: ``[B]``."""
    return [AlignmentTerm(f"{m}-{anchor}", z[m], z[anchor], present[m].bool() & present[anchor].bool())
            for m in modalities if m != anchor]
