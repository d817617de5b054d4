"""CentroBind vs a fixed anchor, with a weak and a strong anchor modality, over seeds: prints the README table.

    python plugins/centrobind/experiments/weak_anchor.py                  # 3 seeds, full recipe sizes
    python plugins/centrobind/experiments/weak_anchor.py --small          # reduced sizes (README)

Conditions: ``recipes/centrobind_weak_anchor.toml`` (image noise 2.5) and ``recipes/centrobind_strong_anchor.toml``
(image noise 0.3); both have class_separation 0.8. Methods: ``imagebind`` (fixed anchor = image, the weak modality
in the weak condition), ``centrobind`` (``leave_one_out = false``: own modality in its centroid; on these fully
paired rows the same as the default ``"auto"``) and ``centrobind-loo`` (``leave_one_out = true``). Seed ``s`` sets
both the model seed and the dataset seed, so each seed is a fresh dataset and initialisation, shared by all methods
(differences are paired by seed).

Columns: Recall@1 averaged over both directions of each pair on the 1000-sample test split (chance 0.001), and
per-modality kNN accuracy (k = 10 against the training split, chance 0.1). ``d(...)`` rows: per-seed difference
to ``imagebind``, mean ± std over seeds (std with ddof = 0).
"""

from __future__ import annotations

import os

# One thread per process, set before numpy and torch load: these runs are tiny, and on a shared CPU a
# multi-threaded BLAS oversubscribes (one numpy SVD of the run pictures was measured at 2.7 s instead of 10 ms).
for _name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_name, "1")

import argparse
import contextlib
import io
import json
import logging
import sys
import tempfile
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
RECIPES = {"weak": ROOT / "recipes" / "centrobind_weak_anchor.toml",
           "strong": ROOT / "recipes" / "centrobind_strong_anchor.toml",
           "easy": ROOT / "recipes" / "centrobind.toml"}  # imagebind.toml's data: classes far apart, all clean
METHODS = {
    "imagebind": ["anchor.name=imagebind", "anchor.anchor=image"],
    "centrobind": ["anchor.leave_one_out=false"],
    "centrobind-loo": ["anchor.leave_one_out=true"],
    # ablations of the settings the paper leaves open (run with --methods ...)
    "centrobind-detach": ["anchor.leave_one_out=false", "anchor.detach_anchor=true"],
    "centrobind-raw": ["anchor.leave_one_out=false", "anchor.renormalize=false"],
    "centrobind-w": ["anchor.leave_one_out=false", "anchor.weights={image=0.25}"],
    "centrobind-loo-detach": ["anchor.leave_one_out=true", "anchor.detach_anchor=true"],
    "centrobind-loo-w": ["anchor.leave_one_out=true", "anchor.weights={image=0.25}"],
}
DEFAULT_METHODS = ["imagebind", "centrobind", "centrobind-loo"]
SMALL = ["dataset.train_size=2000", "dataset.val_size=200", "dataset.test_size=500", "trainer.max_epochs=6",
         "trainer.batch_size=200"]
"""The reduced sizes of the behaviour test (tests/test_centrobind.py)."""
COLUMNS = ["text-audio R@1", "image-text R@1", "image-audio R@1", "knn text", "knn audio", "knn image", "knn mean"]


def summarise(metrics: dict) -> dict:
    """The table's columns from one run's metrics.json."""
    def pair(a, b):
        return (metrics[f"retrieval/{a}->{b}/R@1"] + metrics[f"retrieval/{b}->{a}/R@1"]) / 2

    return {"text-audio R@1": pair("text", "audio"), "image-text R@1": pair("image", "text"),
            "image-audio R@1": pair("image", "audio"), "knn text": metrics["knn/text/acc"],
            "knn audio": metrics["knn/audio/acc"], "knn image": metrics["knn/image/acc"],
            "knn mean": metrics["knn/mean/acc"]}


def run_once(recipe: Path, overrides: list, workdir: Path) -> dict:
    """Train one recipe in-process (``mmcore run``), quietly; return its test metrics."""
    from mmcore.cli import main

    out = Path(tempfile.mkdtemp(dir=workdir)) / "run"
    args = ["run", str(recipe), "--out", str(out)] + [x for o in overrides for x in ("--set", o)]
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        status = main(args)
    if status != 0:
        raise RuntimeError(f"mmcore {' '.join(args)} exited {status}")
    return json.loads((out / "metrics.json").read_text())


def measure(seeds, conditions=("weak", "strong"), methods=tuple(DEFAULT_METHODS), extra=(), workdir=None) -> dict:
    """``{condition: {method: [summary per seed]}}``."""
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for condition in conditions:
            for method in methods:
                for seed in seeds:
                    overrides = [*METHODS[method], *extra, f"seed={seed}", f"dataset.seed={seed}"]
                    start = time.time()
                    summary = summarise(run_once(RECIPES[condition], overrides, Path(workdir or tmp)))
                    print(f"  {condition:6s} {method:15s} seed {seed}: text-audio R@1 {summary['text-audio R@1']:.3f}"
                          f"  knn mean {summary['knn mean']:.3f}  ({time.time() - start:.0f} s)", file=sys.stderr)
                    results.setdefault(condition, {}).setdefault(method, []).append(summary)
    return results


def mean_std(values) -> tuple:
    n = len(values)
    mean = sum(values) / n
    return mean, (sum((v - mean) ** 2 for v in values) / n) ** 0.5


def table(results: dict, seeds) -> str:
    """Markdown table: mean ± std over seeds, then per-seed differences to imagebind."""
    lines = [f"| condition | method | {' | '.join(COLUMNS)} |", "|---" * (len(COLUMNS) + 2) + "|"]
    for condition, by_method in results.items():
        for method, rows in by_method.items():
            cells = [mean_std([r[c] for r in rows]) for c in COLUMNS]
            lines.append(f"| {condition} | {method} | " + " | ".join(f"{m:.3f} ± {s:.3f}" for m, s in cells) + " |")
        base = by_method.get("imagebind")
        for method, rows in by_method.items():
            if method == "imagebind" or base is None:
                continue
            cells = [mean_std([r[c] - b[c] for r, b in zip(rows, base)]) for c in COLUMNS]
            lines.append(f"| {condition} | d({method} - imagebind) | "
                         + " | ".join(f"{m:+.3f} ± {s:.3f}" for m, s in cells) + " |")
    return "\n".join(lines) + f"\n\nseeds: {', '.join(map(str, seeds))}"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--small", action="store_true", help="the reduced sizes of tests/test_centrobind.py")
    parser.add_argument("--conditions", nargs="+", default=["weak", "strong"], choices=list(RECIPES))
    parser.add_argument("--methods", nargs="+", default=DEFAULT_METHODS, choices=list(METHODS))
    parser.add_argument("--set", action="append", default=[], help="extra recipe override, KEY=VALUE")
    parser.add_argument("--json", type=Path, help="also write the per-seed summaries here")
    args = parser.parse_args(argv)

    os.environ.setdefault("CI", "true")  # no progress bars
    warnings.filterwarnings("ignore")
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    extra = (SMALL if args.small else []) + args.set
    results = measure(args.seeds, args.conditions, args.methods, extra)
    if args.json:
        import mmcore

        mmcore.write_atomic(args.json, json.dumps(results, indent=2))
    print(table(results, args.seeds))
    if extra:
        print("overrides: " + " ".join(extra))
    return 0


if __name__ == "__main__":
    sys.exit(main())
