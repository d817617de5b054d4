"""The ``siglip`` loss: a hand computation, tiled == plain (values and gradients, with labels and invalid
candidates), the generic ``mmcore.blockwise_rows`` reproducing ``mmcore.info_nce_rows``, and training runs."""

import math
import subprocess
import sys

import mmcore
import pytest
import torch
from mmcore_siglip.plugin import SigLIPConfig, build_siglip


def make_loss(dtype=torch.float64, **settings):
    return build_siglip(SigLIPConfig(**settings), None).to(dtype)


def make_case(n, big_n, d=5, seed=0, dtype=torch.float64):
    """Unit-norm query ``[n, d]`` and candidates ``[N, d]``, distinct targets (if n <= N), 3 labels and 2 invalid
    candidates."""
    gen = torch.Generator().manual_seed(seed)
    query = torch.nn.functional.normalize(torch.randn(n, d, generator=gen, dtype=dtype), dim=1)
    candidates = torch.nn.functional.normalize(torch.randn(big_n, d, generator=gen, dtype=dtype), dim=1)
    targets = torch.randperm(big_n, generator=gen)[:n] if n <= big_n else torch.randint(0, big_n, (n,), generator=gen)
    labels = torch.randint(0, 3, (big_n,), generator=gen)
    valid = torch.ones(big_n, dtype=torch.bool)
    valid[torch.randperm(big_n, generator=gen)[:2]] = False
    return query, candidates, targets, labels, valid


def rows_and_grads(loss, query, candidates, targets, labels=None, valid=None, direction="forward"):
    """Row losses and the gradients of their sum w.r.t. query, candidates, log scale and bias."""
    query = query.clone().requires_grad_(True)
    candidates = candidates.clone().requires_grad_(True)
    rows = loss.rows(query, candidates, targets, labels, valid, direction, term="a-b")
    loss.zero_grad()
    rows.sum().backward()
    grads = [query.grad, candidates.grad, loss.log_logit_scale.grad, loss.logit_bias.grad]
    return rows.detach(), grads


def test_rows_equal_the_per_pair_formula_written_out_by_hand():
    t, b = 2.0, -1.0
    q = [[1.0, 0.0], [0.6, 0.8], [0.0, 1.0]]
    c = [[0.8, 0.6], [0.0, 1.0], [-1.0, 0.0]]
    valid = [True, False, True]
    labels = [0, 1, 0]

    def expected(i, use_valid=False, use_labels=False):
        total = 0.0
        for j in range(3):
            if (use_valid and not valid[j]) or (use_labels and labels[j] != labels[i]):
                continue
            z = 1.0 if i == j else -1.0
            logit = t * (q[i][0] * c[j][0] + q[i][1] * c[j][1]) + b
            total += -math.log(1.0 / (1.0 + math.exp(-z * logit)))
        return total

    loss = make_loss(scale_init=t, bias_init=b, learnable=False)
    args = torch.tensor(q, dtype=torch.float64), torch.tensor(c, dtype=torch.float64), torch.arange(3)
    assert loss.logit_scale.item() == pytest.approx(t, rel=1e-7)  # t = exp(fp32 log t)
    torch.testing.assert_close(loss.rows(*args), torch.tensor([expected(i) for i in range(3)], dtype=torch.float64))
    masked = loss.rows(*args, torch.tensor(labels), torch.tensor(valid))
    torch.testing.assert_close(masked, torch.tensor([expected(i, True, True) for i in range(3)],
                                                    dtype=torch.float64))


def test_defaults_are_the_papers_scale_10_and_bias_minus_10_both_learnable():
    loss = make_loss(torch.float32)
    assert loss.logit_scale.item() == pytest.approx(10.0, rel=1e-6)
    assert loss.logit_bias.item() == -10.0
    assert {name for name, _ in loss.named_parameters()} == {"log_logit_scale", "logit_bias"}
    assert not list(make_loss(torch.float32, learnable=False).parameters())


def test_a_scale_above_the_clamp_is_a_config_error():
    with pytest.raises(mmcore.ConfigError) as info:
        make_loss(scale_init=200.0)
    assert info.value.field == "scale_init"
    with pytest.raises(ValueError):
        SigLIPConfig(tile_size=-1)


@pytest.mark.parametrize("n,big_n", [(7, 7), (5, 9), (9, 4)])
@pytest.mark.parametrize("tile", [2, 3])
@pytest.mark.parametrize("masks", ["none", "valid", "labels+valid"])
@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-10), (torch.float32, 1e-5)])
def test_tiled_rows_and_gradients_equal_the_plain_ones(n, big_n, tile, masks, dtype, tol):
    query, candidates, targets, labels, valid = make_case(n, big_n, dtype=dtype)
    labels = labels if masks == "labels+valid" else None
    valid = None if masks == "none" else valid
    plain_rows, plain_grads = rows_and_grads(make_loss(dtype), query, candidates, targets, labels, valid)
    tiled_rows, tiled_grads = rows_and_grads(make_loss(dtype, tile_size=tile), query, candidates, targets,
                                             labels, valid)
    torch.testing.assert_close(tiled_rows, plain_rows, rtol=tol, atol=tol)
    for name, tiled, plain in zip(("query", "candidates", "scale", "bias"), tiled_grads, plain_grads):
        torch.testing.assert_close(tiled, plain, rtol=tol, atol=tol, msg=name)


