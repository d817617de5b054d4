"""One command, two tables: every method against its baseline, on synthetic data and on UCI Multiple Features.

    python benchmarks/methods.py                          # 3 seeds; writes the methods section of RESULTS.md
    python benchmarks/methods.py --seeds 0-9              # 10 seeds (also: --seeds 10, --seeds 0,1,2,3)
    python benchmarks/methods.py --seeds 0,1,2 --only synthetic --print
    python benchmarks/methods.py --seeds 10 --jobs 2      # two studies at a time, each in a process of its own

Each setting tests one paper's claim against its baseline on the same data, pairing plan and seeds; the first row
of a setting (:data:`SETTINGS`) is its baseline:
- strong vs weak anchor (CentroBind vs the fixed anchor of ImageBind; the strong control on the weak setting's
  harder classes as well),
- sparse pairing (EmergentBridge, both variants, vs the fixed anchor: the unpaired pair is what must rise, the
  anchor pairs must stay),
- mixed target modalities (MAMCL vs plain InfoNCE, one candidate pool per target modality),
- on UCI Multiple Features, each of the six views as the anchor in turn: all views paired (the fixed anchor vs
  CentroBind), sparse pairing with only anchor-X pairs (the fixed anchor vs EmergentBridge, the loss variant at
  lambda 0.1 and the gradient variant at lambda 0.25, the proxy chosen by one rule: :func:`mfeat_proxy`), and a
  text-paired setting (captions through the pretrained all-MiniLM-L6-v2) scored by zero-shot classification from
  prompts.

Every row is one study of mmcore (``mmcore run RECIPE --seeds ... --set ...``, :mod:`mmcore.runs.study`, in this
process, or with ``--jobs N`` in N worker processes, a study each at a time): one run per seed in its own run
directory, the dataset built once. Rows with the same recipe and overrides share one study (CentroBind's
all-paired runs do not depend on the anchor, and are scored under each anchor's claim). ``--seeds`` sets the recipe's
``seed`` (initialisation, batch order) and, through ``--seed-key dataset.seed``, the data's seed (a fresh synthetic
draw, another mfeat split), so each seed is a new sample of the whole setting; the methods of a setting see the same
data for the same seed, so their differences are paired by seed. Runs go to a temporary directory.

Table 1, mean ± std over seeds (sample std) of: Recall@1 on the pairs each claim is about ("claim pairs": the
non-anchor pairs for the anchor settings, the query against each target modality's own pool for the mixed-target
task), on the pairs that include the anchor ("anchor pairs"), on the pairs the method aligned directly
("trained") and on those it never aligned ("emergent"; "-" when it aligns every pair); prototype accuracy
(the class prototypes of another modality) on both kinds of pairs; kNN accuracy of the claim's modalities (the
non-anchor ones) and of all; zero-shot accuracy from the class prompts (the text-paired setting: each view's
nearest caption, "a handwritten digit seven", averaged over the views never paired with text); the modality gap
(distance between modality means, averaged over pairs). "-": does not apply.

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
    it claims (None: none); ``prompts(m)``: for a text-paired setting, the modalities whose zero-shot accuracy from
    the class prompts it reports (None: none)."""

    def __init__(self, pairs, kept=None, modality=None, prompts=None):
        self.pairs, self.kept, self.modality, self.prompts = pairs, kept, modality, prompts


def without(anchor: str, prompts=None) -> Claim:
    """The anchor settings: the pairs without ``anchor`` (what a fixed anchor never trains directly) must rise,
    the pairs with it must stay; kNN of the non-anchor modalities; ``prompts`` as :class:`Claim`'s."""
    return Claim(lambda q, g: anchor not in (q, g), lambda q, g: anchor in (q, g), lambda m: m != anchor, prompts)


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
    ("synthetic", "sparse pairing (image-text, image-audio)", "emergentbridge (loss, lambda 0.1)",
     "emergentbridge.toml", ['anchor.projection="loss"', "anchor.lambda=0.1"], without("image")),
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
]

MFEAT_VIEWS = ("pix", "fou", "fac", "kar", "zer", "mor")
"""The six UCI Multiple Features views, each taken as the anchor in turn."""


def mfeat_proxy(anchor: str) -> str:
    """EmergentBridge's proxy for an mfeat anchor, by one rule rather than per anchor: the strongest other view
    (fac; pix when fac is the anchor)."""
    return "pix" if anchor == "fac" else "fac"


