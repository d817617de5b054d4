"""The ``modality_gap`` evaluator (plugins/modality_gap) on constructed embeddings with known answers, and in a run.

Every expected value is fixed by the construction (angles, spectra, shifts, rotations) or computed by hand with
plain Python loops, never by the plugin's own functions.
"""

import json
import math
from pathlib import Path

import mmcore
import numpy as np
import pytest
from mmcore.cli import main
from mmcore.testing import TINY_OVERRIDES
from mmcore_modality_gap.measures import derangement
from mmcore_modality_gap.plugin import ModalityGapConfig, modality_gap

ROOT = Path(__file__).resolve().parents[3]  # the repository; its recipes/ are first-party
RECIPES = ROOT / "recipes"
TINY = list(TINY_OVERRIDES)


def random_orthogonal(d: int, seed: int) -> np.ndarray:
    q, r = np.linalg.qr(np.random.default_rng(seed).standard_normal((d, d)))
    return q * np.sign(np.diag(r))


def unit_rows(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def split_of(z: dict, reference: dict | None = None, trained=()) -> mmcore.EmbeddedSplit:
    def make(zs):
        return mmcore.EmbeddedSplit(z={m: v.astype(np.float32) for m, v in zs.items()},
                                    present={m: np.ones(len(v), bool) for m, v in zs.items()})

    split = make(z)
    return mmcore.EmbeddedSplit(z=split.z, present=split.present, reference=make(reference) if reference else None,
                                trained_pairs=frozenset(frozenset(p) for p in trained))


def hyperplane_pair(thetas_deg, n=2000, d=12, seed=0):
    """``a`` in span(e_1..e_k); ``b`` the same coefficients on ``cos t_i e_i + sin t_i e_{k+i}``: the principal angles
    between the two k-dim subspaces are exactly ``thetas``; everything is then rotated by a random orthogonal map."""
    k = len(thetas_deg)
    g = unit_rows(np.random.default_rng(seed).standard_normal((n, k)))
    basis_a, basis_b = np.zeros((d, k)), np.zeros((d, k))
    for i, t in enumerate(np.radians(thetas_deg)):
        basis_a[i, i] = 1.0
        basis_b[i, i], basis_b[k + i, i] = math.cos(t), math.sin(t)
    rotate = random_orthogonal(d, seed + 100)
    return g @ basis_a.T @ rotate, g @ basis_b.T @ rotate


def test_hyperplanes_at_known_angles_report_those_angles():
    a, b = hyperplane_pair([10.0, 25.0, 40.0])
    m = modality_gap(split_of({"a": a, "b": b}))
    assert m["modality_gap/a-b/angle_min_deg"] == pytest.approx(10.0, abs=1e-4)
    assert m["modality_gap/a-b/angle_mean_deg"] == pytest.approx(25.0, abs=1e-4)
    assert m["modality_gap/a-b/angle_max_deg"] == pytest.approx(40.0, abs=1e-4)
    assert m["modality_gap/a/k99"] == 3 and m["modality_gap/b/k99"] == 3


def test_equal_angles_fix_the_pair_cosine_and_alignment_error():
    # with every principal angle t, b_i is a_i turned by exactly t: cos(a_i, b_i) = cos t for every pair
    t = 35.0
    a, b = hyperplane_pair([t, t, t, t])
    m = modality_gap(split_of({"a": a, "b": b}))
    assert m["modality_gap/a-b/cos_true"] == pytest.approx(math.cos(math.radians(t)), abs=1e-6)
    assert m["modality_gap/a-b/align_error"] == pytest.approx(1 - math.cos(math.radians(t)), abs=1e-6)
    assert m["modality_gap/a-b/angle_min_deg"] == pytest.approx(t, abs=1e-4)


def spiked(counts, d, seed):
    """Unit rows ``+-e_i`` of a k-dim subspace, ``counts[i]`` of them along axis i, randomly rotated in ``d`` dims:
    the singular values are exactly ``sqrt(counts[i])``."""
    rows = []
    for i, c in enumerate(counts):
        for j in range(c):
            e = np.zeros(d)
            e[i] = 1.0 if j % 2 == 0 else -1.0
            rows.append(e)
    return np.array(rows) @ random_orthogonal(d, seed)


def hand_erank(counts) -> float:
    s = [math.sqrt(c) for c in counts]
    return math.exp(-sum((x / sum(s)) * math.log(x / sum(s)) for x in s))


def hand_k(counts, energy) -> int:
    total, running = sum(counts), 0
    for k, c in enumerate(sorted(counts, reverse=True), start=1):
        running += c
        if running / total >= energy:
            return k
    raise AssertionError


@pytest.mark.parametrize("counts, k99", [([300] * 6, 6), ([400, 200, 100, 50, 26], 5), ([1000, 1000, 4], 2)])
def test_collapsed_modality_reports_its_rank(counts, k99):
    n = sum(counts)
    z = {"a": spiked(counts, 16, seed=1), "b": unit_rows(np.random.default_rng(2).standard_normal((n, 16)))}
    m = modality_gap(split_of(z))
    assert hand_k(counts, 0.99) == k99  # the design: the first two collapse to k dims, the last holds 0.2% in one
    assert m["modality_gap/a/k99"] == k99
    assert m["modality_gap/a/erank"] == pytest.approx(hand_erank(counts), rel=1e-6)
    assert m["modality_gap/b/k99"] > 12  # an isotropic modality is not collapsed


def test_energy_setting_and_centring():
    # rows cos(al) c + sin(al) (+-e_i): the mean direction c is one more raw direction; centring removes it
    counts, d, al = [200, 200, 200], 10, math.radians(50)
    c = np.zeros(d)
    c[9] = 1.0
    z = math.cos(al) * c + math.sin(al) * spiked(counts, d, seed=0) @ random_orthogonal(d, 0).T
    z = z @ random_orthogonal(d, 5)
    split = split_of({"a": z, "b": z})
    assert modality_gap(split)["modality_gap/a/k99"] == 4
    assert modality_gap(split, ModalityGapConfig(center=True))["modality_gap/a/k99"] == 3
    # energy 0.5: cos^2(50 deg) = 0.41 along c, sin^2/3 = 0.20 per other axis -> two directions reach 0.5
    assert modality_gap(split, ModalityGapConfig(energy=0.5))["modality_gap/a/k50"] == 2


def test_gap_of_a_known_shift():
    # a_i = cos(al) c_a + sin(al) u_i and b_i = cos(al) c_b + sin(al) u'_i with balanced +-e_j offsets orthogonal to
    # both centres: mean(a) = cos(al) c_a exactly, so gap = cos(al) |c_a - c_b| = cos(al) 2 sin(be/2), angle = be
    al, be, d = math.radians(40), math.radians(70), 12
    u = spiked([100] * 6, d, seed=0) @ random_orthogonal(d, 0).T  # +-e_0..e_5
    c_a, c_b = np.zeros(d), np.zeros(d)
    c_a[10], c_b[10], c_b[11] = 1.0, math.cos(be), math.sin(be)
    shuffled = u[np.random.default_rng(1).permutation(len(u))]
    rotate = random_orthogonal(d, 9)
    a = (math.cos(al) * c_a + math.sin(al) * u) @ rotate
    b = (math.cos(al) * c_b + math.sin(al) * shuffled) @ rotate
    m = modality_gap(split_of({"a": a, "b": b}))
    assert m["modality_gap/a-b/gap"] == pytest.approx(math.cos(al) * 2 * math.sin(be / 2), abs=1e-6)
    assert m["modality_gap/a-b/mean_angle_deg"] == pytest.approx(70.0, abs=1e-4)


def test_gap_and_pair_cosines_match_a_hand_computation():
    rng = np.random.default_rng(3)
    a = unit_rows(rng.standard_normal((40, 5)) + 1.0)
    b = unit_rows(a + 0.7 * rng.standard_normal((40, 5)))
    m = modality_gap(split_of({"a": a, "b": b}), ModalityGapConfig(seed=7))
    n, d = len(a), a.shape[1]
    mean_a = [sum(a[i][j] for i in range(n)) / n for j in range(d)]
    mean_b = [sum(b[i][j] for i in range(n)) / n for j in range(d)]
    assert m["modality_gap/a-b/gap"] == pytest.approx(math.dist(mean_a, mean_b), rel=1e-5)
    cos = [sum(a[i][j] * b[i][j] for j in range(d)) for i in range(n)]
    assert m["modality_gap/a-b/cos_true"] == pytest.approx(sum(cos) / n, rel=1e-5)
    assert m["modality_gap/a-b/align_error"] == pytest.approx(sum(1 - c for c in cos) / n, rel=1e-5)
    pi = derangement(n, 7)
    assert sorted(pi) == list(range(n)) and all(pi[i] != i for i in range(n))
    cos_random = [sum(a[i][j] * b[pi[i]][j] for j in range(d)) for i in range(n)]
    assert m["modality_gap/a-b/cos_random"] == pytest.approx(sum(cos_random) / n, rel=1e-5, abs=1e-7)


def rotated_pairs(n, d, rotation, noise, seed):
    a = unit_rows(np.random.default_rng(seed).standard_normal((n, d)))
    b = unit_rows(a @ rotation + noise * np.random.default_rng(seed + 1).standard_normal((n, d)) / math.sqrt(d))
    return a, b


def test_rotation_remedy_restores_retrieval_of_a_rotated_modality():
    # b = (a rotated by a random orthogonal map) + noise; the rotation is fitted on separate (reference) pairs
    d, rotation = 16, random_orthogonal(16, 4)
    a, b = rotated_pairs(500, d, rotation, noise=0.3, seed=10)
    ref_a, ref_b = rotated_pairs(1000, d, rotation, noise=0.3, seed=20)
    m = modality_gap(split_of({"a": a, "b": b}, reference={"a": ref_a, "b": ref_b}))
    assert m["modality_gap/a-b/rotation_fit_on_test"] == 0 and m["modality_gap/a-b/rotation_fit_pairs"] == 1000
    # measured: R@1 before 0.000 / 0.002, rotated 1.000 / 1.000 (seeds 10, 20, rotation seed 4); over 5 seed
    # sets before 0.000-0.014, rotated always 1.000
    for q, g in [("a", "b"), ("b", "a")]:
        assert m[f"modality_gap/{q}->{g}/R@1"] < 0.05
        assert m[f"modality_gap/{q}->{g}/R@1_rotated"] > 0.95
    # no reference: fitted on the test pairs themselves, and the metrics say so
    m = modality_gap(split_of({"a": a, "b": b}))
    assert m["modality_gap/a-b/rotation_fit_on_test"] == 1 and m["modality_gap/a->b/R@1_rotated"] > 0.95


def private_noise_pairs(n, seed):
    """Shared content ``c_i`` in span(e_0..e_3); ``a`` adds private noise of varying size in span(e_4..e_7), ``b`` in
    span(e_8..e_11): principal angles 0 (x4) and 90 (x4); projecting onto the shared space leaves ``normalize(c_i)``
    on both sides."""
    rng = np.random.default_rng(seed)
    c = np.zeros((n, 16))
    c[:, :4] = rng.standard_normal((n, 4))
    a, b = c.copy(), c.copy()
    a[:, 4:8] = rng.standard_normal((n, 4)) * rng.uniform(0, 3, (n, 1))
    b[:, 8:12] = rng.standard_normal((n, 4)) * rng.uniform(0, 3, (n, 1))
    rotate = random_orthogonal(16, 1)  # the same geometry for every seed
    return unit_rows(a) @ rotate, unit_rows(b) @ rotate


def test_shared_space_projection_restores_retrieval_hurt_by_private_directions():
    a, b = private_noise_pairs(400, seed=0)
    ref_a, ref_b = private_noise_pairs(1000, seed=50)
    ref_b = ref_b[np.random.default_rng(0).permutation(len(ref_b))]  # the subspaces need no pairing
    m = modality_gap(split_of({"a": a, "b": b}, reference={"a": ref_a, "b": ref_b}))
    assert m["modality_gap/a-b/angle_min_deg"] == pytest.approx(0.0, abs=0.5)
    assert m["modality_gap/a-b/angle_max_deg"] == pytest.approx(90.0, abs=0.5)
    assert m["modality_gap/a-b/shared_dims"] == 4 and m["modality_gap/a-b/shared_fit_on_test"] == 0
    # measured: R@1 before 0.203 / 0.195, after projection 1.000 / 1.000; over 5 seeds before 0.18-0.20
    for q, g in [("a", "b"), ("b", "a")]:
        assert m[f"modality_gap/{q}->{g}/R@1"] < 0.5
        assert m[f"modality_gap/{q}->{g}/R@1_shared"] == 1.0
    # top-r instead of a threshold
    m = modality_gap(split_of({"a": a, "b": b}), ModalityGapConfig(shared_rank=2))
    assert m["modality_gap/a-b/shared_dims"] == 2


def test_summaries_split_trained_and_emergent_pairs():
    a, b = hyperplane_pair([20.0, 20.0])
    c = unit_rows(np.random.default_rng(0).standard_normal(a.shape))
    m = modality_gap(split_of({"a": a, "b": b, "c": c}, trained=[("a", "b"), ("a", "c")]))
    assert m["modality_gap/emergent/gap"] == m["modality_gap/b-c/gap"]
    assert m["modality_gap/trained/gap"] == pytest.approx((m["modality_gap/a-b/gap"] + m["modality_gap/a-c/gap"]) / 2)
    assert m["modality_gap/emergent/R@1"] == pytest.approx(
        (m["modality_gap/b->c/R@1"] + m["modality_gap/c->b/R@1"]) / 2)


def test_in_a_tiny_run_next_to_retrieval(tmp_path, capsys):
    evaluators = 'evaluators=[{name="retrieval"},{name="modality_gap"}]'
    args = ["run", str(RECIPES / "imagebind.toml"), "--out", str(tmp_path / "run"), "--set", evaluators]
    for override in TINY:
        args += ["--set", override]
    assert main(args) == 0
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    for m in ("image", "text", "audio"):
        assert 1 <= metrics[f"modality_gap/{m}/k99"] <= 64 and metrics[f"modality_gap/{m}/erank"] >= 1
    for pair in ("image-text", "image-audio", "text-audio"):
        assert metrics[f"modality_gap/{pair}/gap"] > 0
        assert metrics[f"modality_gap/{pair}/rotation_fit_on_test"] == 0  # fitted on the reference split
    for q, g in [("image", "text"), ("text", "image"), ("text", "audio"), ("audio", "text")]:
        # the evaluator's own "before" Recall@1 is the retrieval evaluator's, to the bit
        assert metrics[f"modality_gap/{q}->{g}/R@1"] == metrics[f"retrieval/{q}->{g}/R@1"]
        assert f"modality_gap/{q}->{g}/R@1_rotated" in metrics
    assert "modality_gap/emergent/R@1_rotated" in metrics and "modality_gap/trained/gap" in metrics


def test_bad_setting_is_a_recipe_error(capsys):
    status = main(["validate", str(RECIPES / "imagebind.toml"), "--set",
                   'evaluators=[{name="modality_gap", energy=1.5}]'])
    assert status == 2
    assert "energy" in capsys.readouterr().err
