"""Pictures of a run and comparisons of runs: Recall@1 heat maps, 2-D maps of the space, ``mmcore report``.

Figures need matplotlib (``pip install "mmcore-framework[plots]"``); without it runs still train, log scalars and
the embedding projector, and say once that figures were skipped.
"""

from __future__ import annotations

import json
from pathlib import Path

from ..runs.figures import (  # noqa: F401 - the run figures, re-exported for reports
    HEATMAP_SKIPPED, PROJECTOR_POINTS, has_retrieval, have_matplotlib, heatmap_figure, projection_2d, projection_figure,
    recall_matrix,
    subsample, write_run_pictures,
)


SUMMARY_KEYS = ("retrieval/trained/R@1", "retrieval/emergent/R@1", "zero_shot/trained/acc", "zero_shot/emergent/acc",
                "knn/mean/acc")
"""The summary of a run whose ``model.json`` declares none (runs written before evaluators declared them; their
``zero_shot`` keys are the nearest-prototype reading, named ``prototypes`` since)."""


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
    if not isinstance(metrics, dict):
        raise ValueError(f"metrics.json holds a {type(metrics).__name__}, not a table of metrics")
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


REPORT_FORMATS = (".png", ".pdf", ".svg")
"""The file types ``mmcore report --out`` writes (by its suffix); matplotlib writes each without extra libraries."""


def report_out_problem(path: Path, overwrite: bool) -> str | None:
    """Why ``mmcore report`` cannot write its heat maps to ``path``, or None when it can: the suffix is one of
    :data:`REPORT_FORMATS`, the parent folder exists, and ``path`` is free or (``overwrite``) a regular file (never
    a folder, a FIFO, a device or a broken link). Nothing is touched."""
    from ..files import file_kind

    if path.suffix.lower() not in REPORT_FORMATS:
        return (f"--out {path}: its suffix picks the file type of the heat maps, one of {', '.join(REPORT_FORMATS)}"
                + (f" ({path.suffix} is not)" if path.suffix else " (it has no suffix)"))
    if not path.parent.is_dir():
        return f"--out {path}: {path.parent} " + ("is not a folder" if path.parent.exists() else "does not exist")
    if not (path.exists() or path.is_symlink()):
        return None
    if not overwrite:
        return f"{path} already exists; pass --overwrite or choose another --out"
    if not path.is_file():
        kind = file_kind(path.stat().st_mode) if path.exists() else "a broken link"
        return f"--out {path} is {kind}; --overwrite replaces only a file: remove it yourself or choose another --out"
    return None


def heatmaps_figure(runs: list):
    """The Recall@1 heat maps of ``runs`` (each with retrieval metrics) side by side, one panel per run, and their
    key: one colour bar (every panel uses the same 0-1 scale) and a legend of the marks (``T``, outlined: a trained
    pair; ``E``: an emergent one). Needs matplotlib."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    fig, axes = plt.subplots(1, len(runs), figsize=(4.6 * len(runs) + 1.0, 5.0), squeeze=False, layout="constrained")
    for ax, run in zip(axes[0], runs):
        heatmap_figure(run["metrics"], run["modalities"], run["trained_pairs"], title=run["dir"].name, ax=ax)
    fig.colorbar(axes[0, 0].images[0], ax=axes[0].tolist(), shrink=0.85, label="Recall@1 (row: query, column: gallery)")
    fig.legend(handles=[Patch(facecolor="none", edgecolor="red", linewidth=2, label="T: trained pair"),
                        Patch(facecolor="none", edgecolor="none", label="E: emergent pair")],
               loc="outside lower center", ncol=2, frameon=False)
    return fig


def side_by_side_heatmaps(runs: list, path: Path) -> Path | None:
    """:func:`heatmaps_figure` of the runs that have retrieval metrics (:func:`has_retrieval`), of the type of
    ``path``'s suffix (:data:`REPORT_FORMATS`), written atomically (a failure leaves ``path`` as it was); ``None``
    without matplotlib or when no run has them."""
    from ..files import atomic_output

    runs = [run for run in runs if has_retrieval(run["metrics"], run["modalities"])]
    if not runs or not have_matplotlib():
        return None
    import matplotlib.pyplot as plt

    fig = heatmaps_figure(runs)
    try:
        with atomic_output(path, suffix=path.suffix) as tmp:
            fig.savefig(tmp, dpi=110, format=path.suffix.lower().lstrip("."))
    finally:
        plt.close(fig)
    return path
