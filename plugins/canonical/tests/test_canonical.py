"""``mmcore align`` (plugins/canonical): one orthogonal map between two runs' spaces (Gupta et al. 2026).

Math tests use embeddings built with a known orthogonal matrix and shifts, and a hand-derived 2-D optimum; the
end-to-end test trains two tiny runs that differ only in their seed and aligns them.
"""

import json
import math
from pathlib import Path

import mmcore
import numpy as np
import pytest
from mmcore.cli import main
from mmcore.testing import TINY_OVERRIDES
from mmcore_canonical.procrustes import apply, fit_procrustes, relative_residual
from mmcore_canonical.report import align_report

ROOT = Path(__file__).resolve().parents[3]  # the repository; its recipes/ are first-party
RECIPES = ROOT / "recipes"
TINY = list(TINY_OVERRIDES)


def random_orthogonal(d: int, seed: int) -> np.ndarray:
    q, r = np.linalg.qr(np.random.default_rng(seed).standard_normal((d, d)))
    return q * np.sign(np.diag(r))


def unit_rows(x):
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_fit_recovers_an_exact_rotation_and_shift():
    d = 32
    x = unit_rows(np.random.default_rng(0).standard_normal((300, d)))
    q_true, shift = random_orthogonal(d, 1), np.random.default_rng(2).standard_normal(d)
    y = x @ q_true + shift
    rotation, mu_x, mu_y = fit_procrustes(x, y)
    assert np.linalg.norm(rotation - q_true) < 1e-5
    assert np.allclose(rotation.T @ rotation, np.eye(d), atol=1e-10)
    assert np.allclose(mu_x, [sum(x[i][j] for i in range(300)) / 300 for j in range(d)])
    assert relative_residual(apply(x, rotation, mu_x, mu_y), y) < 1e-10


def test_fit_matches_the_hand_derived_optimum_in_two_dimensions():
    # rows x R(phi) with R = [[cos, sin], [-sin, cos]]: sum_i (x_i R).y_i = A cos(phi) + B sin(phi) on centred data,
    # A = sum x1 y1 + x2 y2, B = sum x1 y2 - x2 y1, maximal at phi = atan2(B, A)
    rng = np.random.default_rng(3)
    x = rng.standard_normal((50, 2))
    t = 0.8
    y = x @ np.array([[math.cos(t), math.sin(t)], [-math.sin(t), math.cos(t)]]) + 0.4 * rng.standard_normal((50, 2))
    xc = [[x[i][j] - sum(x[k][j] for k in range(50)) / 50 for j in range(2)] for i in range(50)]
    yc = [[y[i][j] - sum(y[k][j] for k in range(50)) / 50 for j in range(2)] for i in range(50)]
    a = sum(p[0] * q[0] + p[1] * q[1] for p, q in zip(xc, yc))
    b = sum(p[0] * q[1] - p[1] * q[0] for p, q in zip(xc, yc))
    phi = math.atan2(b, a)
    rotation, _, _ = fit_procrustes(x, y)
    assert rotation == pytest.approx(np.array([[math.cos(phi), math.sin(phi)], [-math.sin(phi), math.cos(phi)]]))


def rotated_model(n, d, q_true, seed):
    """OLD: two modalities with noisy pairs (so within-model retrieval is imperfect); NEW: OLD @ q_true plus one
    shift, i.e. exactly the relation the paper posits between two models."""
    rng = np.random.default_rng(seed)
    image = unit_rows(rng.standard_normal((n, d)))
    text = unit_rows(image + 2.0 * rng.standard_normal((n, d)) / math.sqrt(d))
    old = {"image": image, "text": text}
    shift = np.random.default_rng(99).standard_normal(d)  # the same model relation for every split
    new = {m: z @ q_true + shift for m, z in old.items()}

    def split(z):
        return mmcore.EmbeddedSplit(z={m: v.astype(np.float32) for m, v in z.items()},
                                    present={m: np.ones(n, bool) for m in z})

    return split(old), split(new)


