"""One command, two tables: every method against its baseline, on synthetic data and on UCI Multiple Features.

    python benchmarks/methods.py                          # 3 seeds; writes the methods section of RESULTS.md
    python benchmarks/methods.py --seeds 0-9              # 10 seeds (also: --seeds 10, --seeds 0,1,2,3)
    python benchmarks/methods.py --seeds 0,1,2 --only synthetic --print

Each setting tests one paper's claim against its baseline on the same data, pairing plan and seeds; the first row
of a setting (:data:`SETTINGS`) is its baseline:
- strong vs weak anchor (CentroBind vs the fixed anchor of ImageBind; the strong control on the weak setting's
  harder classes as well),
- sparse pairing (EmergentBridge, both variants, vs the fixed anchor: the unpaired pair is what must rise, the
  anchor pairs must stay),
- mixed target modalities (MAMCL vs plain InfoNCE, one candidate pool per target modality).

Every row is one study of mmcore (``mmcore run RECIPE --seeds ... --set ...``, :mod:`mmcore.runs.study`, in this
process): one run per seed in its own run directory, the dataset built once. ``--seeds`` sets the recipe's
``seed`` (initialisation, batch order) and, through ``--seed-key dataset.seed``, the data's seed (a fresh synthetic
draw, another mfeat split), so each seed is a new sample of the whole setting; the methods of a setting see the same
data for the same seed, so their differences are paired by seed. Runs go to a temporary directory.

Table 1, mean ± std over seeds (sample std) of: Recall@1 on the pairs each claim is about ("claim pairs": the
non-anchor pairs for the anchor settings, the query against each target modality's own pool for the mixed-target
task), on the pairs that include the anchor ("anchor pairs"), on the pairs the method aligned directly
("trained") and on those it never aligned ("emergent"; "-" when it aligns every pair); zero-shot accuracy
(prototypes of another modality) on both kinds of pairs; kNN accuracy of the claim's modalities (the non-anchor
ones) and of all; the modality gap (distance between modality means, averaged over pairs). "-": does not apply.

Table 2, paired by seed: for each method, method - baseline per seed, its mean and 95% t-interval
(``mean ± t(0.975, n - 1) * sd / sqrt(n)``) on the claim metrics.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import math
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "RESULTS.md"
START, END = "<!-- methods:start -->", "<!-- methods:end -->"

EVALUATORS = 'evaluators=[{name="retrieval"},{name="prototypes"},{name="knn"},{name="modality_gap"}]'
FIXED_IMAGE = ["anchor.name=imagebind", "anchor.anchor=image"]


class Claim:
    """What a setting's claim is about. ``pairs(q, g)``: the ordered retrieval pairs it claims to lift;
    ``kept(q, g)``: the pairs it must not cost (None: none); ``modality(m)``: the modalities whose kNN accuracy
    it claims (None: none)."""

    def __init__(self, pairs, kept=None, modality=None):
        self.pairs, self.kept, self.modality = pairs, kept, modality


def without(anchor: str) -> Claim:
    """The anchor settings: the pairs without ``anchor`` (what a fixed anchor never trains directly) must rise,
    the pairs with it must stay; kNN of the non-anchor modalities."""
    return Claim(lambda q, g: anchor not in (q, g), lambda q, g: anchor in (q, g), lambda m: m != anchor)


QUERY_TO_TARGETS = Claim(lambda q, g: q == "query")
"""The mixed-target task: the query against each target modality's own pool."""

