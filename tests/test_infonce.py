"""InfoNCE against a hand computation: values and gradients, plain and masked."""

import math

import pytest
import torch

import mmcore


def hand_rows(q, c, targets, scale, allowed=None):
    """Row losses computed one scalar at a time with math.exp / math.log."""
    out = []
    for i in range(len(q)):
        logits = [scale * sum(q[i][k] * c[j][k] for k in range(len(q[i]))) for j in range(len(c))]
        keep = [j for j in range(len(c)) if allowed is None or allowed[i][j] or j == targets[i]]
        denominator = sum(math.exp(logits[j]) for j in keep)
        out.append(-math.log(math.exp(logits[targets[i]]) / denominator))
    return out


Q = [[1.0, 0.0], [0.6, 0.8], [0.0, 1.0]]
K = [[0.8, 0.6], [0.0, 1.0], [-0.6, 0.8]]


def test_rows_match_hand_computation():
    q, k = torch.tensor(Q), torch.tensor(K)
    rows = mmcore.info_nce_rows(q, k, torch.arange(3), torch.tensor(2.0))
    assert rows.tolist() == pytest.approx(hand_rows(Q, K, [0, 1, 2], 2.0), rel=1e-5)


def test_gradient_matches_hand_derivative():
    # d/dq_i of -log softmax(s q_i.k)[i] = s * (sum_j p_ij k_j - k_i)
    q = torch.tensor(Q, requires_grad=True)
    k = torch.tensor(K)
    s = 2.0
    mmcore.info_nce_rows(q, k, torch.arange(3), torch.tensor(s)).sum().backward()
    for i in range(3):
        logits = [s * sum(Q[i][d] * K[j][d] for d in range(2)) for j in range(3)]
        z = sum(math.exp(v) for v in logits)
        p = [math.exp(v) / z for v in logits]
        expected = [s * (sum(p[j] * K[j][d] for j in range(3)) - K[i][d]) for d in range(2)]
        assert q.grad[i].tolist() == pytest.approx(expected, rel=1e-5, abs=1e-7)


def test_candidate_labels_restrict_negatives_like_hand_mask():
    q, k = torch.tensor(Q), torch.tensor(K)
    labels = torch.tensor([0, 1, 0])  # candidate 1 has another modality
    rows = mmcore.info_nce_rows(q, k, torch.arange(3), torch.tensor(3.0), candidate_labels=labels)
    allowed = [[int(labels[j] == labels[i]) for j in range(3)] for i in range(3)]
    assert rows.tolist() == pytest.approx(hand_rows(Q, K, [0, 1, 2], 3.0, allowed), rel=1e-5)


def test_invalid_candidates_are_never_negatives_and_rows_stay_finite():
    q, k = torch.tensor(Q, requires_grad=True), torch.tensor(K)
    valid = torch.tensor([True, False, True])
    rows = mmcore.info_nce_rows(q, k, torch.arange(3), torch.tensor(3.0), candidate_valid=valid)
    allowed = [[bool(valid[j]) for j in range(3)] for _ in range(3)]
    expected = hand_rows(Q, K, [0, 1, 2], 3.0, allowed)
    assert [rows[0].item(), rows[2].item()] == pytest.approx([expected[0], expected[2]], rel=1e-5)
    # row 1's own positive is invalid: its value is meaningless but finite, and dropping it leaves no NaN
    assert torch.isfinite(rows).all()
    torch.where(valid, rows, 0.0).sum().backward()
    assert torch.isfinite(q.grad).all() and q.grad[1].abs().sum() == 0


def test_pair_rows_equal_two_row_calls_with_masks_and_labels():
    from mmcore.contrastive.infonce import info_nce_pair_rows

    gen = torch.Generator().manual_seed(0)
    q = torch.nn.functional.normalize(torch.randn(9, 4, generator=gen), dim=1)
    k = torch.nn.functional.normalize(torch.randn(9, 4, generator=gen), dim=1)
    labels = torch.tensor([0, 1, 0, 2, 1, 0, 2, 2, 1])
    valid = torch.tensor([True, True, False, True, True, True, False, True, True])
    targets = torch.arange(9)
    for lab in (None, labels):
        forward, reverse = info_nce_pair_rows(q, k, torch.tensor(5.0), lab, valid)
        torch.testing.assert_close(forward, mmcore.info_nce_rows(q, k, targets, torch.tensor(5.0), lab, valid))
        torch.testing.assert_close(reverse, mmcore.info_nce_rows(k, q, targets, torch.tensor(5.0), lab, valid))


