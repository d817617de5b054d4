"""Canonicalisation (``mmcore align``) between runs that differ in METHOD (and width), not only in seed (issue 18).

Trains OLD = ``recipes/imagebind.toml`` seed 0 and NEW runs on the same data with another method, each with its
own seed, then runs ``mmcore align OLD NEW --anchor-counts 10,50,100,500`` for each pair and prints a Markdown table
read from ``report.json``:

- same-modality cross-model Recall@1 (test split, ``m -> m``, NEW query mapped by ``Q``, OLD gallery), mean over
  modalities before / after ``Q``, and each modality's ``after``;
- cross-modal cross-model Recall@1 (``q -> g``, ``q != g``, mean over the ordered pairs) after ``Q``, against each
  model's own (within OLD, within NEW), and the gap ``within OLD - after`` in points;
- a prototype ("zero-shot from labels") figure the report does not hold, computed here from the same fit: NEW's
  test embeddings of ``q`` mapped by ``Q`` and classified by the nearest class prototype of OLD's modality ``p``
  (mean of OLD's reference-set embeddings of each class, as the ``prototypes`` evaluator builds them), mean over
  ``q != p``; against OLD's own ``prototypes/q->p/acc`` (and NEW's);
- the paper's cross-model zero-shot, where the runs have a text encoder that embeds new strings
  (recipes/mfeat_text_zero_shot.toml): NEW's test embeddings of every other view mapped by ``Q`` and classified by
  the nearest of OLD's class-prompt embeddings (the trained template filled with each class name), mean over the
  views; against OLD's own (and NEW's, with NEW's prompts).

Pairs (NEW -> OLD; OLD is always seed 0, NEW's seed is given, plus 10 per ``--repeats``):

- ``centrobind``: OLD imagebind.toml; NEW recipes/centrobind.toml (centroid anchor, leave-one-out), seed 1;
- ``mamcl``: OLD imagebind.toml; NEW imagebind.toml with ``loss.name = "mamcl"`` at UNITE's
  ``temperature = 0.03``, seed 2. recipes/mamcl.toml itself trains another dataset (``mixed_targets``: query, a, b,
  a+b), which cannot be aligned with imagebind.toml's runs; and the imagebind anchor's terms carry no modality
  labels, so MAMCL on this data is plain InfoNCE at temperature 0.03 (the difference from OLD is the temperature);
- ``pairwise``: OLD imagebind.toml; NEW imagebind.toml with ``anchor.name = "pairwise"`` (every pair trained,
  text-audio included), seed 3;
- ``wide``: OLD imagebind.toml; NEW recipes/centrobind.toml with ``hidden = [256, 256]`` for every encoder, seed 4;
- ``mixed``: OLD recipes/mamcl_infonce.toml, NEW recipes/mamcl.toml, seed 1: the mixed-target data, where MAMCL's
  modality mask is active;
- ``mfeat`` (real data): OLD recipes/mfeat_imagebind.toml; NEW the same recipe with ``anchor.name = "centrobind"``,
  ``leave_one_out = false`` (the literal centroid of the two views each training sample holds), seed 1;
- ``mfeat-loo``: as ``mfeat`` with ``leave_one_out = true``, seed 2. A two-view sample's key is then its other
  view: the pairs ImageBind trains, in other terms (one per view; pix's term mixes its five partners);
- ``mfeat-seed``: OLD and NEW both recipes/mfeat_imagebind.toml, NEW seed 3 (the seed-only reference on mfeat;
  the synthetic seed-only pairs are in the README's first table);
- ``sparse``: OLD recipes/emergentbridge.toml with its fixed-anchor baseline (``anchor.name = "imagebind"``,
  ``anchor.anchor = "image"``), NEW recipes/emergentbridge.toml, seed 1. emergentbridge.toml cannot be aligned
  with imagebind.toml's runs: its sparse pairing (image+text or image+audio per training sample) gives other
  presence masks than imagebind.toml's (every sample holds all three), and ``mmcore align`` refuses splits whose
  samples differ; so it is paired with the fixed anchor on its own data;
- ``text-seed``: OLD and NEW recipes/mfeat_text_zero_shot.toml (mfeat + captions paired with pix, frozen MiniLM
  text tower with a trained head; needs mmcore-textencoder[minilm]), NEW seed 1;
- ``text-loo``: NEW the same recipe with ``anchor.name = "centrobind"``, ``leave_one_out = true``, seed 2.

    OMP_NUM_THREADS=1 nice -n 19 python plugins/canonical/experiments/cross_method.py --repeats 2
    OMP_NUM_THREADS=1 nice -n 19 python plugins/canonical/experiments/cross_method.py --only centrobind pairwise

Runs in-process with one torch thread; run and align directories go to a temporary folder (deleted at the end)
unless ``--runs DIR`` (runs already there are reused). About 40 s per run on a shared 2-core CPU;
``--repeats 2`` trains 27 runs, about 12 minutes.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
RECIPES = ROOT / "recipes"
COUNTS = (10, 50, 100, 500)
WIDE = [f"encoders.{m}.hidden=[256,256]" for m in ("image", "text", "audio")]

IB = ("imagebind.toml", [])
MFEAT = ("mfeat_imagebind.toml", [])
TEXT = ("mfeat_text_zero_shot.toml", [])
SPARSE_IB = ("emergentbridge.toml", ["anchor.name=imagebind", "anchor.anchor=image"])
PAIRS = {  # pair id: (table label, OLD (recipe, overrides), NEW (recipe, overrides), NEW's first seed); OLD: seed 0
    "centrobind": ("centrobind", IB, ("centrobind.toml", []), 1),
    "mamcl": ("mamcl loss (τ 0.03)", IB, ("imagebind.toml", ["loss.name=mamcl", "loss.temperature=0.03"]), 2),
    "pairwise": ("pairwise", IB, ("imagebind.toml", ["anchor.name=pairwise"]), 3),
    "wide": ("centrobind, wide", IB, ("centrobind.toml", WIDE), 4),
    "mixed": ("mixed_targets: mamcl → infonce", ("mamcl_infonce.toml", []), ("mamcl.toml", []), 1),
    "mfeat": ("mfeat: centroid → imagebind", MFEAT, ("mfeat_imagebind.toml", ["anchor.name=centrobind",
                                                                          "anchor.leave_one_out=false"]), 1),
    "mfeat-loo": ("mfeat: centroid, leave-one-out → imagebind", MFEAT,
                  ("mfeat_imagebind.toml", ["anchor.name=centrobind", "anchor.leave_one_out=true"]), 2),
    "mfeat-seed": ("mfeat: imagebind → imagebind (seed only)", MFEAT, MFEAT, 3),
    "sparse": ("sparse pairing: emergentbridge → imagebind", SPARSE_IB, ("emergentbridge.toml", []), 1),
    "text-seed": ("mfeat+text: imagebind → imagebind (seed only)", TEXT, TEXT, 1),
    "text-loo": ("mfeat+text: centroid, leave-one-out → imagebind", TEXT,
                 ("mfeat_text_zero_shot.toml", ["anchor.name=centrobind", "anchor.leave_one_out=true"]), 2),
}
REPEAT_STEP = 10
"""Repeat ``k`` of a pair trains NEW with seed ``first + k * REPEAT_STEP`` (OLD stays seed 0)."""


def cli(args: list) -> None:
    """``mmcore ARGS`` in-process, its stdout sent to stderr (stdout keeps the table); exit on failure."""
    from mmcore.cli import main

    with contextlib.redirect_stdout(sys.stderr):
        status = main([str(a) for a in args])
    if status != 0:
        raise SystemExit(f"mmcore {' '.join(map(str, args))} failed with status {status}")


def train(recipe: str, overrides: list, seed: int, runs: Path) -> Path:
    """``mmcore run`` into ``runs`` (reused when already there) -> the run directory."""
    import hashlib

    tag = hashlib.sha1("\n".join(overrides).encode()).hexdigest()[:8]  # the same name in every process
    out = runs / f"{Path(recipe).stem}-{tag}-s{seed}"
    if not (out / "metrics.json").is_file():
        sets = [f"seed={seed}", *overrides]
        cli(["run", RECIPES / recipe, "--out", out, "--overwrite", *itertools.chain(*(("--set", s) for s in sets))])
    return out


def prototype_figures(old_dir: Path, new_dir: Path, report: dict) -> dict:
    """``{anchors_requested: {"cross": acc, "within_old": acc, "within_new": acc}}``: class-prototype accuracy
    (means over ordered pairs ``q != p``), the cross-model one with the same anchors and ``Q`` as ``report``."""
    import numpy as np

    import mmcore
    from mmcore_canonical.report import fit_map, mapped

    old, new = mmcore.load(old_dir), mmcore.load(new_dir)
    old_train, new_train = old.embed_split("train"), new.embed_split("train")
    old_test, new_test = old.embed_split("test"), new.embed_split("test")
    if old_test.labels is None:
        return {}
    modality = report["modality"]
    order = np.random.default_rng(report["seed"]).permutation(len(old_train.present[modality]))
    num_classes = int(old_test.labels.max()) + 1

    def protos(split, p):
        ref = split.reference if split.reference is not None else split
        rows = ref.present[p]
        return mmcore.class_prototypes(ref.z[p][rows], ref.labels[rows], num_classes)

    def accuracy(z, rows, prototypes):
        return float(np.mean((mmcore.unit_rows(z[rows].astype(np.float32)) @ prototypes.T).argmax(1)
                             == old_test.labels[rows]))

    pairs = [(q, p) for q, p in itertools.permutations(report["modalities"], 2)]
    prompts = {name: class_prompts(run) for name, run in (("old", old), ("new", new))}
    out = {}
    for entry in report["sweep"]:
        fit = fit_map(old_train, new_train, modality, entry["anchors_requested"], order)
        cross, within_old, within_new = [], [], []
        for q, p in pairs:
            rows = old_test.present[q] & new_test.present[q]
            cross.append(accuracy(mapped(fit, q, new_test.z[q]), rows, protos(old_test, p)))
            within_old.append(accuracy(old_test.z[q], rows, protos(old_test, p)))
            within_new.append(accuracy(new_test.z[q], rows, protos(new_test, p)))
        if entry["anchors_requested"] == report["anchors_saved"]:
            assert np.allclose(fit["rotation"], report["Q"]), "the refit differs from align's Q"
        figures = {"cross": float(np.mean(cross)), "within_old": float(np.mean(within_old)),
                   "within_new": float(np.mean(within_new))}
        if prompts["old"] is not None and prompts["new"] is not None:  # the paper's zero-shot, from text prompts
            views = [m for m in report["modalities"] if m != "text"]
            rows = {m: old_test.present[m] & new_test.present[m] for m in views}
            figures["zero_shot"] = {
                "cross": float(np.mean([accuracy(mapped(fit, m, new_test.z[m]), rows[m], prompts["old"])
                                        for m in views])),
                "within_old": float(np.mean([accuracy(old_test.z[m], rows[m], prompts["old"]) for m in views])),
                "within_new": float(np.mean([accuracy(new_test.z[m], rows[m], prompts["new"]) for m in views]))}
        out[entry["anchors_requested"]] = figures
    return out


def class_prompts(run):
    """``[C, d]`` unit rows: the run's ``text`` encoder's embeddings of its class prompts (one template filled with
    each class name, as recipes/mfeat_text_zero_shot.toml trains them), or None when the run has no such encoder."""
    import numpy as np

    import mmcore

    section = run.recipe.encoders.get("text")
    encoder = run.module.encoders["text"] if section is not None else None
    if not hasattr(encoder, "embed_new") or not getattr(section.config, "names", None):
        return None
    template = section.config.templates[0]
    embedded = encoder.embed_new([template.format(name) for name in section.config.names])
    return mmcore.unit_rows(np.asarray(embedded.detach().cpu() if hasattr(embedded, "detach") else embedded,
                                       dtype=np.float32))


def align(pair_id: str, new_seed: int, runs: Path) -> tuple:
    """Train both runs, ``mmcore align`` them -> ``(report.json as a dict, prototype figures)``."""
    import numpy as np

    _, old_run, new_run, _ = PAIRS[pair_id]
    old_dir, new_dir = train(*old_run, 0, runs), train(*new_run, new_seed, runs)
    out = runs / f"align-{pair_id}-s{new_seed}"
    cli(["align", old_dir, new_dir, "--out", out, "--overwrite", "--anchor-counts", ",".join(map(str, COUNTS))])
    report = json.loads((out / "report.json").read_text())
    report["Q"], report["anchors_saved"] = np.load(out / "Q.npy"), 100  # align's default --anchors
    figures = prototype_figures(old_dir, new_dir, report)
    return report, figures


def _f(value) -> str:
    return "-" if value is None else f"{value:.3f}"


HEADER = ("| NEW → OLD | anchors | same-modality R@1 before / after (mean) | after: each modality → same | "
          "cross-modal R@1 before / after | cross-modal within OLD (NEW) | gap: within OLD − after (points) | "
          "prototype acc. cross-model / within OLD (NEW) | prompt zero-shot cross-model / within OLD (NEW) | "
          "held-out residual (fit modality) |")


def rows(label: str, report: dict, figures: dict) -> list:
    lines = []
    for entry in report["sweep"]:
        s, n = entry["summary"], entry["anchors_requested"]
        same = " / ".join(_f(r["after"]) for r in entry["retrieval"] if r["query"] == r["gallery"])
        gap = 100 * (s["cross_within_old"] - s["cross_after"])
        proto = figures.get(n)
        proto_text = (f"{proto['cross']:.3f} / {proto['within_old']:.3f} ({proto['within_new']:.3f})"
                      if proto else "-")
        zs = (proto or {}).get("zero_shot")
        zs_text = f"{zs['cross']:.3f} / {zs['within_old']:.3f} ({zs['within_new']:.3f})" if zs else "-"
        lines.append(f"| {label} | {entry['anchors']} | {_f(s['same_before'])} / {_f(s['same_after'])} | {same} | "
                     f"{_f(s['cross_before'])} / {_f(s['cross_after'])} | {_f(s['cross_within_old'])} "
                     f"({_f(s['cross_within_new'])}) | {gap:+.1f} | {proto_text} | {zs_text} | "
                     f"{entry['residual'][report['modality']]['test']:.3f} |")
    return lines


def main(argv: list | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="+", choices=list(PAIRS), help="these pairs only (default: all)")
    parser.add_argument("--repeats", type=int, default=1,
                        help=f"NEW seeds per pair: first, first + {REPEAT_STEP}, ... (default 1)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--runs", help="keep run and align directories here (default: a temporary folder)")
    args = parser.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    table = [HEADER, "|---" * HEADER.count(" | ") + "|---|"]
    with tempfile.TemporaryDirectory() as tmp:
        runs = Path(args.runs or tmp)
        for pair_id, k in itertools.product(args.only or list(PAIRS), range(args.repeats)):
            new_seed = PAIRS[pair_id][3] + k * REPEAT_STEP
            report, figures = align(pair_id, new_seed, runs)
            new_rows = rows(f"{PAIRS[pair_id][0]} (NEW seed {new_seed})", report, figures)
            print("\n".join(new_rows), file=sys.stderr, flush=True)
            table += new_rows
    print(f"Q fitted on each OLD run's first modality; anchor seed 0; anchors {','.join(map(str, COUNTS))}; "
          "Recall@1 and prototype accuracy on the test split; one run per model")
    print("\n".join(table))
    return 0


if __name__ == "__main__":
    sys.exit(main())
