"""Pictures of a run and comparisons of runs: Recall@1 heat maps, 2-D maps of the space, ``mmcore report``.

Figures need matplotlib (``pip install "mmcore-framework[plots]"``); without it runs still train, log scalars and
the embedding projector, and say once that figures were skipped.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

PROJECTOR_POINTS = 2000
"""Test embeddings (per modality) written to TensorBoard's embedding projector."""


def have_matplotlib() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def recall_matrix(metrics: dict, modalities: list, key: str = "R@1") -> np.ndarray:
    """``[M, M]`` matrix of ``retrieval/<q>-><g>/<key>`` (rows: query modality, columns: gallery); NaN on the
    diagonal and where a pair was not measured."""
    out = np.full((len(modalities), len(modalities)), np.nan)
    for i, q in enumerate(modalities):
        for j, g in enumerate(modalities):
            out[i, j] = metrics.get(f"retrieval/{q}->{g}/{key}", np.nan)
    return out


def has_retrieval(metrics: dict, modalities: list) -> bool:
    """Whether ``metrics`` hold a ``retrieval/<q>-><g>/R@1`` for some pair of ``modalities`` (else a heat map
    would be all NaN, and none is drawn)."""
    return bool(np.isfinite(recall_matrix(metrics, modalities)).any())


HEATMAP_SKIPPED = "no retrieval metrics (add a `retrieval` evaluator): Recall@1 heat map skipped"


def heatmap_figure(metrics: dict, modalities: list, trained_pairs: frozenset, title: str = "", ax=None):
    """Recall@1 heat map; trained pairs are outlined and marked ``T``, emergent pairs marked ``E``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    values = recall_matrix(metrics, modalities)
    fig = None
    if ax is None:
        fig, ax = plt.subplots(figsize=(1.2 * len(modalities) + 2.0, 1.1 * len(modalities) + 1.2))
    image = ax.imshow(values, vmin=0.0, vmax=1.0, cmap="viridis")
    ax.set_xticks(range(len(modalities)), modalities, rotation=30, ha="right")
    ax.set_yticks(range(len(modalities)), modalities)
    ax.set_xlabel("gallery")
    ax.set_ylabel("query")
    for i, q in enumerate(modalities):
        for j, g in enumerate(modalities):
            if i == j or np.isnan(values[i, j]):
                continue
            trained = frozenset((q, g)) in trained_pairs
            ax.text(j, i, f"{values[i, j]:.2f}\n{'T' if trained else 'E'}", ha="center", va="center", fontsize=8,
                    color="white" if values[i, j] < 0.6 else "black")
            if trained:
                ax.add_patch(Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, edgecolor="red", linewidth=2))
    ax.set_title(title or "Recall@1 (T trained, E emergent)")
    if fig is not None:
        fig.colorbar(image, ax=ax, fraction=0.046)
        fig.tight_layout()
    return fig or ax.figure


def subsample(split, max_points: int = PROJECTOR_POINTS, seed: int = 0):
    """Up to ``max_points`` present test rows per modality, seeded: ``(z [n, d], modality names [n], labels [n] or
    None)``. The 2-D map and the embedding projector show the same points."""
    rng = np.random.default_rng(seed)
    chunks, names, labels = [], [], []
    for m in split.modalities:
        rows = rng.permutation(np.flatnonzero(split.present[m]))[:max_points]
        chunks.append(split.z[m][rows])
        names += [m] * len(rows)
        if split.labels is not None:
            labels.append(split.labels[rows])
    return np.concatenate(chunks), np.array(names), (np.concatenate(labels) if labels else None)


def projection_2d(split, max_points: int = PROJECTOR_POINTS, seed: int = 0):
    """PCA of the test embeddings of all modalities in one shared basis.

    Returns ``(points [n, 2], modality names [n], labels [n] or None)`` with up to ``max_points`` per modality.
    """
    points, names, labels = subsample(split, max_points, seed)
    centred = points - points.mean(0)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    return centred @ vt[:2].T, names, labels


def projection_figure(split):
    """Two panels of the same PCA map: coloured by modality (the modality gap shows) and by class."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    points, names, labels = projection_2d(split)
    fig, axes = plt.subplots(1, 2 if labels is not None else 1, figsize=(11, 5), squeeze=False)
    for m in split.modalities:
        keep = names == m
        axes[0, 0].scatter(points[keep, 0], points[keep, 1], s=4, alpha=0.5, label=m)
    axes[0, 0].legend(markerscale=3)
    axes[0, 0].set_title("test embeddings by modality (PCA of the shared space)")
    if labels is not None:
        axes[0, 1].scatter(points[:, 0], points[:, 1], s=4, alpha=0.5, c=labels, cmap="tab10")
        axes[0, 1].set_title("by class")
    fig.tight_layout()
    return fig