def test_invalid_and_other_modality_candidates_change_nothing():
    query, candidates, targets, labels, valid = make_case(6, 8)
    loss = make_loss(tile_size=3)
    base, _ = rows_and_grads(loss, query, candidates, targets, labels, valid)
    moved = candidates.clone()
    excluded = ~valid | (labels != labels[targets[0]])
    excluded[targets[0]] = False
    moved[excluded] = torch.randn(int(excluded.sum()), candidates.shape[1], dtype=candidates.dtype)
    torch.testing.assert_close(loss.rows(query[:1], moved, targets[:1], labels, valid), base[:1])


def test_both_directions_of_a_symmetric_term_sum_the_same_pairs():
    query, key, _, labels, valid = make_case(8, 8)
    loss = make_loss()
    targets = torch.arange(8)
    forward = loss.rows(query, key, targets, labels, valid, "forward")
    reverse = loss.rows(key, query, targets, labels, valid, "reverse")
    torch.testing.assert_close(forward[valid].sum(), reverse[valid].sum())


def test_tiled_backward_keeps_no_n_by_n_tensor():
    n, big_n, d, tile = 64, 48, 4, 8
    query, candidates, targets, labels, valid = make_case(n, big_n, d=d, dtype=torch.float32)
    for tile_size, expect_big in [(0, True), (tile, False)]:
        loss = make_loss(torch.float32, tile_size=tile_size)
        sizes = []  # numel of every tensor the forward saves for backward outside a checkpoint

        def pack(tensor, sizes=sizes):
            sizes.append(tensor.numel())
            return tensor

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
            rows = loss.rows(query.requires_grad_(), candidates.requires_grad_(), targets, labels, valid)
        assert (max(sizes) >= n * big_n) == expect_big, (tile_size, max(sizes))
        rows.sum().backward()


def _info_nce_block(scale):
    def block(scores, positive, allowed):
        logits = scores * scale
        if allowed is not None:
            logits = logits.masked_fill(~allowed, mmcore.MASKED_LOGIT)
        return torch.logsumexp(logits, dim=1)

    return block


@pytest.mark.parametrize("tile", [0, 2, 3, 16])
@pytest.mark.parametrize("with_labels", [False, True])
def test_blockwise_logsumexp_reproduces_info_nce_rows(tile, with_labels):
    query, candidates, targets, labels, valid = make_case(7, 9)
    labels = labels if with_labels else None
    keep = valid[targets]  # rows whose own positive is invalid are dropped by the core

    def run(generic):
        q, c = query.clone().requires_grad_(True), candidates.clone().requires_grad_(True)
        log_scale = torch.tensor(math.log(1 / 0.07), dtype=torch.float64, requires_grad=True)
        scale = log_scale.exp()
        if generic:
            positive = scale * (q * c[targets]).sum(1)
            rows = mmcore.blockwise_rows(_info_nce_block(scale), q, c, targets, labels, valid, tile_size=tile,
                                         reduce="logsumexp") - positive
        else:
            rows = mmcore.info_nce_rows(q, c, targets, scale, labels, valid)
        rows[keep].sum().backward()
        return rows[keep].detach(), q.grad, c.grad, log_scale.grad

    for generic, reference in zip(run(True), run(False)):
        torch.testing.assert_close(generic, reference, rtol=1e-10, atol=1e-10)


def test_blockwise_rows_rejects_an_unknown_reduction():
    query, candidates, targets, _, _ = make_case(3, 3)
    with pytest.raises(ValueError, match="reduce"):
        mmcore.blockwise_rows(lambda s, p, a: s.sum(1), query, candidates, targets, reduce="mean")


def test_importing_the_plugin_does_not_import_torch():
    code = "import sys, mmcore_siglip.plugin; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_siglip_trains_and_the_tiled_loss_trains_the_same_model(tmp_path):
    run_recipe, tiny_recipe = mmcore.testing.run_recipe, mmcore.testing.tiny_recipe
    plain = run_recipe(tiny_recipe(loss={"name": "siglip"}), tmp_path / "plain")
    # chance is 1/256; measured 0.033 (the built-in infonce: 0.049 on the same 16 steps)
    assert plain["retrieval/trained/R@1"] > 5 / 256
    tiled = run_recipe(tiny_recipe(loss={"name": "siglip", "tile_size": 32}), tmp_path / "tiled")
    assert set(tiled) == set(plain)
    for key in plain:  # fp32 rounding of the blocked sums moves a few near-tied ranks, never a recall
        tolerance = 0.1 if key.endswith("mean_rank") else 1e-4
        assert tiled[key] == pytest.approx(plain[key], abs=tolerance), key
