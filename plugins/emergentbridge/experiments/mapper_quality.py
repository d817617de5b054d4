"""When does EmergentBridge lift the unpaired pairs? Mapper quality, settings and lift, per anchor/proxy choice.

For each setting (a recipe, an anchor ``A`` and a proxy ``B``; the other modalities are the new ones ``N``) and each
seed, trains the fixed anchor (``imagebind``, anchor ``A``) and one EmergentBridge run per ``--variant`` (``anchor.*``
settings on top of :data:`BASE`, the loss variant at lambda 0.1, sigma 0.1; ``""``: that alone) on the same data,
pairing and seed, and measures on the test split (every modality present):

- ``anchor``: mean Recall@1 over the ordered pairs that include ``A`` (what the method must keep);
- ``N-B``:    mean Recall@1 over ``N<->B`` (the pairs the proxy term targets; never observed together);
- ``N-N``:    mean Recall@1 over pairs of two new modalities (only when there are two or more);
- ``claim``:  mean Recall@1 over every pair without ``A`` (``benchmarks/methods.py``'s "claim pairs");
- the same per method minus the fixed anchor, paired by seed (``d ...``);
- mapper quality (EmergentBridge runs), on the test rows, through the public API (``mmcore.load(run).module
  .strategy.mapper``, applied to ``embed_split("test").z[A]``): ``cos g``: mean ``cos(g(z_A)_i, z_B_i)``;
  ``cos A``: mean ``cos(z_A_i, z_B_i)``; ``cos g perp``: the same as ``cos g`` after projecting both onto
  ``z_A_i``-perp (the subspace the proxy term aligns in); ``R@1 g``: ``g(z_A)`` retrieving ``z_B`` among the test
  rows; ``R@1 A``: ``z_A`` retrieving ``z_B`` (the fixed-anchor run's is printed as the setting's ``A->B``).

Settings (``--setting``, repeatable): ``synthetic`` (recipes/emergentbridge.toml: anchor image, proxy text, new audio;
linear text tower) and ``mfeat:A/B`` (recipes/mfeat_imagebind.toml with pairing ``A-X`` for every other view ``X``,
anchor ``A``, proxy ``B``; four new views). Each seed sets the model seed and the dataset seed (a fresh synthetic
draw, another mfeat split). Raw per-run figures go to ``--out`` (JSON lines, appended); ``--table FILE`` prints the
tables from such a file without training.

Commands behind plugins/emergentbridge/README.md, "When the lift appears (issue 18)" (from the repository root,
each under ``nice -n 19`` with one torch thread; 6-20 s per run on a shared 2-core CPU, about 40 minutes in all)::

    S=plugins/emergentbridge/experiments/mapper_quality.py
    python $S --out /tmp/eb18/synthetic.jsonl --setting synthetic --seeds 10 11 12 13 14 15 16 17 18 19 \\
        --variant "" --variant "lambda=0.0" --variant "sigma=0.0" --variant "sigma=0.3" --variant "lambda=0.05" \\
        --variant "lambda=0.3" --variant 'projection="gradient",lambda=0.25' --variant 'mapper_loss="cosine"'
    python $S --out /tmp/eb18/synthetic_fixedT.jsonl --set loss.learnable=false --setting synthetic \\
        --seeds 10 11 12 13 14 15 16 17 18 19 --variant "" --variant "lambda=0.0"
    python $S --out /tmp/eb18/synthetic_weak.jsonl --set dataset.modalities.image.noise=1.0 --setting synthetic \\
        --seeds 10 11 12 13 14 --variant "" --variant 'projection="gradient",lambda=0.25'
    python $S --out /tmp/eb18/mfeat.jsonl --setting mfeat:zer/fac --setting mfeat:fac/pix --setting mfeat:pix/fou \\
        --seeds 0 1 2 3 4 --variant "" --variant "lambda=0.0" --variant "sigma=0.0" --variant "lambda=0.3" \\
        --variant 'projection="gradient",lambda=0.25'
    python $S --out /tmp/eb18/proxies.jsonl --setting mfeat:zer/pix --setting mfeat:zer/kar --setting mfeat:pix/fac \\
        --setting mfeat:pix/zer --setting mfeat:mor/fac --setting mfeat:kar/fou --seeds 0 1 2 --variant ""
    python $S --out /tmp/eb18/pix_gradient.jsonl --setting mfeat:pix/zer --setting mfeat:pix/fac \\
        --setting mfeat:zer/pix --seeds 0 1 2 --variant 'projection="gradient",lambda=0.25'
    python $S --table /tmp/eb18/mfeat.jsonl     # the tables again, from the saved figures
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import math
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
RECIPES = ROOT / "recipes"
MFEAT_VIEWS = ("pix", "fou", "fac", "kar", "zer", "mor")


# ------------------------------------------------------------------------------------------ mapper quality


def mapper_quality(z_a, z_b, predicted) -> dict:
    """How well the mapper's output ``g(z_A)`` predicts ``z_B`` on held-out paired rows.

    z_a, z_b, predicted: ``[n, d]`` float tensors with unit rows (``predicted = g(z_a)``), row ``i`` one sample.
    Returns floats: ``cos_g`` mean ``cos(predicted_i, z_b_i)``; ``cos_a`` mean ``cos(z_a_i, z_b_i)``; ``cos_g_perp``
    mean cosine of ``P_i predicted_i`` and ``P_i z_b_i`` with ``P_i v = v - (v . z_a_i) z_a_i`` (a row whose
    projection is zero counts 0); ``r1_g`` / ``r1_a``: fraction of rows ``i`` whose nearest ``z_b`` row (dot
    product; ties go to the lowest index) is row ``i``, for the query ``predicted`` / ``z_a``.
    """
    import torch

    def cosine(x, y):
        return float((x * y).sum(-1).mean())

    def recall_at_1(query):
        return float(((query @ z_b.T).argmax(1) == torch.arange(len(z_b))).float().mean())

    def perp(v):
        p = v - (v * z_a).sum(-1, keepdim=True) * z_a
        return torch.nn.functional.normalize(p, dim=-1)

    return {"cos_g": cosine(predicted, z_b), "cos_a": cosine(z_a, z_b), "cos_g_perp": cosine(perp(predicted), perp(z_b)),
            "r1_g": recall_at_1(predicted), "r1_a": recall_at_1(z_a)}


def measure_mapper(run_dir: Path, anchor: str, proxy: str) -> dict:
    """:func:`mapper_quality` of a finished run on its test split (rows having both ``anchor`` and ``proxy``).
    Runs without a mapper (the fixed anchor) give only the ``_a`` figures."""
    import mmcore
    import torch

    model = mmcore.load(run_dir)
    split = model.embed_split("test")
    rows = torch.from_numpy(split.present[anchor] & split.present[proxy])
    z_a, z_b = torch.from_numpy(split.z[anchor])[rows], torch.from_numpy(split.z[proxy])[rows]
    mapper = getattr(model.module.strategy, "mapper", None)
    with torch.no_grad():
        predicted = mapper(z_a) if mapper is not None else z_a
    figures = mapper_quality(z_a, z_b, predicted)
    if mapper is None:
        figures = {k: v for k, v in figures.items() if k.endswith("_a")}
    return figures


# ------------------------------------------------------------------------------------------ settings and runs


def setting(name: str) -> dict:
    """``synthetic`` or ``mfeat:A/B`` -> recipe, overrides, anchor, proxy, new modalities."""
    if name == "synthetic":
        return {"recipe": RECIPES / "emergentbridge.toml", "overrides": [], "anchor": "image", "proxy": "text",
                "new": ["audio"], "modalities": ["image", "text", "audio"]}
    kind, _, choice = name.partition(":")
    anchor, _, proxy = choice.partition("/")
    if kind != "mfeat" or anchor not in MFEAT_VIEWS or proxy not in MFEAT_VIEWS or anchor == proxy:
        raise SystemExit(f"mapper_quality: error: --setting {name!r}: give 'synthetic' or 'mfeat:A/B' with two "
                         f"different views of {', '.join(MFEAT_VIEWS)}")
    others = [v for v in MFEAT_VIEWS if v != anchor]
    pairing = ",".join(f'["{anchor}","{v}"]' for v in others)
    return {"recipe": RECIPES / "mfeat_imagebind.toml", "overrides": [f"dataset.pairing=[{pairing}]"],
            "anchor": anchor, "proxy": proxy, "new": [v for v in others if v != proxy], "modalities": list(MFEAT_VIEWS)}


BASE = ['anchor.projection="loss"', "anchor.lambda=0.1", "anchor.sigma=0.1"]
"""What every variant starts from: the loss variant at lambda 0.1, sigma 0.1 (the recipe and the plugin's defaults
when the README's tables were measured; the defaults are now the gradient variant at lambda 0.25)."""


def method_overrides(config: dict, variant: str | None) -> list:
    """``None``: the fixed anchor; otherwise EmergentBridge with :data:`BASE` and then the ``anchor.*`` settings
    ``variant`` (comma-separated)."""
    if variant is None:
        return ["anchor.name=imagebind", f"anchor.anchor={config['anchor']}"]
    items = [f"anchor.{item.strip()}" for item in variant.split(",") if item.strip()]
    return ["anchor.name=emergentbridge", f"anchor.anchor={config['anchor']}", f"anchor.proxy={config['proxy']}",
            *BASE, *items]


def retrieval_figures(metrics: dict, config: dict) -> dict:
    """Mean R@1 over the ordered pairs of each group (see the module docstring)."""
    a, b, new = config["anchor"], config["proxy"], config["new"]
    mods = config["modalities"]
    ordered = [(q, g) for q in mods for g in mods if q != g]

    def mean(pairs):
        values = [metrics[f"retrieval/{q}->{g}/R@1"] for q, g in pairs]
        return sum(values) / len(values) if values else float("nan")

    return {"anchor": mean([p for p in ordered if a in p]),
            "N-B": mean([p for p in ordered if b in p and a not in p]),
            "N-N": mean([p for p in ordered if p[0] in new and p[1] in new]),
            "claim": mean([p for p in ordered if a not in p])}


def run_one(config: dict, seed: int, variant: str | None, extra: list) -> dict:
    """Train and evaluate one run in-process (``mmcore.cli.main``) in a temporary directory; its figures."""
    from mmcore.cli import main

    overrides = [*config["overrides"], *extra, f"seed={seed}", f"dataset.seed={seed}",
                 *method_overrides(config, variant)]
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "run"
        args = ["run", str(config["recipe"]), "--out", str(out)]
        for item in overrides:
            args += ["--set", item]
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()) as err:
            status = main(args)
        if status != 0:
            raise RuntimeError(f"mmcore {' '.join(args)} exited {status}: {err.getvalue()[-2000:]}")
        metrics = json.loads((out / "metrics.json").read_text())
        return {**retrieval_figures(metrics, config), **measure_mapper(out, config["anchor"], config["proxy"])}


