"""One command, one table: every method on the synthetic data and on UCI Multiple Features, 3 seeds each.

    python benchmarks/methods.py                  # writes the methods section of benchmarks/RESULTS.md
    python benchmarks/methods.py --seeds 0 1 2 --only synthetic --print

Each setting tests one paper's claim against its baseline on the same data, pairing plan and seeds:
- strong vs weak anchor (CentroBind vs the fixed anchor of ImageBind),
- sparse pairing (EmergentBridge vs the fixed anchor, the unpaired pair is what must rise),
- mixed target modalities (MAMCL vs plain InfoNCE, one candidate pool per target modality).
A seed sets both the model's and the data's seed (mfeat: the train/test split). Runs go to a temporary directory.
Reported: mean ± std over seeds of Recall@1 on the pairs each claim is about ("claim pairs": the non-anchor pairs
for the anchor settings, the query against each target modality's own pool for the mixed-target task), on the
pairs the method aligned directly ("trained") and on the pairs it never aligned ("emergent"; "-" when it aligns
every pair),
zero-shot accuracy (prototypes of another modality) on both kinds of pairs, mean kNN accuracy and the modality
gap (distance between modality means, averaged over pairs). "-" means the metric does not apply.
"""

from __future__ import annotations

import argparse
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

def without(anchor: str):
    """Claim pairs: ordered pairs that do not involve ``anchor`` (what a fixed anchor never trains directly)."""
    return lambda q, g: anchor not in (q, g)


def query_to_targets(q: str, g: str) -> bool:
    """Claim pairs of the mixed-target task: the query against each target modality's own pool."""
    return q == "query"


# (dataset, setting, method, recipe, overrides, claim pairs)
SETTINGS = [
    ("synthetic", "strong anchor (image)", "imagebind", "imagebind.toml", [], without("image")),
    ("synthetic", "strong anchor (image)", "centrobind", "centrobind.toml", [], without("image")),
    ("synthetic", "weak anchor (image noise 2.5)", "imagebind", "centrobind_weak_anchor.toml", FIXED_IMAGE,
     without("image")),
    ("synthetic", "weak anchor (image noise 2.5)", "centrobind", "centrobind_weak_anchor.toml", [], without("image")),
    ("synthetic", "sparse pairing (image-text, image-audio)", "imagebind", "emergentbridge.toml", FIXED_IMAGE,
     without("image")),
    ("synthetic", "sparse pairing (image-text, image-audio)", "emergentbridge", "emergentbridge.toml", [],
     without("image")),
    ("synthetic", "mixed target modalities", "infonce", "mamcl_infonce.toml", [], query_to_targets),
    ("synthetic", "mixed target modalities", "mamcl", "mamcl.toml", [], query_to_targets),
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
    ("R@1 trained", "retrieval/trained/R@1"),
    ("R@1 emergent", "retrieval/emergent/R@1"),
    ("prototypes trained", "prototypes/trained/acc"),
    ("prototypes emergent", "prototypes/emergent/acc"),
    ("kNN", "knn/mean/acc"),
    ("gap", "modality_gap/all/gap"),
]


LARGE = ["dataset.train_size=100000", "dataset.test_size=10000", "trainer.batch_size=4096", "embed_dim=256"]
"""--large (for a GPU): synthetic settings with 25x the training data, bigger batches and a wider space."""


def run_one(recipe: str, overrides: list, seed: int, workdir: Path, claim) -> dict:
    import mmcore
    from mmcore.train.build import assemble
    from mmcore.runs.directory import make_run_dir
    from mmcore.runs.train import train

    recipe_path = ROOT / "recipes" / recipe
    sets = [*overrides, f"seed={seed}", f"dataset.seed={seed}", EVALUATORS, "trainer.accelerator=auto"]
    parsed, sources = mmcore.load_recipe(recipe_path, sets)
    built = assemble(parsed)
    run_dir = make_run_dir(parsed, workdir / f"{recipe_path.stem}-{abs(hash(tuple(sets)))}-{seed}")
    metrics = dict(train(parsed, sources, run_dir, module_data=built))
    gaps = [v for k, v in metrics.items() if k.startswith("modality_gap/") and k.endswith("/gap")
            and k.count("/") == 2 and "-" in k.split("/")[1]]
    if gaps:
        metrics["modality_gap/all/gap"] = sum(gaps) / len(gaps)
    claimed = [value for key, value in metrics.items() if key.startswith("retrieval/") and key.endswith("/R@1")
               and "->" in key and claim(*key.split("/")[1].split("->"))]
    if claimed:
        metrics["claim/R@1"] = sum(claimed) / len(claimed)
    return metrics


