"""``mmcore align OLD_RUN NEW_RUN --out DIR``: one orthogonal map from NEW's space into OLD's, fitted on anchors.

Writes to ``DIR`` (missing parent folders are made only once the output is complete). ``DIR`` is refused (exit 2,
before any work) when it exists and is not empty, unless ``--overwrite``; ``--overwrite`` replaces only an earlier
align output (a folder holding ``report.json`` and no files but the four below). Never the working directory or a
folder above it, and never an input run, a folder inside one or a folder holding one.

- ``Q.npy``: ``[d, d]`` float64, orthogonal; ``old ~ (new - mean_new[m]) @ Q + mean_old[m]``;
- ``mean_new.npy``, ``mean_old.npy``: ``[M, d]`` per-modality means, rows in the order of ``report.json``'s
  ``modalities``;
- ``report.json``: settings, per anchor count the residuals and the retrieval table (see :mod:`.report`).

Exit status: 0 done, 2 bad input (runs that cannot be loaded, differ in width or samples, an existing ``--out``).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

EXIT_BAD_INPUT = 2
ALIGN_FILES = frozenset({"Q.npy", "mean_new.npy", "mean_old.npy", "report.json"})
"""What an align output directory holds; ``--overwrite`` replaces only a folder holding these alone."""


class AlignError(Exception):
    """Bad input: the message is printed and the exit status is 2."""


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "align", help="fit one orthogonal map between two runs' spaces (canonicalisation) and report retrieval",
        description="Fit Q (orthogonal, with per-modality mean shifts) that maps NEW_RUN's embeddings onto "
                    "OLD_RUN's from a few paired training samples of one modality, apply it to every modality and "
                    "report cross-model Recall@1 on the test split against each model's own.")
    p.add_argument("old_run", help="run directory whose space is the target (gallery side)")
    p.add_argument("new_run", help="run directory whose embeddings are mapped (query side)")
    p.add_argument("--out", required=True,
                   help="output directory (must not exist or be empty; never an input run or a folder inside or "
                        "holding one)")
    p.add_argument("--anchors", type=int, default=100, help="anchor count of the saved Q (default 100)")
    p.add_argument("--anchor-counts", default="10,50,100,500",
                   help="comma-separated anchor counts to report (default 10,50,100,500)")
    p.add_argument("--modality", help="modality Q is fitted on (default: the old run's first modality)")
    p.add_argument("--seed", type=int, default=0, help="seed of the anchor draw (default 0)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace --out if it holds an earlier align output (report.json, Q.npy, mean_*.npy and "
                        "nothing else)")
    p.set_defaults(func=handle)


def handle(args) -> int:
    try:
        return align(args)
    except AlignError as exc:
        print(f"mmcore: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT


def _counts(args) -> list:
    try:
        counts = [int(c) for c in str(args.anchor_counts).split(",") if c.strip()]
    except ValueError:
        raise AlignError(f"--anchor-counts must be comma-separated integers, got {args.anchor_counts!r}") from None
    counts = sorted(set(counts) | {args.anchors})
    if counts[0] < 2:
        raise AlignError("anchor counts must be at least 2")
    return counts


def _overlaps(a: Path, b: Path) -> bool:
    """Whether one of two resolved paths is the other or inside it."""
    return a == b or a in b.parents or b in a.parents


def check_out(out: str, overwrite: bool, runs) -> Path:
    """Before any work: the absolute path to write to, or :class:`AlignError`. ``out``'s nearest existing
    ancestor is a folder (the missing ones are made only once the output is complete); ``out`` is not the working directory or above it, and neither is nor is inside nor holds one of ``runs`` (run
    folders: holding a ``recipe.toml``); it
    is free or an empty folder, or (``overwrite``) an earlier align output (:func:`mmcore.replace_refusal`)."""
    import mmcore

    target = Path(os.path.abspath(out))  # "." and ".." spelled out: the output has a name of its own
    real, here = target.resolve(), Path.cwd().resolve()
    if real == here or real in here.parents:
        raise AlignError(f"--out {out} is the working directory or a folder above it; choose another --out")
    for run in runs:  # a folder that is no run is refused when it is loaded, still before anything is written
        if (Path(run) / "recipe.toml").is_file() and _overlaps(real, Path(run).resolve()):
            raise AlignError(f"--out {out} is the input run {run}, inside it or holds it; choose a folder outside "
                             "both runs")
    existing = next(p for p in target.parents if p.exists())  # missing folders are made when the output is written
    if not existing.is_dir():
        raise AlignError(f"--out {out}: {existing} is not a folder")
    try:
        mmcore.check_output(Path(out), overwrite, empty_dir_ok=True)
    except mmcore.OutputExists as exc:
        raise AlignError(str(exc)) from None
    if overwrite and (target.exists() or target.is_symlink()):
        problem = mmcore.replace_refusal(Path(out), "report.json", ALIGN_FILES.__contains__,
                                         "an align output directory")
        if problem:
            raise AlignError(problem)
    return target


def _same_samples(old, new, split: str) -> None:
    import numpy as np

    for m in old.modalities:
        if m in new.z and not np.array_equal(old.present[m], new.present[m]):
            raise AlignError(f"the runs' {split} splits differ (presence of {m!r}): align needs two runs on the same "
                             "dataset")
    if (old.labels is None) != (new.labels is None) or (
            old.labels is not None and not np.array_equal(old.labels, new.labels)):
        raise AlignError(f"the runs' {split} splits differ (labels): align needs two runs on the same dataset")


def load_pair(args):
    """Load both runs, check they can be aligned -> ``(old, new, modality)``."""
    import mmcore

    runs = []
    for path in (args.old_run, args.new_run):
        try:
            runs.append(mmcore.load(path))
        except mmcore.RunLoadError as exc:
            raise AlignError(str(exc)) from exc
    old, new = runs
    if old.dim != new.dim:
        raise AlignError(f"an orthogonal map needs equal widths: {args.old_run} has embed_dim {old.dim}, "
                         f"{args.new_run} has {new.dim}")
    common = [m for m in old.modalities if m in new.modalities]
    modality = args.modality or (common[0] if common else None)
    if modality not in common:
        raise AlignError(f"modality {modality!r} is not in both runs; common modalities: {', '.join(common) or 'none'}")
    if old.recipe.dataset != new.recipe.dataset:
        print("mmcore: warning: the runs' dataset sections differ; checking that their splits hold the same samples",
              file=sys.stderr)
    return old, new, modality


def _fmt(value) -> str:
    return "    -" if value is None else f"{value:.3f}"


def print_tables(report: dict, saved: dict) -> None:
    print(f"NEW {report['new_run']}  ->  OLD {report['old_run']}")
    print(f"Q fitted on {report['modality']!r} with {saved['anchors']} anchors (training split, seed "
          f"{report['seed']}); Recall@1 on the test split, query from NEW, gallery from OLD")
    print(f"{'new query -> old gallery':<28}{'before Q':>10}{'after Q':>10}{'within old':>12}{'within new':>12}")
    for row in saved["retrieval"]:
        pair = f"{row['query']} -> {row['gallery']}"
        print(f"{pair:<28}{_fmt(row['before']):>10}{_fmt(row['after']):>10}{_fmt(row['within_old']):>12}"
              f"{_fmt(row['within_new']):>12}")
    print("(within-model retrieval of a modality against itself is trivially 1)")
    print()
    modality = report["modality"]
    print(f"{'anchors':>8}{'resid anchors':>15}{'resid test':>12}{'same before':>13}{'same after':>12}"
          f"{'cross before':>14}{'cross after':>13}{'cross within old':>18}")
    for entry in report["sweep"]:
        s, r = entry["summary"], entry["residual"][modality]
        print(f"{entry['anchors']:>8}{r['anchors']:>15.4f}{r['test']:>12.4f}{_fmt(s['same_before']):>13}"
              f"{_fmt(s['same_after']):>12}{_fmt(s['cross_before']):>14}{_fmt(s['cross_after']):>13}"
              f"{_fmt(s['cross_within_old']):>18}")
    if any(entry["anchors"] <= report["dim"] for entry in report["sweep"]):
        print(f"note: with anchors <= embed_dim ({report['dim']}), Q is determined only on the anchors' span")


def align(args) -> int:
    import numpy as np

    import mmcore

    from .report import align_report

    counts = _counts(args)
    out = check_out(args.out, args.overwrite, (args.old_run, args.new_run))
    old, new, modality = load_pair(args)
    splits = {}
    for split in ("train", "test"):
        splits["old", split], splits["new", split] = old.embed_split(split), new.embed_split(split)
        _same_samples(splits["old", split], splits["new", split], split)
    sweep, fits = align_report(splits["old", "train"], splits["new", "train"], splits["old", "test"],
                               splits["new", "test"], modality, counts, args.seed)
    saved_fit = fits[args.anchors]
    modalities = list(saved_fit["means"])
    report = {
        "old_run": str(args.old_run), "new_run": str(args.new_run), "modality": modality, "seed": args.seed,
        "dim": old.dim, "modalities": modalities, "anchors": saved_fit["anchors"],
        "map": "old ~ (new - mean_new[m]) @ Q + mean_old[m]", "sweep": sweep,
    }
    with mmcore.atomic_output(out, directory=True) as tmp:  # replaces --out only once every file is written
        np.save(tmp / "Q.npy", saved_fit["rotation"])
        np.save(tmp / "mean_new.npy", np.stack([saved_fit["means"][m][0] for m in modalities]))
        np.save(tmp / "mean_old.npy", np.stack([saved_fit["means"][m][1] for m in modalities]))
        (tmp / "report.json").write_text(json.dumps(report, indent=2))
    saved = next(e for e in sweep if e["anchors_requested"] == args.anchors)
    print_tables(report, saved)
    print(f"mmcore: wrote Q.npy, mean_new.npy, mean_old.npy, report.json to {args.out}", file=sys.stderr)
    return 0