# (dataset, setting, method, recipe, overrides, claim); the first row of each (dataset, setting) is its baseline
SETTINGS = [
    ("synthetic", "strong anchor (image)", "imagebind", "imagebind.toml", [], without("image")),
    ("synthetic", "strong anchor (image)", "centrobind", "centrobind.toml", [], without("image")),
    ("synthetic", "weak anchor (image noise 2.5)", "imagebind", "centrobind_weak_anchor.toml", FIXED_IMAGE,
     without("image")),
    ("synthetic", "weak anchor (image noise 2.5)", "centrobind", "centrobind_weak_anchor.toml", [], without("image")),
    ("synthetic", "weak anchor (image noise 2.5)", "centrobind (leave_one_out=false)", "centrobind_weak_anchor.toml",
     ["anchor.leave_one_out=false"], without("image")),
    ("synthetic", "strong anchor, weak setting's classes (separation 0.8)", "imagebind",
     "centrobind_strong_anchor.toml", FIXED_IMAGE, without("image")),
    ("synthetic", "strong anchor, weak setting's classes (separation 0.8)", "centrobind",
     "centrobind_strong_anchor.toml", [], without("image")),
    ("synthetic", "sparse pairing (image-text, image-audio)", "imagebind", "emergentbridge.toml", FIXED_IMAGE,
     without("image")),
    ("synthetic", "sparse pairing (image-text, image-audio)", "emergentbridge", "emergentbridge.toml", [],
     without("image")),
    ("synthetic", "sparse pairing (image-text, image-audio)", "emergentbridge (gradient, lambda 0.25)",
     "emergentbridge.toml", ['anchor.projection="gradient"', "anchor.lambda=0.25"], without("image")),
    ("synthetic", "sparse pairing, centroids (centrobind_sparse.toml)", "imagebind", "centrobind_sparse.toml",
     FIXED_IMAGE, without("image")),
    ("synthetic", "sparse pairing, centroids (centrobind_sparse.toml)", "centrobind (auto)", "centrobind_sparse.toml",
     [], without("image")),
    ("synthetic", "sparse pairing, centroids (centrobind_sparse.toml)", "centrobind (leave_one_out=false)",
     "centrobind_sparse.toml", ["anchor.leave_one_out=false"], without("image")),
    ("synthetic", "mixed target modalities", "infonce", "mamcl_infonce.toml", [], QUERY_TO_TARGETS),
    ("synthetic", "mixed target modalities", "mamcl", "mamcl.toml", [], QUERY_TO_TARGETS),
    ("mfeat", "strong anchor (pix), all views paired", "imagebind", "mfeat_imagebind.toml", ["dataset.pairing=[]"],
     without("pix")),
    ("mfeat", "strong anchor (pix), all views paired", "centrobind", "mfeat_imagebind.toml",
     ["dataset.pairing=[]", "anchor.name=centrobind", "anchor.leave_one_out=true"], without("pix")),
    ("mfeat", "weak anchor (mor), all views paired", "imagebind", "mfeat_weak_anchor.toml", ["dataset.pairing=[]"],
     without("mor")),
    ("mfeat", "weak anchor (mor), all views paired", "centrobind", "mfeat_weak_anchor.toml",
     ["dataset.pairing=[]", "anchor.name=centrobind", "anchor.leave_one_out=true"], without("mor")),
    ("mfeat", "sparse pairing (pix-X only)", "imagebind", "mfeat_imagebind.toml", [], without("pix")),
    ("mfeat", "sparse pairing (pix-X only)", "emergentbridge", "mfeat_imagebind.toml",
     ["anchor.name=emergentbridge", "anchor.anchor=pix", "anchor.proxy=fou"], without("pix")),
]

COLUMNS = [
    ("R@1 claim pairs", "claim/R@1"),
    ("R@1 anchor pairs", "kept/R@1"),
    ("R@1 trained", "retrieval/trained/R@1"),
    ("R@1 emergent", "retrieval/emergent/R@1"),
    ("prototypes trained", "prototypes/trained/acc"),
    ("prototypes emergent", "prototypes/emergent/acc"),
    ("kNN claim modalities", "knn/claim/acc"),
    ("kNN", "knn/mean/acc"),
    ("gap", "modality_gap/all/gap"),
]

PAIRED = [("R@1 claim pairs", "claim/R@1"), ("R@1 anchor pairs", "kept/R@1"),
          ("kNN claim modalities", "knn/claim/acc"), ("kNN", "knn/mean/acc")]
"""The columns of the paired-difference table (method - baseline, per seed)."""

LARGE = ["dataset.train_size=100000", "dataset.test_size=10000", "trainer.batch_size=4096", "embed_dim=256"]
"""--large (for a GPU): synthetic settings with 25x the training data, bigger batches and a wider space."""


# ------------------------------------------------------------------------------------------ seeds and statistics


def parse_seeds(text: str) -> list:
    """``"10"`` (a count: seeds 0-9), ``"0-9"`` or ``"10-19"`` (a range, both ends included), ``"0,1,2"`` (a
    list), or a mix (``"0-4,7"``). Raises ValueError for anything else, a repeated seed or no seed."""
    text = str(text).strip()
    if text.isdigit():
        if int(text) < 1:
            raise ValueError(f"--seeds {text}: a count of seeds is at least 1 (one seed s: --seeds s-s)")
        return list(range(int(text)))
    seeds = []
    for item in (part.strip() for part in text.split(",")):
        low, dash, high = item.partition("-")
        if not (low.isdigit() and (not dash or high.isdigit())):
            raise ValueError(f"--seeds {text}: {item!r} is not a seed or a range A-B of seeds")
        span = range(int(low), int(high if dash else low) + 1)
        if not span:
            raise ValueError(f"--seeds {text}: the range {item} is empty")
        seeds += span
    repeated = sorted({s for s in seeds if seeds.count(s) > 1})
    if repeated:
        raise ValueError(f"--seeds {text}: seed {repeated[0]} is given twice")
    return seeds


T975 = [12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145, 2.131,
        2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045]
"""t(0.975, df) for df = 1..29 (used when scipy is not installed)."""


