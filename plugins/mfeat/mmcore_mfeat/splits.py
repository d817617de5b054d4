"""Pure numpy helpers: the training pairing plan, train-only standardisation, captions.

Every function takes and returns numpy arrays; randomness comes only from ``numpy.random.default_rng`` seeded by the
arguments, so the splits never depend on call order or the global RNG.
"""

from __future__ import annotations


def pairing_plan(labels, groups: list, modalities: list) -> dict:
    """Presence of each modality in a split whose samples each observe one group of modalities.

    labels: ``[n]`` classes of the split's rows. Group ``j % len(groups)`` goes to the ``j``-th row of each class, so
    every group sees every class about equally. Returns ``{m: [n] bool}``. Groups are disjoint in samples: two
    modalities that never share a group are never observed together.
    """
    import numpy as np

    group_of = np.empty(len(labels), dtype=np.int64)
    for c in np.unique(labels):
        rows = np.flatnonzero(labels == c)
        group_of[rows] = np.arange(len(rows)) % len(groups)
    return {m: np.isin(group_of, [g for g, members in enumerate(groups) if m in members]) for m in modalities}


def standardise(x, fit_rows):
    """``(x - mean) / std`` with the mean and std of ``x[fit_rows]`` only (``x [N, d]``, ``fit_rows`` bool ``[N]``).

    A feature constant on the fitting rows is only centred (its std is taken as 1). Returns float32 ``[N, d]``.
    """
    import numpy as np

    fit = x[fit_rows]
    mean, std = fit.mean(0), fit.std(0)
    std = np.where(std > 1e-8, std, 1.0)
    return ((x - mean) / std).astype(np.float32)


def caption_one_hot(labels, variants: int, num_classes: int, seed: int):
    """The ``text`` modality's input: a one-hot ``[N, variants * num_classes]`` float32.

    Row ``i`` gets caption ``t_i * num_classes + labels[i]``, with the phrasing variant ``t_i`` drawn uniformly from
    ``range(variants)`` (seeded). The text encoder's vocabulary must list the captions in that order: every class for
    variant 0, then every class for variant 1, ...
    """
    import numpy as np

    rng = np.random.default_rng([seed, 1])
    variant = rng.integers(0, variants, len(labels))
    out = np.zeros((len(labels), variants * num_classes), dtype=np.float32)
    out[np.arange(len(labels)), variant * num_classes + labels] = 1.0
    return out
