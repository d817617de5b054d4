"""Fit the NEW -> OLD orthogonal map on anchors and measure it on embedded splits (no runs needed: the inputs are
:class:`mmcore.EmbeddedSplit` objects of the same samples embedded by two models).

Anchors: a seeded permutation of the training rows; the anchors for ``n`` are the first ``n`` rows of that order in
which the fit modality is present, so smaller anchor sets are nested in larger ones. Each other modality's means
(old and new) come from the first ``n`` rows of the same order in which it is present (the anchors themselves when
every modality is present).

Cross-model retrieval, on the test split, for every ordered modality pair ``q -> g`` (``q == g`` included): queries
are NEW-model embeddings of ``q``, mapped by ``R`` with ``q``'s means and re-normalised; the gallery is the
OLD-model embeddings of ``g``; query ``i``'s true partner is gallery item ``i`` (the same sample); rows where both
are present. ``before`` uses the NEW embeddings unmapped. Every side is L2-normalised before the search.
``within_old`` / ``within_new``: each model's own ``q -> g`` Recall@1 (``None`` for ``q == g``, where within-model
retrieval is trivially 1).
"""

from __future__ import annotations

import itertools

import numpy as np

import mmcore

from .procrustes import apply, fit_procrustes, relative_residual


def _unit(x) -> np.ndarray:
    return mmcore.unit_rows(np.asarray(x, dtype=np.float32))


def both_present(old, new, m: str) -> np.ndarray:
    return np.asarray(old.present[m], bool) & np.asarray(new.present[m], bool)


def first_rows(order: np.ndarray, mask: np.ndarray, n: int) -> np.ndarray:
    """The first ``n`` indices of ``order`` where ``mask`` is true (fewer if there are not that many)."""
    return order[mask[order]][:n]


def fit_map(old_train, new_train, modality: str, n: int, order: np.ndarray) -> dict:
    """Fit ``R`` on the first ``n`` anchors (fit ``modality``, NEW -> OLD) and every modality's means.

    Returns ``{"rotation": [d, d], "anchors": int, "means": {m: (mu_new [d], mu_old [d])}, "rows": {m: [k]}}``.
    """
    modalities = [m for m in old_train.modalities if m in new_train.z]
    rows = {m: first_rows(order, both_present(old_train, new_train, m), n) for m in modalities}
    anchors = rows[modality]
    rotation, _, _ = fit_procrustes(new_train.z[modality][anchors], old_train.z[modality][anchors])
    means = {m: (new_train.z[m][r].astype(np.float64).mean(0), old_train.z[m][r].astype(np.float64).mean(0))
             for m, r in rows.items() if len(r)}
    return {"rotation": rotation, "anchors": int(len(anchors)), "means": means, "rows": rows}


def mapped(fit: dict, m: str, z_new) -> np.ndarray:
    """NEW-model rows of modality ``m`` mapped into the OLD space (not normalised)."""
    mu_new, mu_old = fit["means"][m]
    return apply(z_new, fit["rotation"], mu_new, mu_old)


def residuals(fit: dict, old_train, new_train, old_test, new_test) -> dict:
    """``{m: {"anchors": r, "test": r}}``: ``|map(new) - old|_F / |old|_F`` on the rows that gave ``m``'s means
    and on the test rows where ``m`` is present."""
    out = {}
    for m, rows in fit["rows"].items():
        if m not in fit["means"]:
            continue
        test_rows = both_present(old_test, new_test, m)
        out[m] = {
            "anchors": relative_residual(mapped(fit, m, new_train.z[m][rows]), old_train.z[m][rows]),
            "test": relative_residual(mapped(fit, m, new_test.z[m][test_rows]), old_test.z[m][test_rows]),
        }
    return out


def retrieval_rows(fit: dict, old_test, new_test) -> list:
    """One dict per ordered pair ``q -> g``: ``query, gallery, n, before, after, within_old, within_new``."""
    modalities = list(fit["means"])
    rows_out = []
    for q, g in itertools.product(modalities, repeat=2):
        rows = both_present(old_test, new_test, q) & both_present(old_test, new_test, g)
        if rows.sum() < 1:
            continue
        gallery = _unit(old_test.z[g][rows])
        row = {"query": q, "gallery": g, "n": int(rows.sum()),
               "before": mmcore.recall_at_1(_unit(new_test.z[q][rows]), gallery),
               "after": mmcore.recall_at_1(_unit(mapped(fit, q, new_test.z[q][rows])), gallery),
               "within_old": None, "within_new": None}
        if q != g:
            row["within_old"] = mmcore.recall_at_1(_unit(old_test.z[q][rows]), gallery)
            row["within_new"] = mmcore.recall_at_1(_unit(new_test.z[q][rows]), _unit(new_test.z[g][rows]))
        rows_out.append(row)
    return rows_out


def _mean(values) -> float | None:
    values = [v for v in values if v is not None]
    return float(np.mean(values)) if values else None


def summary(retrieval: list) -> dict:
    """Means over same-modality (``q == g``) and cross-modal (``q != g``) pairs."""
    same = [r for r in retrieval if r["query"] == r["gallery"]]
    cross = [r for r in retrieval if r["query"] != r["gallery"]]
    return {
        "same_before": _mean(r["before"] for r in same), "same_after": _mean(r["after"] for r in same),
        "cross_before": _mean(r["before"] for r in cross), "cross_after": _mean(r["after"] for r in cross),
        "cross_within_old": _mean(r["within_old"] for r in cross),
        "cross_within_new": _mean(r["within_new"] for r in cross),
    }


def align_report(old_train, new_train, old_test, new_test, modality: str, counts, seed: int = 0) -> tuple:
    """Fit and measure for each anchor count -> ``(sweep, fits)``.

    ``sweep``: one dict per count ``{"anchors_requested", "anchors", "residual", "retrieval", "summary"}``;
    ``fits``: ``{requested count: fit_map(...)}``. The splits of both models must hold the same samples in the
    same order.
    """
    order = np.random.default_rng(seed).permutation(len(old_train.present[modality]))
    sweep, fits = [], {}
    for n in counts:
        fit = fit_map(old_train, new_train, modality, n, order)
        retrieval = retrieval_rows(fit, old_test, new_test)
        sweep.append({"anchors_requested": int(n), "anchors": fit["anchors"],
                      "residual": residuals(fit, old_train, new_train, old_test, new_test),
                      "retrieval": retrieval, "summary": summary(retrieval)})
        fits[n] = fit
    return sweep, fits