def t975(df: int) -> float:
    """The 97.5% quantile of Student's t with ``df`` degrees of freedom (scipy when installed, else T975 for
    df <= 29 and the normal 1.96 beyond: within 0.08 there)."""
    try:
        from scipy.stats import t
    except ImportError:
        return T975[df - 1] if df <= len(T975) else 1.96
    return float(t.ppf(0.975, df))


def paired_interval(values: list) -> tuple:
    """``(mean, half-width)`` of the 95% t-interval of ``values`` (per-seed differences); half-width None for
    fewer than two values."""
    mean = statistics.fmean(values)
    if len(values) < 2:
        return mean, None
    return mean, t975(len(values) - 1) * statistics.stdev(values) / math.sqrt(len(values))


# ------------------------------------------------------------------------------------------ running a setting


def claim_metrics(metrics: dict, claim: Claim) -> dict:
    """``metrics`` (one run's metrics.json) plus the claim's averages: ``claim/R@1`` (the claim pairs),
    ``kept/R@1`` (the pairs it must keep), ``knn/claim/acc`` (the claim's modalities) and
    ``modality_gap/all/gap`` (mean over the pairs)."""
    out = dict(metrics)
    gaps = [v for k, v in metrics.items() if k.startswith("modality_gap/") and k.endswith("/gap")
            and k.count("/") == 2 and "-" in k.split("/")[1]]
    if gaps:
        out["modality_gap/all/gap"] = statistics.fmean(gaps)
    pairs = {tuple(key.split("/")[1].split("->")): value for key, value in metrics.items()
             if key.startswith("retrieval/") and key.endswith("/R@1") and "->" in key}
    for name, chosen in (("claim/R@1", claim.pairs), ("kept/R@1", claim.kept)):
        values = [value for pair, value in pairs.items() if chosen is not None and chosen(*pair)]
        if values:
            out[name] = statistics.fmean(values)
    knn = [value for key, value in metrics.items() if key.startswith("knn/") and key.endswith("/acc")
           and key.count("/") == 2 and key.split("/")[1] != "mean"
           and claim.modality is not None and claim.modality(key.split("/")[1])]
    if knn:
        out["knn/claim/acc"] = statistics.fmean(knn)
    return out


def run_setting(recipe: str, overrides: list, seeds: list, out: Path, claim: Claim) -> dict:
    """One study (``mmcore run RECIPE --seeds ... --set ...`` in this process) -> ``{seed: metrics}`` of its
    finished runs, from each run directory's metrics.json as the study's summary.json lists them. Raises
    RuntimeError (with the study's messages) when it does not finish."""
    from mmcore.cli import main

    args = ["run", str(ROOT / "recipes" / recipe), "--seeds", ",".join(map(str, seeds)), "--seed-key", "dataset.seed",
            "--all-metrics", "--out", str(out)]
    for item in [*overrides, EVALUATORS, "trainer.accelerator=auto"]:
        args += ["--set", item]
    log = io.StringIO()
    with contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
        status = main(args)
    if status != 0:
        text = log.getvalue()
        start = text.find("mmcore: error")
        raise RuntimeError(f"exit status {status}: {text[start:][:2000] if start >= 0 else text[-2000:]}")
    summary = json.loads((out / "summary.json").read_text())
    return {run["seed"]: claim_metrics(json.loads((out / run["dir"] / "metrics.json").read_text()), claim)
            for run in summary["runs"] if run["status"] == "finished"}


# ------------------------------------------------------------------------------------------ tables


def cell(values: list) -> str:
    if not values:
        return "-"
    if len(values) == 1:
        return f"{values[0]:.3f}"
    return f"{statistics.mean(values):.3f} ± {statistics.stdev(values):.3f}"


def table(results: dict, dataset: str) -> list:
    """Table 1 of ``dataset``: one row per method, ``mean ± std`` over its seeds."""
    lines = [f"| setting | method | {' | '.join(name for name, _ in COLUMNS)} |",
             "|---|---|" + "---|" * len(COLUMNS)]
    for (ds, setting, method), runs in results.items():
        if ds == dataset:
            cells = [cell([r[key] for r in runs.values() if key in r]) for _, key in COLUMNS]
            lines.append(f"| {setting} | {method} | {' | '.join(cells)} |")
    return lines


def difference_cell(method_runs: dict, base_runs: dict, key: str) -> str:
    """``+0.012 [-0.003, +0.027] (n=3)``: method - baseline paired by seed, mean and 95% t-interval."""
    diffs = [method_runs[s][key] - base_runs[s][key] for s in method_runs
             if s in base_runs and key in method_runs[s] and key in base_runs[s]]
    if not diffs:
        return "-"
    mean, half = paired_interval(diffs)
    if half is None:
        return f"{mean:+.3f} (n=1)"
    return f"{mean:+.3f} [{mean - half:+.3f}, {mean + half:+.3f}]"