def test_symmetric_term_loss_is_the_mean_of_both_directions_over_valid_rows():
    from mmcore.builtins.losses import InfoNCEConfig, build_infonce
    from mmcore.train.objective import term_loss

    loss = build_infonce(InfoNCEConfig(temperature=0.5, learnable=False), None)
    q, k = torch.tensor(Q), torch.tensor(K)
    mask = torch.tensor([True, True, False])
    value = term_loss(loss, mmcore.AlignmentTerm("t", q, k, mask))
    allowed = [[j != 2 for j in range(3)] for _ in range(3)]
    forward = hand_rows(Q, K, [0, 1, 2], 2.0, allowed)[:2]
    backward = hand_rows(K, Q, [0, 1, 2], 2.0, allowed)[:2]
    assert value.item() == pytest.approx((sum(forward) + sum(backward)) / 4, rel=1e-5)


def test_temperature_is_learnable_and_clamped():
    from mmcore.builtins.losses import InfoNCEConfig, build_infonce

    loss = build_infonce(InfoNCEConfig(temperature=0.001, max_logit_scale=100.0), None)
    assert loss.log_logit_scale.requires_grad
    assert loss.logit_scale.item() == pytest.approx(100.0)
    fixed = build_infonce(InfoNCEConfig(temperature=0.07, learnable=False), None)
    assert not any(p.requires_grad for p in fixed.parameters())
    assert fixed.logit_scale.item() == pytest.approx(1 / 0.07, rel=1e-5)


def test_per_term_temperatures_apply_to_their_term_only_hand_computed():
    """ImageBind fixes a temperature per modality pair: term 'a-b' uses its own (0.25, scale 4), any other term
    the shared one (0.5, scale 2); both paths of the runner (one process: pair_rows; rows) agree with the hand."""
    from mmcore.builtins.losses import InfoNCEConfig, TermTemperature, build_infonce
    from mmcore.train.objective import term_loss

    loss = build_infonce(InfoNCEConfig(temperature=0.5, per_term={"a-b": TermTemperature(0.25)}), None)
    q, k, mask = torch.tensor(Q), torch.tensor(K), torch.ones(3, dtype=torch.bool)
    for name, scale in (("a-b", 4.0), ("c-b", 2.0)):
        expected = (sum(hand_rows(Q, K, [0, 1, 2], scale)) + sum(hand_rows(K, Q, [0, 1, 2], scale))) / 6
        assert term_loss(loss, mmcore.AlignmentTerm(name, q, k, mask)).item() == pytest.approx(expected, rel=1e-5)
        one_way = term_loss(loss, mmcore.AlignmentTerm(name, q, k, mask, symmetric=False))  # the rows() path
        assert one_way.item() == pytest.approx(sum(hand_rows(Q, K, [0, 1, 2], scale)) / 3, rel=1e-5)
    assert not loss.per_term["a-b"].log_logit_scale.requires_grad  # per-term ones are fixed unless learnable


def test_per_term_temperatures_train_as_configured(tmp_path):
    """Fixed per-term temperatures end where they started; a learnable one moves; the shared one, used by no term
    here, stays; each is logged as train/temperature/<term>."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    import mmcore.testing
    from mmcore.recipe import structure_recipe
    from mmcore.registry import get_registry
    from mmcore.train.build import assemble
    from mmcore.runs.directory import make_run_dir
    from mmcore.runs.train import train

    raw = mmcore.testing.tiny_recipe(anchor={"name": "imagebind", "anchor": "image"}, loss={
        "name": "infonce", "temperature": 0.07,
        "per_term": {"audio-image": {"temperature": 0.05}, "text-image": {"temperature": 0.1, "learnable": True}}})
    raw["trainer"]["max_epochs"] = 2
    recipe = structure_recipe(raw, get_registry(), "<test>")
    module, data = assemble(recipe)
    train(recipe, [], make_run_dir(recipe, tmp_path / "run"), module_data=(module, data))
    per_term = module.loss.per_term
    assert per_term["audio-image"].logit_scale.item() == pytest.approx(20.0, rel=1e-6)
    assert per_term["text-image"].logit_scale.item() != pytest.approx(10.0, rel=1e-3)
    assert module.loss.logit_scale.item() == pytest.approx(1 / 0.07, rel=1e-6)
    events = EventAccumulator(str(tmp_path / "run" / "tb")).Reload()
    assert {"train/temperature/audio-image", "train/temperature/text-image"} <= set(events.Tags()["scalars"])
