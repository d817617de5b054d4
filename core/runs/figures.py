"""A run's figures: the Recall@1 heat map of every ordered modality pair and a 2-D map of the shared space, written
into the run directory (PNG, when matplotlib is installed) and to TensorBoard's projector."""

from __future__ import annotations

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
        fig.colorbar(image, ax=ax, fraction=0.046, label="Recall@1")
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


def principal_components(points: np.ndarray) -> tuple:
    """PCA of ``points [n, d]`` (n >= 1): ``(coordinates [n, 2], explained [2])``, the first two principal
    coordinates and the fraction of the total variance each explains (0 when the points do not vary; a space of
    one dimension gets a zero second coordinate)."""
    centred = points - points.mean(0)
    _, singular, vt = np.linalg.svd(centred, full_matrices=False)
    coordinates = np.zeros((len(points), 2))
    coordinates[:, :min(2, len(vt))] = centred @ vt[:2].T
    variance = singular ** 2
    explained = np.zeros(2)
    if variance.sum() > 0:
        explained[:min(2, len(variance))] = variance[:2] / variance.sum()
    return coordinates, explained


def projection_2d(split, max_points: int = PROJECTOR_POINTS, seed: int = 0):
    """PCA of the test embeddings of all modalities in one shared basis.

    Returns ``(points [n, 2], modality names [n], labels [n] or None)`` with up to ``max_points`` per modality.
    """
    points, names, labels = subsample(split, max_points, seed)
    return principal_components(points)[0], names, labels


LEGEND_CLASSES = 30
"""Up to this many classes the class panel has a legend naming each; past it, a colour bar of the classes."""


def distinct_colours(n: int) -> np.ndarray:
    """``[n, 4]`` RGBA colours, no two alike: matplotlib's ``tab10`` for up to 10, ``tab20`` for up to 20, else
    ``n`` steps along the continuous ``turbo`` map (interpolated to exactly ``n`` entries, so that no colour
    repeats however many there are)."""
    from matplotlib import colormaps
    from matplotlib.colors import LinearSegmentedColormap, to_rgba_array

    if n <= 10:
        return to_rgba_array(colormaps["tab10"].colors[:n])
    if n <= 20:
        return to_rgba_array(colormaps["tab20"].colors[:n])
    return LinearSegmentedColormap.from_list("classes", colormaps["turbo"].colors, N=n)(np.arange(n))


def class_name(class_names: tuple, label: int) -> str:
    """The dataset's name of class ``label``, or the label itself where it has none."""
    return str(class_names[label]) if 0 <= label < len(class_names) else str(label)


def projection_figure(split):
    """Two panels of the same PCA map (axes: the first two principal components and the variance each explains):
    coloured by modality (the modality gap shows) and by class, each with its key: a legend of the modalities, and
    of the classes (their dataset names, else their labels) up to :data:`LEGEND_CLASSES`, a colour bar past it.
    Colours never repeat (:func:`distinct_colours`)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import BoundaryNorm, ListedColormap

    points, names, labels = subsample(split)
    points, explained = principal_components(points)
    panels = 2 if labels is not None else 1
    fig, axes = plt.subplots(1, panels, figsize=(6.5 * panels, 5.2), squeeze=False, layout="constrained")
    for ax in axes[0]:
        ax.set_xlabel(f"PC 1 ({explained[0]:.0%} of variance)")
        ax.set_ylabel(f"PC 2 ({explained[1]:.0%} of variance)")
    ax = axes[0, 0]
    for colour, m in zip(distinct_colours(len(split.modalities)), split.modalities):
        keep = names == m
        ax.scatter(points[keep, 0], points[keep, 1], s=4, alpha=0.5, color=colour, label=m)
    ax.legend(title="modality", markerscale=3)
    ax.set_title("test embeddings by modality (PCA of the shared space)")
    if labels is None:
        return fig
    ax = axes[0, 1]
    classes = np.unique(labels)
    colours = distinct_colours(len(classes))
    if len(classes) <= LEGEND_CLASSES:
        for colour, k in zip(colours, classes):
            keep = labels == k
            ax.scatter(points[keep, 0], points[keep, 1], s=4, alpha=0.5, color=colour,
                       label=class_name(split.class_names, int(k)))
        ax.legend(title="class", markerscale=3, fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1.0),
                  ncol=1 + (len(classes) - 1) // 15)
    else:
        index = np.searchsorted(classes, labels)
        cmap, norm = ListedColormap(colours), BoundaryNorm(np.arange(len(classes) + 1) - 0.5, len(classes))
        ax.scatter(points[:, 0], points[:, 1], s=4, alpha=0.5, c=index, cmap=cmap, norm=norm)
        ticks = np.unique(np.linspace(0, len(classes) - 1, 8).round().astype(int))
        bar = fig.colorbar(ScalarMappable(norm=norm, cmap=cmap), ax=ax, ticks=ticks, label="class")
        bar.ax.set_yticklabels([class_name(split.class_names, int(classes[i])) for i in ticks])
    ax.set_title("by class")
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