# ------------------------------------------------------------------------------------------ tables


def mean_std(values: list, scale: float = 100.0) -> str:
    values = [v for v in values if v is not None and not math.isnan(v)]
    if not values:
        return "-"
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{scale * statistics.mean(values):.2f} ± {scale * std:.2f}"


def positive(values: list) -> str:
    return f"{sum(v > 0 for v in values)}/{len(values)}"


def tables(records: list) -> str:
    """Markdown tables, one per setting: mean ± std over seeds, deltas paired by seed with the fixed anchor."""
    lines = []
    for name in dict.fromkeys(r["setting"] for r in records):
        rows = [r for r in records if r["setting"] == name]
        base = {r["seed"]: r for r in rows if r["method"] == "fixed anchor"}
        seeds = sorted(base)
        has_nn = any(not math.isnan(r["N-N"]) for r in rows)
        lines += [f"\n{name}: seeds {seeds[0]}-{seeds[-1]} (n = {len(seeds)}); R@1 and cosines x100; fixed anchor "
                  f"A->B R@1 {mean_std([base[s]['r1_a'] for s in seeds])}, cos(z_A, z_B) "
                  f"{mean_std([base[s]['cos_a'] for s in seeds])}", ""]
        head = ["method", "anchor", "N-B", *(["N-N"] if has_nn else []), "d anchor", "d N-B", "N-B > 0",
                *(["d claim"] if has_nn else []), "cos g", "cos g perp", "R@1 g", "R@1 A", "R@1 g - A"]
        lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for method in dict.fromkeys(r["method"] for r in rows):
            group = {r["seed"]: r for r in rows if r["method"] == method}
            common = [s for s in seeds if s in group]
            col = lambda k: [group[s][k] for s in common]  # noqa: E731
            delta = lambda k: [group[s][k] - base[s][k] for s in common]  # noqa: E731
            mapped = "r1_g" in group[common[0]]
            cells = [method, mean_std(col("anchor")), mean_std(col("N-B")), *([mean_std(col("N-N"))] if has_nn else []),
                     "-" if method == "fixed anchor" else mean_std(delta("anchor")),
                     "-" if method == "fixed anchor" else mean_std(delta("N-B")),
                     "-" if method == "fixed anchor" else positive(delta("N-B")),
                     *((["-" if method == "fixed anchor" else mean_std(delta("claim"))]) if has_nn else []),
                     mean_std(col("cos_g")) if mapped else "-", mean_std(col("cos_g_perp")) if mapped else "-",
                     mean_std(col("r1_g")) if mapped else "-", mean_std(col("r1_a")),
                     mean_std([group[s]["r1_g"] - group[s]["r1_a"] for s in common]) if mapped else "-"]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def correlations(records: list) -> str:
    """Across EmergentBridge runs: Pearson correlation of the paired lift ``d N-B`` with each mapper figure."""
    base = {(r["setting"], r["seed"]): r for r in records if r["method"] == "fixed anchor"}
    runs = [r for r in records if r["method"] != "fixed anchor" and (r["setting"], r["seed"]) in base]
    if len(runs) < 3:
        return ""
    lift = [r["N-B"] - base[(r["setting"], r["seed"])]["N-B"] for r in runs]
    out = [f"\nPearson r of d N-B with, over {len(runs)} EmergentBridge runs:"]
    for key, label in (("cos_g", "cos g"), ("cos_g_perp", "cos g perp"), ("r1_g", "R@1 g"),
                       ("gain", "R@1 g - R@1 A"), ("base_r1_a", "fixed anchor's A->B R@1")):
        values = [r["r1_g"] - r["r1_a"] if key == "gain" else
                  base[(r["setting"], r["seed"])]["r1_a"] if key == "base_r1_a" else r[key] for r in runs]
        out.append(f"  {label}: {statistics.correlation(values, lift):+.2f}")
    return "\n".join(out)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--setting", action="append", default=None, help="synthetic or mfeat:A/B (repeatable)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--variant", action="append", default=None, help="anchor.* settings, comma-separated")
    parser.add_argument("--set", action="append", default=[], help="recipe overrides for every run")
    parser.add_argument("--out", type=Path, help="append each run's figures here (JSON lines)")
    parser.add_argument("--table", type=Path, help="print the tables of a file written by --out; train nothing")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    args = parser.parse_args(argv)
    if args.table:
        records = [json.loads(line) for line in args.table.read_text().splitlines() if line.strip()]
        print(tables(records) + correlations(records))
        return 0
    import torch

    torch.set_num_threads(args.threads)
    logging.getLogger("lightning").setLevel(logging.ERROR)
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    variants = args.variant or [""]
    records = []
    for name in args.setting or ["synthetic"]:
        config = setting(name)
        for seed in args.seeds:
            for variant in [None, *variants]:
                method = "fixed anchor" if variant is None else f"emergentbridge {variant}".strip()
                record = {"setting": name, "seed": seed, "method": method, "set": args.set,
                          **run_one(config, seed, variant, args.set)}
                records.append(record)
                if args.out:
                    args.out.parent.mkdir(parents=True, exist_ok=True)
                    with args.out.open("a") as f:
                        f.write(json.dumps(record) + "\n")
                print(f"{name} seed {seed} {method}: " + ", ".join(
                    f"{k} {100 * v:.2f}" for k, v in record.items() if isinstance(v, float)), file=sys.stderr,
                    flush=True)
    print(tables(records) + correlations(records))
    return 0


if __name__ == "__main__":
    sys.exit(main())