def difference_table(results: dict, dataset: str) -> list:
    """Table 2 of ``dataset``: each method against its setting's baseline (the setting's first row)."""
    lines = [f"| setting | method - baseline | seeds | {' | '.join(name for name, _ in PAIRED)} |",
             "|---|---|---|" + "---|" * len(PAIRED)]
    baselines = {}
    for (ds, setting, method), runs in results.items():
        if ds != dataset:
            continue
        if setting not in baselines:
            baselines[setting] = (method, runs)
            continue
        base_method, base_runs = baselines[setting]
        seeds = sorted(set(runs) & set(base_runs))
        cells = [difference_cell(runs, base_runs, key) for _, key in PAIRED]
        lines.append(f"| {setting} | {method} - {base_method} | {len(seeds)} | {' | '.join(cells)} |")
    return lines


def machine() -> str:
    import torch

    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "CPU only"
    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, {device}, torch {torch.__version__}"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", default="0,1,2",
                        help="a count (10: seeds 0-9), a range (0-9) or a list (0,1,2); default 0,1,2")
    parser.add_argument("--only", choices=["synthetic", "mfeat"])
    parser.add_argument("--print", action="store_true", help="print the tables instead of writing RESULTS.md")
    parser.add_argument("--large", action="store_true", help="the GPU-sized synthetic settings (see LARGE)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads (default 1: the models are tiny, and on a shared CPU more threads "
                             "oversubscribe and make each run slower)")
    args = parser.parse_args(argv)
    try:
        seeds = parse_seeds(args.seeds)
    except ValueError as exc:
        parser.error(str(exc))
    os.environ.setdefault("CI", "true")  # no progress bars
    import torch

    torch.set_num_threads(args.threads)

    results, started = {}, time.time()
    with tempfile.TemporaryDirectory() as tmp:
        for index, (dataset, setting, method, recipe, overrides, claim) in enumerate(SETTINGS):
            if args.only and dataset != args.only:
                continue
            t0 = time.time()
            extra = LARGE if args.large and dataset == "synthetic" else []
            try:
                runs = run_setting(recipe, [*overrides, *extra], seeds, Path(tmp) / f"setting-{index}", claim)
            except Exception as exc:  # noqa: BLE001 - a missing dataset must not lose the other rows
                print(f"{dataset} / {setting} / {method}: skipped: {exc}", file=sys.stderr)
                continue
            results[(dataset, setting, method)] = runs
            claimed = [r["claim/R@1"] for r in runs.values() if "claim/R@1" in r]
            print(f"{dataset} / {setting} / {method}: R@1 claim pairs {cell(claimed)} ({len(runs)} seeds, "
                  f"{time.time() - t0:.0f} s)", file=sys.stderr, flush=True)
    minutes = (time.time() - started) / 60
    command = ("python benchmarks/methods.py" + (f" --seeds {args.seeds}" if seeds != [0, 1, 2] else "")
               + (f" --only {args.only}" if args.only else "") + (" --large" if args.large else ""))
    body = [START, "## Methods (synthetic data and UCI Multiple Features)", "",
            f"Regenerate: `{command}` ({len(seeds)} seeds: {','.join(map(str, seeds))}; {minutes:.1f} min on "
            f"{machine()}, {args.threads} torch thread(s)). Each row is one "
            "`mmcore run RECIPE --seeds ... --seed-key dataset.seed` study: a seed sets the model's seed "
            "(initialisation, batch order) and the data's (`dataset.seed`).",
            "Each setting compares methods with its baseline (its first row) on the same data, pairing and seeds. "
            "\"R@1 claim pairs\": non-anchor pairs for the anchor settings, query -> each target modality's own pool "
            "for the mixed-target task; \"anchor pairs\": the pairs with the anchor; \"trained\"/\"emergent\": pairs "
            "the method aligned directly / never (\"-\": it aligns every pair, so the two are not comparable across "
            "methods); \"kNN claim modalities\": the non-anchor modalities.", ""]
    for dataset in ("synthetic", "mfeat"):
        if any(k[0] == dataset for k in results):
            body += [f"### {dataset}", "", "Mean ± std over seeds.", "", *table(results, dataset), "",
                     "Method - baseline, paired by seed: mean [95% t-interval].", "",
                     *difference_table(results, dataset), ""]
    body.append(END)
    text = "\n".join(body)
    if args.print:
        print(text)
        return 0
    old = RESULTS.read_text() if RESULTS.exists() else "# Benchmark results\n\n"
    if START in old and END in old:
        new = old[:old.index(START)] + text + old[old.index(END) + len(END):]
    else:
        new = old.rstrip("\n") + "\n\n" + text + "\n"
    RESULTS.write_text(new)
    print(f"wrote {RESULTS}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