def mfeat_settings() -> list:
    """For every view as anchor: all views paired (the fixed anchor against CentroBind, whose runs do not depend
    on the anchor and are run once for all six), and sparse pairing (only anchor-X pairs: the fixed anchor against
    EmergentBridge, the loss variant at lambda 0.1 and the gradient variant at lambda 0.25, proxy
    :func:`mfeat_proxy`);
    then the text-paired setting (one caption per class, "a handwritten digit seven", through the frozen
    all-MiniLM-L6-v2, paired with pix only; anchor pix, sparse pairing), scored by zero-shot classification from the
    captions of the five views never paired with text."""
    rows = []
    centrobind = ["dataset.pairing=[]", "anchor.name=centrobind", "anchor.leave_one_out=true"]
    for anchor in MFEAT_VIEWS:
        setting = f"all views paired, anchor {anchor}"
        rows += [("mfeat", setting, "imagebind", "mfeat_imagebind.toml", ["dataset.pairing=[]",
                                                                         f"anchor.anchor={anchor}"], without(anchor)),
                 ("mfeat", setting, "centrobind (leave_one_out)", "mfeat_imagebind.toml", centrobind,
                  without(anchor))]
    for anchor in MFEAT_VIEWS:
        pairing = "dataset.pairing=[" + ",".join(f'["{anchor}","{v}"]' for v in MFEAT_VIEWS if v != anchor) + "]"
        proxy = mfeat_proxy(anchor)
        bridge = [pairing, "anchor.name=emergentbridge", f"anchor.anchor={anchor}", f"anchor.proxy={proxy}"]
        setting = f"sparse pairing ({anchor}-X only)"
        rows += [("mfeat", setting, "imagebind", "mfeat_imagebind.toml", [pairing, f"anchor.anchor={anchor}"],
                  without(anchor)),
                 ("mfeat", setting, f"emergentbridge (proxy {proxy}, loss, lambda 0.1)", "mfeat_imagebind.toml",
                  [*bridge, 'anchor.projection="loss"', "anchor.lambda=0.1"], without(anchor)),
                 ("mfeat", setting, f"emergentbridge (proxy {proxy}, gradient, lambda 0.25)", "mfeat_imagebind.toml",
                  [*bridge, 'anchor.projection="gradient"', "anchor.lambda=0.25"], without(anchor))]
    setting = "text-paired, sparse (pix-X only, pix-text captions)"
    claim = without("pix", prompts=lambda m: m not in ("pix", "text"))
    rows += [("mfeat", setting, "imagebind", "mfeat_text_zero_shot.toml", [], claim),
             ("mfeat", setting, "centrobind (auto)", "mfeat_text_zero_shot.toml", ["anchor.name=centrobind"], claim),
             ("mfeat", setting, "emergentbridge (proxy fac, gradient, lambda 0.25)", "mfeat_text_zero_shot.toml",
              ["anchor.name=emergentbridge", "anchor.anchor=pix", "anchor.proxy=fac", 'anchor.projection="gradient"',
               "anchor.lambda=0.25"], claim)]
    return rows


SETTINGS += mfeat_settings()

COLUMNS = [
    ("R@1 claim pairs", "claim/R@1"),
    ("R@1 anchor pairs", "kept/R@1"),
    ("R@1 trained", "retrieval/trained/R@1"),
    ("R@1 emergent", "retrieval/emergent/R@1"),
    ("prototypes trained", "prototypes/trained/acc"),
    ("prototypes emergent", "prototypes/emergent/acc"),
    ("kNN claim modalities", "knn/claim/acc"),
    ("kNN", "knn/mean/acc"),
    ("zero-shot from prompts, views never paired with text", "prompts/claim/acc"),
    ("gap", "modality_gap/all/gap"),
]

PAIRED = [("R@1 claim pairs", "claim/R@1"), ("R@1 anchor pairs", "kept/R@1"),
          ("kNN claim modalities", "knn/claim/acc"), ("kNN", "knn/mean/acc"),
          ("zero-shot from prompts", "prompts/claim/acc")]
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
    # zero-shot from the class prompts: each view's nearest class prototype of the text modality, which with one
    # caption per class ("a handwritten digit seven") is that caption's embedding
    prompts = [value for key, value in metrics.items() if key.startswith("prototypes/") and key.endswith("->text/acc")
               and claim.prompts is not None and claim.prompts(key.split("/")[1].split("->")[0])]
    if prompts:
        out["prompts/claim/acc"] = statistics.fmean(prompts)
    return out


