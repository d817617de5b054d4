"""MAMCL (plugins/mamcl): the masked loss against a hand computation, its reduction to InfoNCE, the mixed-target
task's components, and the measured behaviour (per-target-modality pools) against plain InfoNCE."""

import math
import statistics
from pathlib import Path

import mmcore
import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[3]  # the repository; its recipes/ are first-party
RECIPES = ROOT / "recipes"

# ----------------------------------------------------------------------------------------------- hand math


def hand_rows(q, c, targets, scale, labels=None, valid=None):
    """Row losses one scalar at a time: row i keeps candidate j iff j is its positive, or j is valid and (no labels
    or labels[j] == labels[targets[i]])."""
    out = []
    for i in range(len(q)):
        t = targets[i]
        logits = [scale * sum(q[i][k] * c[j][k] for k in range(len(q[i]))) for j in range(len(c))]
        keep = [j for j in range(len(c)) if j == t or ((valid is None or valid[j])
                                                       and (labels is None or labels[j] == labels[t]))]
        out.append(-math.log(math.exp(logits[t]) / sum(math.exp(logits[j]) for j in keep)))
    return out


def _unit(rows):
    return [[x / math.sqrt(sum(v * v for v in r)) for x in r] for r in rows]


Q = _unit([[1.0, 0.2, 0.0], [0.3, 0.9, 0.1], [0.0, 0.4, 1.0], [0.7, 0.7, 0.2], [0.2, 0.1, 0.9]])
K = _unit([[0.9, 0.1, 0.3], [0.5, 0.8, 0.0], [0.1, 0.6, 0.8], [0.6, 0.5, 0.5], [0.0, 0.3, 1.0]])
LABELS = [0, 1, 0, 2, 1]  # pair i's modality id (the modality of its key)
T = 0.5


def build(name, **settings):
    component = mmcore.get_registry().get("losses", name)
    return component.build(component.config(**settings), mmcore.LossContext(3))


@pytest.mark.parametrize("mask_reverse", [True, False])
def test_both_directions_match_a_brute_force_masked_softmax(mask_reverse):
    loss = build("mamcl", temperature=T, mask_reverse=mask_reverse)
    q, k, targets = torch.tensor(Q), torch.tensor(K), torch.arange(5)
    labels = torch.tensor(LABELS)
    forward = loss.rows(q, k, targets, labels, None, "forward")
    assert forward.tolist() == pytest.approx(hand_rows(Q, K, range(5), 1 / T, LABELS), rel=1e-5)
    reverse = loss.rows(k, q, targets, labels, None, "reverse")
    expected = hand_rows(K, Q, range(5), 1 / T, LABELS if mask_reverse else None)
    assert reverse.tolist() == pytest.approx(expected, rel=1e-5)
    # the mask matters on this example: forward differs from the unmasked loss
    assert forward.tolist() != pytest.approx(hand_rows(Q, K, range(5), 1 / T), rel=1e-3)


def test_invalid_candidates_and_the_symmetric_term_match_the_hand_computation():
    from mmcore.train.objective import term_loss

    loss = build("mamcl", temperature=T)
    mask = [True, True, True, False, True]
    term = mmcore.AlignmentTerm("t", torch.tensor(Q), torch.tensor(K), torch.tensor(mask), labels=torch.tensor(LABELS))
    rows = [i for i in range(5) if mask[i]]
    forward = hand_rows(Q, K, range(5), 1 / T, LABELS, mask)
    reverse = hand_rows(K, Q, range(5), 1 / T, LABELS, mask)
    expected = sum(forward[i] + reverse[i] for i in rows) / 2 / len(rows)
    assert term_loss(loss, term).item() == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("mask_reverse", [True, False])
def test_with_one_label_for_all_or_no_labels_it_is_the_builtin_infonce(mask_reverse):
    from mmcore.train.objective import term_loss

    gen = torch.Generator().manual_seed(0)
    q = torch.nn.functional.normalize(torch.randn(7, 3, generator=gen), dim=1)
    k = torch.nn.functional.normalize(torch.randn(7, 3, generator=gen), dim=1)
    mask = torch.tensor([True, True, False, True, True, True, True])
    mamcl = build("mamcl", temperature=0.03, mask_reverse=mask_reverse)
    infonce = build("infonce", temperature=0.03, learnable=False)
    for labels in (torch.full((7,), 4), None):
        grads = []
        for loss in (mamcl, infonce):
            qq, kk = q.clone().requires_grad_(), k.clone().requires_grad_()
            value = term_loss(loss, mmcore.AlignmentTerm("t", qq, kk, mask, labels=labels))
            value.backward()
            grads.append((value.item(), qq.grad, kk.grad))
        assert grads[0][0] == pytest.approx(grads[1][0], rel=1e-6)
        assert torch.allclose(grads[0][1], grads[1][1], atol=1e-6)
        assert torch.allclose(grads[0][2], grads[1][2], atol=1e-6)


def test_temperature_fixed_by_default_and_clamped_when_learnable():
    fixed = build("mamcl")
    assert fixed.logit_scale.item() == pytest.approx(1 / 0.03, rel=1e-5)
    assert not any(p.requires_grad for p in fixed.parameters())
    learnable = build("mamcl", temperature=0.001, learnable=True)
    assert learnable.log_logit_scale.requires_grad
    assert learnable.logit_scale.item() == pytest.approx(100.0)


# ------------------------------------------------------------------------------------- task components