def cell(values: list) -> str:
    if not values:
        return "-"
    if len(values) == 1:
        return f"{values[0]:.3f}"
    return f"{statistics.mean(values):.3f} ± {statistics.stdev(values):.3f}"


def table(results: dict, dataset: str) -> list:
    lines = [f"| setting | method | {' | '.join(name for name, _ in COLUMNS)} |",
             "|---|---|" + "---|" * len(COLUMNS)]
    for (ds, setting, method), runs in results.items():
        if ds != dataset:
            continue
        cells = [cell([r[key] for r in runs if key in r]) for _, key in COLUMNS]
        lines.append(f"| {setting} | {method} | {' | '.join(cells)} |")
    return lines


def machine() -> str:
    import torch

    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "CPU only"
    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, {device}, torch {torch.__version__}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--only", choices=["synthetic", "mfeat"])
    parser.add_argument("--print", action="store_true", help="print the tables instead of writing RESULTS.md")
    parser.add_argument("--large", action="store_true", help="the GPU-sized synthetic settings (see LARGE)")
    args = parser.parse_args()
    os.environ.setdefault("CI", "true")  # no progress bars

    results, started = {}, time.time()
    with tempfile.TemporaryDirectory() as tmp:
        for dataset, setting, method, recipe, overrides, claim in SETTINGS:
            if args.only and dataset != args.only:
                continue
            key = (dataset, setting, method)
            for seed in args.seeds:
                t0 = time.time()
                try:
                    extra = LARGE if args.large and dataset == "synthetic" else []
                    metrics = run_one(recipe, [*overrides, *extra], seed, Path(tmp), claim)
                except Exception as exc:  # noqa: BLE001 - a missing dataset must not lose the other rows
                    print(f"{dataset} / {setting} / {method}: skipped: {exc}", file=sys.stderr)
                    break
                results.setdefault(key, []).append(metrics)
                print(f"{dataset} / {setting} / {method} / seed {seed}: R@1 emergent "
                      f"{metrics.get('retrieval/emergent/R@1', float('nan')):.3f} ({time.time() - t0:.0f} s)",
                      file=sys.stderr, flush=True)
    minutes = (time.time() - started) / 60
    command = "python benchmarks/methods.py" + (f" --only {args.only}" if args.only else "") + (
        " --large" if args.large else "")
    body = [START, "## Methods (synthetic data and UCI Multiple Features)", "",
            f"Regenerate: `{command}` ({len(args.seeds)} seeds: {args.seeds}; {minutes:.1f} min on {machine()}).",
            "Mean ± std over seeds. Each setting compares a method with its baseline on the same data, pairing and "
            "seeds. \"R@1 claim pairs\": non-anchor pairs for the anchor settings, query -> each target modality's "
            "own pool for the mixed-target task. \"trained\"/\"emergent\": pairs the method aligned directly / "
            "never (\"-\": it aligns every pair, so the two are not comparable across methods).", ""]
    for dataset in ("synthetic", "mfeat"):
        if any(k[0] == dataset for k in results):
            body += [f"### {dataset}", "", *table(results, dataset), ""]
    body.append(END)
    text = "\n".join(body)
    if args.print:
        print(text)
        return
    old = RESULTS.read_text() if RESULTS.exists() else "# Benchmark results\n\n"
    if START in old and END in old:
        new = old[:old.index(START)] + text + old[old.index(END) + len(END):]
    else:
        new = old.rstrip("\n") + "\n\n" + text + "\n"
    RESULTS.write_text(new)
    print(f"wrote {RESULTS}", file=sys.stderr)


if __name__ == "__main__":
    main()