def run_study(recipe: str, overrides: list, seeds: list, out: Path) -> dict:
    """One study (``mmcore run RECIPE --seeds ... --set ...`` in this process) -> ``{seed: metrics}`` of its
    finished runs, from each run directory's metrics.json as the study's summary.json lists them. The evaluators
    are :data:`EVALUATORS` unless ``overrides`` set others. Raises RuntimeError (with the study's messages) when it
    does not finish."""
    from mmcore.cli import main

    args = ["run", str(ROOT / "recipes" / recipe), "--seeds", ",".join(map(str, seeds)), "--seed-key", "dataset.seed",
            "--all-metrics", "--out", str(out)]
    for item in [EVALUATORS, *overrides, "trainer.accelerator=auto"]:
        args += ["--set", item]
    log = io.StringIO()
    with contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
        status = main(args)
    if status != 0:
        text = log.getvalue()
        start = text.find("mmcore: error")
        raise RuntimeError(f"exit status {status}: {text[start:][:2000] if start >= 0 else text[-2000:]}")
    summary = json.loads((out / "summary.json").read_text())
    return {run["seed"]: json.loads((out / run["dir"] / "metrics.json").read_text())
            for run in summary["runs"] if run["status"] == "finished"}


def run_setting(recipe: str, overrides: list, seeds: list, out: Path, claim: Claim) -> dict:
    """:func:`run_study` with the claim's averages added to each run's metrics (:func:`claim_metrics`)."""
    return {seed: claim_metrics(metrics, claim) for seed, metrics in run_study(recipe, overrides, seeds, out).items()}


def _worker(threads: int) -> None:
    """A ``--jobs`` worker process: no progress bars, ``threads`` torch threads."""
    os.environ.setdefault("CI", "true")
    import torch

    torch.set_num_threads(threads)


def _timed_study(recipe: str, overrides: list, seeds: list, out: Path) -> tuple:
    """``(runs, seconds)`` of :func:`run_study`, or ``(the exception, seconds)`` if it failed."""
    start = time.time()
    try:
        runs = run_study(recipe, overrides, seeds, out)
    except Exception as exc:  # noqa: BLE001 - a missing dataset must not lose the other rows
        runs = exc
    return runs, time.time() - start


def run_studies(studies: list, seeds: list, folder: Path, jobs: int, threads: int):
    """Yield ``(index, runs or the exception, seconds)`` for each ``(recipe, overrides)`` of ``studies`` as it
    finishes: in this process one after another, or in ``jobs`` worker processes (spawned) at once."""
    calls = [(recipe, list(overrides), seeds, folder / f"study-{index}") for index, (recipe, overrides)
             in enumerate(studies)]
    if jobs <= 1:
        for index, call in enumerate(calls):
            yield (index, *_timed_study(*call))
        return
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn"), initializer=_worker,
                             initargs=(threads,)) as pool:
        futures = {pool.submit(_timed_study, *call): index for index, call in enumerate(calls)}
        for future in as_completed(futures):
            yield (futures[future], *future.result())


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
    parser.add_argument("--jobs", type=int, default=1,
                        help="studies run at once, each in a worker process of its own (default 1: one after another "
                             "in this process); e.g. the number of cores with --threads 1")
    args = parser.parse_args(argv)
    try:
        seeds = parse_seeds(args.seeds)
    except ValueError as exc:
        parser.error(str(exc))
    os.environ.setdefault("CI", "true")  # no progress bars
    import torch

    torch.set_num_threads(args.threads)

    results, started = {}, time.time()
    # each row's study, (recipe, overrides); rows with the same one (CentroBind's all-paired runs under each anchor's
    # claim) share it
    keyed = [(row, (row[3], (*row[4], *(LARGE if args.large and row[0] == "synthetic" else []))))
             for row in SETTINGS if not args.only or row[0] == args.only]
    studies = list(dict.fromkeys(study for _, study in keyed))
    raw = {}
    with tempfile.TemporaryDirectory() as tmp:
        for index, runs, seconds in run_studies(studies, seeds, Path(tmp), args.jobs, args.threads):
            recipe, overrides = studies[index]
            if isinstance(runs, Exception):
                print(f"{recipe} {' '.join(overrides)}: skipped: {runs}", file=sys.stderr, flush=True)
                continue
            raw[studies[index]] = runs
            print(f"[{len(raw)}/{len(studies)}] {recipe} {' '.join(overrides)}: {len(runs)} seeds, {seconds:.0f} s",
                  file=sys.stderr, flush=True)
    for (dataset, setting, method, _, _, claim), study in keyed:
        runs = raw.get(study)
        if runs is not None:
            results[(dataset, setting, method)] = {seed: claim_metrics(m, claim) for seed, m in runs.items()}
    minutes = (time.time() - started) / 60
    command = ("python benchmarks/methods.py" + (f" --seeds {args.seeds}" if seeds != [0, 1, 2] else "")
               + (f" --only {args.only}" if args.only else "") + (" --large" if args.large else ""))
    body = [START, "## Methods (synthetic data and UCI Multiple Features)", "",
            f"Regenerate: `{command}` ({len(seeds)} seeds: {','.join(map(str, seeds))}; {minutes:.1f} min on "
            f"{machine()}, {args.jobs} job(s) of {args.threads} torch thread(s)). Each row is one "
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