def write_run_pictures(run_dir: Path, split, metrics: dict, experiment=None, step: int = 0,
                       summary_metrics: tuple = ()) -> list:
    """Save ``recall_heatmap.png`` and ``embeddings_2d.png`` into the run directory and, given a TensorBoard
    ``SummaryWriter`` (``experiment``), log them plus the embedding projector. Returns the PNG paths written.

    The heat map is drawn only when the metrics hold retrieval values (:func:`has_retrieval`): a run whose
    evaluators measure no retrieval gets no all-NaN picture. ``summary_metrics`` (the run's declared summary keys)
    is accepted for the caller's convenience; the pictures do not depend on it."""
    if experiment is not None:
        import torch

        points, names, labels = subsample(split)
        labels = [str(v) for v in labels] if labels is not None else ["-"] * len(names)
        experiment.add_embedding(torch.from_numpy(points), metadata=list(zip(names.tolist(), labels)),
                                 metadata_header=["modality", "label"], tag="test_embeddings", global_step=step)
    if not have_matplotlib():
        return []
    written = []
    figures = [("embeddings_2d", lambda: projection_figure(split))]
    if has_retrieval(metrics, split.modalities):
        figures.insert(0, ("recall_heatmap", lambda: heatmap_figure(metrics, split.modalities, split.trained_pairs)))
    for name, make in figures:
        figure = make()
        path = run_dir / f"{name}.png"
        figure.savefig(path, dpi=110)
        written.append(path)
        if experiment is not None:
            experiment.add_figure(f"figures/{name}", figure, global_step=step)  # closes the figure
        else:
            import matplotlib.pyplot as plt

            plt.close(figure)
    return written


# ------------------------------------------------------------------------------------------ mmcore report


SUMMARY_KEYS = ("retrieval/trained/R@1", "retrieval/emergent/R@1", "zero_shot/trained/acc", "zero_shot/emergent/acc",
                "knn/mean/acc")
"""The summary of a run whose ``model.json`` declares none (runs written before evaluators declared them)."""


def declared_summary(run_dir: Path) -> tuple | None:
    """The summary metric keys the run's evaluators declared (``model.json``'s ``summary_metrics``), or None for a
    run without them (no or an older ``model.json``)."""
    from ..runs.directory import MODEL_FILE

    try:
        record = json.loads((Path(run_dir) / MODEL_FILE).read_text())
    except (OSError, ValueError):
        return None
    keys = record.get("summary_metrics") if isinstance(record, dict) else None
    return tuple(keys) if isinstance(keys, list) else None


def summary_keys(metrics: dict, declared: tuple | None) -> list:
    """The summary keys present in ``metrics``, in declared order: ``declared`` (None: :data:`SUMMARY_KEYS`)."""
    return [k for k in (SUMMARY_KEYS if declared is None else declared) if k in metrics]


def read_run(run_dir: Path) -> dict:
    """A run's metrics, resolved recipe, trained pairs and summary keys (``metrics.json``, ``recipe.toml``,
    ``pairs.json``, ``model.json``)."""
    from ..recipe.files import tomllib

    metrics = json.loads((run_dir / "metrics.json").read_text())
    recipe = tomllib.loads((run_dir / "recipe.toml").read_text())
    pairs = json.loads((run_dir / "pairs.json").read_text()) if (run_dir / "pairs.json").exists() else {}
    return {"dir": run_dir, "metrics": metrics, "recipe": recipe, "modalities": list(recipe["encoders"]),
            "trained_pairs": frozenset(frozenset(p) for p in pairs.get("trained", [])),
            "summary": summary_keys(metrics, declared_summary(run_dir))}


def _column(key: str) -> str:
    return key.replace("retrieval/", "").replace("/acc", "")


def comparison_table(runs: list) -> str:
    """A plain-text table: one row per run (anchor strategy, loss, seed) and the summary metrics: the union, in
    order, of the keys each run's evaluators declared (``run["summary"]``; runs read without it use
    :data:`SUMMARY_KEYS`), each shown where present in a run's metrics (``-`` elsewhere)."""
    keys = list(dict.fromkeys(k for run in runs
                              for k in run.get("summary", summary_keys(run["metrics"], None))))
    header = ["run", "anchor", "loss", "seed", *[_column(k) for k in keys]]
    rows = []
    for run in runs:
        r, m = run["recipe"], run["metrics"]
        rows.append([run["dir"].name, r["anchor"]["name"], r["loss"]["name"], str(r.get("seed", "")),
                     *[f"{m[k]:.3f}" if k in m else "-" for k in keys]])
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(header, widths))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(str(c).ljust(w) for c, w in zip(row, widths)) for row in rows]
    return "\n".join(lines)


def side_by_side_heatmaps(runs: list, path: Path) -> Path | None:
    """The Recall@1 heat maps of the runs that have retrieval metrics (:func:`has_retrieval`) in one PNG; ``None``
    without matplotlib or when no run has them."""
    runs = [run for run in runs if has_retrieval(run["metrics"], run["modalities"])]
    if not runs or not have_matplotlib():
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(runs), figsize=(4.6 * len(runs), 4.4), squeeze=False)
    for ax, run in zip(axes[0], runs):
        heatmap_figure(run["metrics"], run["modalities"], run["trained_pairs"], title=run["dir"].name, ax=ax)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
