"""MAMCL vs plain InfoNCE on mixed-target batches, over several seeds: prints mean +- std and paired differences.

Each seed trains three runs of the same recipe (recipes/mamcl.toml; the dataset seed and the run seed are both
set to the seed): ``mamcl`` (reverse direction masked, our default), ``mamcl`` with ``mask_reverse = false``
(UNITE's released code) and the plain InfoNCE baseline (recipes/mamcl_infonce.toml: same task, model and fixed
temperature 0.03; only the mask differs). Reported, per run:

- per-target-modality pools (the way UNITE evaluates; the built-in ``retrieval`` evaluator on the test split,
  where every item holds every target): R@1 of ``query -> a``, ``query -> b``, ``query -> a+b`` and their mean;
- the mixed pool stress test (evaluator ``mixed_pool``): one gallery of all 3000 candidates, R@1 per target
  (mean) and "any" (top-1 from the query's own item); and the modality gap between queries and each target.

"diff" rows are MAMCL minus InfoNCE per seed (same data and initial weights), mean +- std over seeds.

    python plugins/mamcl/experiments/mixed_targets.py --seeds 5
    python plugins/mamcl/experiments/mixed_targets.py --seeds 5 --set trainer.batch_size=256
    python plugins/mamcl/experiments/mixed_targets.py --seeds 5 --only mamcl infonce --set trainer.max_epochs=20

Runs in-process with one torch thread by default (``--threads``): on a shared 2-core machine this is several
times faster than torch's default. Run directories go to a temporary folder unless ``--runs DIR``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
RECIPES = ROOT / "recipes"

RUNS = {  # id: (table label, recipe, overrides)
    "mamcl": ("MAMCL", "mamcl.toml", []),
    "unite": ("MAMCL, reverse unmasked (UNITE)", "mamcl.toml", ["loss.mask_reverse=false"]),
    "infonce": ("InfoNCE (baseline)", "mamcl_infonce.toml", []),
}
BASELINE = "InfoNCE (baseline)"

COLUMNS = {
    "query->a": "retrieval/query->a/R@1",
    "query->b": "retrieval/query->b/R@1",
    "query->a+b": "retrieval/query->a+b/R@1",
    "pools mean": None,  # mean of the three per-modality pools
    "mixed mean": "mixed_pool/mean/R@1",
    "mixed any": "mixed_pool/any/R@1",
    "gap a": "mixed_pool/gap/a",
    "gap b": "mixed_pool/gap/b",
    "gap a+b": "mixed_pool/gap/a+b",
}


def per_target_mean(metrics: dict) -> float:
    """Mean R@1 over the three per-target-modality pools."""
    return statistics.fmean(metrics[COLUMNS[c]] for c in ("query->a", "query->b", "query->a+b"))


def row(metrics: dict) -> dict:
    return {c: per_target_mean(metrics) if key is None else metrics[key] for c, key in COLUMNS.items()}


def run_one(recipe: str, overrides: list, seed: int, out: Path) -> dict:
    """Train and evaluate one recipe in-process; returns its test metrics."""
    import contextlib

    from mmcore.cli import main

    sets = [f"seed={seed}", f"dataset.seed={seed}", *overrides]
    args = ["run", str(RECIPES / recipe), "--out", str(out), "--overwrite"]
    for item in sets:
        args += ["--set", item]
    with contextlib.redirect_stdout(sys.stderr):  # the CLI prints its metrics; keep stdout for the table
        status = main(args)
    if status != 0:
        raise SystemExit(f"run failed: {recipe} {sets}")
    return json.loads((out / "metrics.json").read_text())


def measure(seeds: list, overrides: list, runs_dir: Path, only: list | None = None) -> dict:
    """``{run label: [row per seed]}`` for the runs in :data:`RUNS` (or the ids in ``only``)."""
    results = {}
    for run_id, (name, recipe, extra) in RUNS.items():
        if only and run_id not in only:
            continue
        results[name] = []
        for seed in seeds:
            metrics = run_one(recipe, extra + overrides, seed, runs_dir / f"{run_id}-seed{seed}")
            results[name].append(row(metrics))
            print(f"# {name} seed {seed}: " + ", ".join(f"{c} {v:.3f}" for c, v in results[name][-1].items()),
                  file=sys.stderr, flush=True)
    return results


def summary(values: list) -> str:
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.fmean(values):.3f} ± {std:.3f}"


def table(results: dict) -> str:
    """A markdown table: mean ± std per run, then the paired differences against the baseline."""
    lines = ["| run | " + " | ".join(COLUMNS) + " |", "|---" * (len(COLUMNS) + 1) + "|"]
    for name, rows in results.items():
        lines.append(f"| {name} | " + " | ".join(summary([r[c] for r in rows]) for c in COLUMNS) + " |")
    base = results.get(BASELINE)
    for name, rows in results.items():
        if base is None or name == BASELINE:
            continue
        diffs = {c: [r[c] - b[c] for r, b in zip(rows, base)] for c in COLUMNS}
        lines.append(f"| diff: {name} − InfoNCE | " + " | ".join(
            f"{statistics.fmean(d):+.3f} ± {statistics.stdev(d) if len(d) > 1 else 0.0:.3f}"
            for d in diffs.values()) + " |")
    return "\n".join(lines)


def main(argv: list | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3, help="seeds 0..N-1 (default 3)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="recipe override applied to every run, e.g. trainer.batch_size=256")
    parser.add_argument("--only", nargs="+", choices=list(RUNS), help="run only these (default: all)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--runs", help="keep the run directories here (default: a temporary folder)")
    args = parser.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        runs_dir = Path(args.runs or tmp)
        results = measure(list(range(args.seeds)), args.set, runs_dir, args.only)
    print(f"seeds 0..{args.seeds - 1}; overrides: {' '.join(args.set) or '(none)'}; Recall@1 and modality gap on "
          "the test split")
    print(table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