def test_the_map_fitted_on_one_modality_aligns_the_other_exactly():
    d, q_true = 32, random_orthogonal(32, 7)
    old_train, new_train = rotated_model(1000, d, q_true, seed=0)
    old_test, new_test = rotated_model(400, d, q_true, seed=1)
    sweep, fits = align_report(old_train, new_train, old_test, new_test, "image", [200])
    assert np.linalg.norm(fits[200]["rotation"] - q_true.T) < 1e-5  # NEW -> OLD undoes q_true
    rows = {(r["query"], r["gallery"]): r for r in sweep[0]["retrieval"]}
    assert set(rows) == {(q, g) for q in ("image", "text") for g in ("image", "text")}
    for (q, g), r in rows.items():
        assert r["before"] < 0.05  # unmapped spaces are unrelated: near chance (1/400)
        if q == g:
            assert r["after"] == 1.0
        else:  # the text map was never fitted (its means only): cross-model equals within-model retrieval
            assert r["after"] == r["within_old"] and 0.2 < r["within_old"] < 0.99
    for m in ("image", "text"):
        assert sweep[0]["residual"][m]["test"] < 1e-5


def test_fewer_anchors_than_dimensions_fit_only_their_span():
    # 10 anchors in 32 dims: the centred anchors span 9 dimensions; R maps them exactly and guesses the rest
    d, q_true = 32, random_orthogonal(32, 7)
    old_train, new_train = rotated_model(1000, d, q_true, seed=0)
    old_test, new_test = rotated_model(400, d, q_true, seed=1)
    sweep, fits = align_report(old_train, new_train, old_test, new_test, "image", [10, 40])
    few, enough = sweep
    assert few["residual"]["image"]["anchors"] < 1e-5
    assert few["residual"]["image"]["test"] > 0.3  # measured 1.28; 0.00 with 40 anchors
    assert np.linalg.norm(fits[10]["rotation"] - q_true.T) > 1.0
    assert np.linalg.norm(fits[40]["rotation"] - q_true.T) < 1e-5  # 40 > d + 1 anchors determine R
    assert few["summary"]["same_after"] < 0.9 < enough["summary"]["same_after"]


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    """Two tiny imagebind runs that differ only in their seed (about 10 s each on 2 cores)."""
    base = tmp_path_factory.mktemp("align")
    for seed in (0, 1):
        args = ["run", str(RECIPES / "imagebind.toml"), "--out", str(base / f"seed{seed}"), "--set", f"seed={seed}"]
        for override in TINY:
            args += ["--set", override]
        assert main(args) == 0
    return base


def test_align_two_runs_end_to_end(two_runs, capsys):
    out = two_runs / "aligned"
    args = ["align", str(two_runs / "seed0"), str(two_runs / "seed1"), "--out", str(out),
            "--anchors", "100", "--anchor-counts", "10,50,200"]
    assert main(args) == 0
    table = capsys.readouterr().out
    assert "image -> image" in table and "within old" in table
    report = json.loads((out / "report.json").read_text())
    q = np.load(out / "Q.npy")
    assert q.shape == (64, 64) and np.allclose(q.T @ q, np.eye(64), atol=1e-8)
    assert np.load(out / "mean_new.npy").shape == np.load(out / "mean_old.npy").shape == (3, 64)
    assert report["modalities"] == ["image", "text", "audio"] and report["modality"] == "image"
    assert [e["anchors"] for e in report["sweep"]] == [10, 50, 100, 200]
    saved = next(e for e in report["sweep"] if e["anchors"] == 100)
    image = next(r for r in saved["retrieval"] if r["query"] == r["gallery"] == "image")
    # measured (tiny runs, 1 epoch, 256 test samples; seed pairs 0/1, 2/3, 4/5): image->image R@1 before Q
    # 0.008 / 0.000 / 0.004, after Q (100 anchors) 0.695 / 0.691 / 0.758; chance 1/256
    assert image["before"] < 0.05
    assert image["after"] > 0.4
    # the held-out residual falls as anchors are added (measured 1.08, 0.82, 0.74, 0.69 for seeds 0/1)
    test_residuals = [e["residual"]["image"]["test"] for e in report["sweep"]]
    assert test_residuals[0] > test_residuals[-1]

    # the output directory is never reused silently
    assert main(args) == 2
    assert "already exists" in capsys.readouterr().err


def test_align_refuses_bad_input(two_runs, tmp_path, capsys):
    old, new = str(two_runs / "seed0"), str(two_runs / "seed1")
    assert main(["align", old, new, "--modality", "video", "--out", str(tmp_path / "a")]) == 2
    assert "video" in capsys.readouterr().err
    assert main(["align", old, str(tmp_path), "--out", str(tmp_path / "b")]) == 2
    assert "not found" in capsys.readouterr().err
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
