"""CentroBind under sparse pairing (every training row has exactly two modalities): the README's table and the
measurements behind its explanation.

    python plugins/centrobind/experiments/sparse_pairing.py            # 3 seeds, recipes/centrobind_sparse.toml
    python plugins/centrobind/experiments/sparse_pairing.py --mechanism-only   # part 2 alone, ~1 s

Part 1 (training): ``recipes/centrobind_sparse.toml`` (imagebind.toml's data, each training sample observed as
image+text or image+audio, never text+audio) with ``imagebind`` (fixed anchor image) and ``centrobind`` with
``leave_one_out`` = ``false`` (the paper's literal centroid), ``true`` and ``"auto"`` (the default). Seed ``s``
sets the model seed (the dataset is the recipe's, seed 0). Per run, on the 1000-sample test split: text-audio
Recall@1 (both directions averaged), prototypes text->audio (audio classified by nearest text class mean), and
geometry: mean cosine of positive pairs text-image and text-audio, and mean cosine between the text and audio
class means of the same class (each mean normalised), and mean cosine of same-class texts.

Part 2 (no training): the literal centroid's loss and its pull towards the paired modality on *random* unit
embeddings (``d = 64``, batch 256, half image+text, half image+audio, temperature 0.07), against leave-one-out:
the symmetric InfoNCE of the strategy's three terms, and for the text rows the mean component of the descent
direction ``-B * dL/dz_text`` (tangential to the sphere) along the direction towards the paired image.
"""

from __future__ import annotations

import os

for _name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):  # tiny runs: one thread each
    os.environ.setdefault(_name, "1")

import argparse
import contextlib
import io
import json
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
RECIPE = ROOT / "recipes" / "centrobind_sparse.toml"
METHODS = {
    "imagebind": ["anchor.name=imagebind", "anchor.anchor=image"],
    "centrobind (false)": ["anchor.leave_one_out=false"],
    "centrobind (true)": ["anchor.leave_one_out=true"],
    "centrobind (auto)": ['anchor.leave_one_out="auto"'],
}
COLUMNS = ["text-audio R@1", "prototypes text->audio", "cos text-image pos", "cos text-audio pos",
           "class-mean cos text-audio", "cos same-class text"]


def geometry(run_dir: Path) -> dict:
    """The geometry columns from a finished run's test embeddings."""
    import numpy as np

    import mmcore

    split = mmcore.load(run_dir).embed_split("test")
    z = {m: np.asarray(v) for m, v in split.z.items()}
    y = np.asarray(split.labels)
    means = {m: np.stack([z[m][y == c].mean(0) for c in range(int(y.max()) + 1)]) for m in ("text", "audio")}
    means = {m: v / np.linalg.norm(v, axis=1, keepdims=True) for m, v in means.items()}
    same = (y[:, None] == y[None]) & ~np.eye(len(y), dtype=bool)
    return {"cos text-image pos": float((z["text"] * z["image"]).sum(1).mean()),
            "cos text-audio pos": float((z["text"] * z["audio"]).sum(1).mean()),
            "class-mean cos text-audio": float((means["text"] * means["audio"]).sum(1).mean()),
            "cos same-class text": float((z["text"] @ z["text"].T)[same].mean())}


def run_once(overrides: list, seed: int, workdir: Path) -> dict:
    from mmcore.cli import main

    out = Path(tempfile.mkdtemp(dir=workdir)) / "run"
    args = ["run", str(RECIPE), "--out", str(out), "--set", f"seed={seed}"] + [x for o in overrides
                                                                            for x in ("--set", o)]
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        status = main(args)
    if status != 0:
        raise RuntimeError(f"mmcore {' '.join(args)} exited {status}")
    metrics = json.loads((out / "metrics.json").read_text())
    row = {"text-audio R@1": (metrics["retrieval/text->audio/R@1"] + metrics["retrieval/audio->text/R@1"]) / 2,
           "prototypes text->audio": metrics["prototypes/text->audio/acc"]}
    row.update(geometry(out))
    return row


def mechanism(seed: int = 0, n: int = 256, dim: int = 64, temperature: float = 0.07) -> list:
    """Part 2: ``[(cos of the pair, setting, loss, pull towards image)]`` on random unit embeddings."""
    import torch
    import torch.nn.functional as F

    from mmcore_centrobind.centroid import centroid_keys, co_present

    generator = torch.Generator().manual_seed(seed)
    half = torch.arange(n) < n // 2
    present = {"image": torch.ones(n, dtype=torch.bool), "text": half, "audio": ~half}
    rows = []
    for mix in (0.0, 0.3, 0.6):
        image = F.normalize(torch.randn(n, dim, generator=generator), dim=1)
        other = {m: F.normalize(mix * image + (1 - mix) * F.normalize(torch.randn(n, dim, generator=generator),
                                                                         dim=1), dim=1) for m in ("text", "audio")}
        for setting in (False, True):
            z = {"image": image.clone().requires_grad_(), **{m: v.clone().requires_grad_() for m, v in other.items()}}
            keys = centroid_keys(z, present, leave_one_out=setting)
            enough = co_present(present)
            loss = 0.0
            for m in z:
                mask = present[m] & enough
                logits = z[m][mask] @ keys[m][mask].T / temperature
                target = torch.arange(len(logits))
                loss = loss + (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2
            loss.backward()
            text, paired = z["text"].detach()[half], z["image"].detach()[half]
            descent = -n * z["text"].grad[half]
            descent = descent - (descent * text).sum(1, keepdim=True) * text
            towards = F.normalize(paired - (paired * text).sum(1, keepdim=True) * text, dim=1)
            rows.append((float((text * paired).sum(1).mean()), setting, float(loss.detach()),
                         float((descent * towards).sum(1).mean())))
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--mechanism-only", action="store_true")
    args = parser.parse_args(argv)
    print("| cos(z_text, z_image) | leave_one_out | loss (3 terms) | pull of text towards its image |")
    print("|---|---|---|---|")
    for cos, setting, loss, pull in mechanism():
        print(f"| {cos:.2f} | {str(setting).lower()} | {loss:.3f} | {pull:.2f} |")
    if args.mechanism_only:
        return 0
    seeds = [int(s) for s in args.seeds.split(",")]
    print()
    print("| method | " + " | ".join(COLUMNS) + " |")
    print("|---|" + "---|" * len(COLUMNS))
    with tempfile.TemporaryDirectory() as workdir:
        for name, overrides in METHODS.items():
            runs = [run_once(overrides, seed, Path(workdir)) for seed in seeds]
            cells = []
            for column in COLUMNS:
                values = [r[column] for r in runs]
                cells.append(f"{statistics.mean(values):.3f} ± {statistics.pstdev(values):.3f}")
            print(f"| {name} | " + " | ".join(cells) + " |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