def test_mixed_targets_rows_hold_the_query_and_exactly_one_target_and_the_test_split_every_target():
    from mmcore_mamcl.mixed_targets import MixedTargetsConfig, generate

    config = MixedTargetsConfig(train_size=30, val_size=9, test_size=12, repeats=3)
    splits = generate(config)
    inputs, present, labels = splits["train"]
    targets = torch.stack([present[t] for t in ("a", "b", "a+b")])
    assert present["query"].all() and (targets.sum(0) == 1).all()
    assert targets.sum(1).tolist() == [10, 10, 10]  # a batch mixes the three target modalities
    # repeats: rows 3k, 3k+1, 3k+2 show one item (same targets and class) through three noisy queries
    assert torch.equal(inputs["a"][0], inputs["a"][1]) and labels[0] == labels[2]
    assert not torch.equal(inputs["query"][0], inputs["query"][1])
    assert torch.equal(inputs["a+b"], torch.cat([inputs["a"], inputs["b"]], dim=1))
    test_present = splits["test"][1]
    assert all(test_present[m].all() for m in test_present)
    again = generate(config)
    assert torch.equal(again["test"][0]["query"], splits["test"][0]["query"])


def test_query_target_term_selects_the_present_target_and_labels_it():
    component = mmcore.get_registry().get("anchor_strategies", "query_target")
    context = mmcore.AnchorContext(("query", "a", "b", "a+b"), frozenset(), 2)
    strategy = component.build(component.config(), context)
    z = {m: torch.full((4, 2), float(i)) for i, m in enumerate(("query", "a", "b", "a+b"))}
    present = {"query": torch.tensor([True, True, True, False]), "a": torch.tensor([True, False, False, False]),
               "b": torch.tensor([False, True, False, True]), "a+b": torch.tensor([False, False, False, False])}
    (term,) = strategy(z, present, None).terms
    assert term.labels.tolist()[:2] == [0, 1]
    assert term.key[:, 0].tolist()[:2] == [1.0, 2.0]
    assert term.mask.tolist() == [True, True, False, False]  # row 2 has no target, row 3 no query
    assert strategy.trained_pairs({frozenset(("query", "a")), frozenset(("a", "b"))}) == {frozenset(("query", "a"))}


def test_mixed_pool_ranks_match_a_brute_force_count():
    component = mmcore.get_registry().get("evaluators", "mixed_pool")
    evaluate = component.build(component.config(ks=[1, 2]), None)
    rng = np.random.default_rng(0)
    n = 6

    def unit(x):
        return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)

    z = {m: unit(rng.normal(size=(n, 3))) for m in ("query", "a", "b")}
    present = {"query": np.ones(n, bool), "a": np.array([1, 1, 1, 1, 0, 1], bool), "b": np.ones(n, bool)}
    metrics = evaluate(mmcore.EmbeddedSplit(z=z, present=present))
    for t in ("a", "b"):
        ranks = []
        for i in range(n):
            if not present[t][i]:
                continue
            positive = z["query"][i] @ z[t][i]
            others = [z["query"][i] @ z[m][j] for m in ("a", "b") for j in range(n) if present[m][j] and j != i]
            ranks.append(1 + sum(s > positive for s in others))
        assert metrics[f"mixed_pool/query->{t}/R@1"] == pytest.approx(np.mean(np.array(ranks) <= 1))
        assert metrics[f"mixed_pool/query->{t}/R@2"] == pytest.approx(np.mean(np.array(ranks) <= 2))
    best = [max(((z["query"][i] @ z[m][j], j) for m in ("a", "b") for j in range(n) if present[m][j]))[1]
            for i in range(n)]
    assert metrics["mixed_pool/any/R@1"] == pytest.approx(np.mean(np.array(best) == np.arange(n)))
    rows = [i for i in range(n) if present["a"][i]]
    gap = [sum(z["query"][i][d] - z["a"][i][d] for i in rows) / len(rows) for d in range(3)]
    assert metrics["mixed_pool/gap/a"] == pytest.approx(math.sqrt(sum(g * g for g in gap)), rel=1e-5)


# ------------------------------------------------------------------------------------------- behaviour


def _pool_mean_r1(recipe, seed, out):
    from mmcore.testing import run_recipe_file

    overrides = [f"seed={seed}", f"dataset.seed={seed}", "trainer.max_epochs=15", "dataset.val_size=99",
                 'evaluators=[{name="retrieval", ks=[1]}]']
    metrics = run_recipe_file(RECIPES / recipe, out, overrides)
    return statistics.fmean(metrics[f"retrieval/query->{t}/R@1"] for t in ("a", "b", "a+b"))


def test_a_short_mamcl_run_retrieves_from_every_target_modalitys_own_pool(tmp_path):
    # recipes/mamcl.toml, 15 epochs instead of 40, one seed. Per-target pools: query->a, query->b, query->a+b over
    # the 1000 test items (chance 0.001). Measured with these overrides (seeds 0..4, plugins/mamcl/README.md): mean
    # R@1 of the three pools 0.180 +- 0.020. Whether MAMCL *beats* plain InfoNCE (+0.020 +- 0.004 on those seeds) is
    # a multi-seed claim: benchmarks/methods.py ("mixed target modalities") measures it with paired intervals.
    mean_r1 = _pool_mean_r1("mamcl.toml", 0, tmp_path / "mamcl")
    assert mean_r1 > 0.05  # 50x chance
