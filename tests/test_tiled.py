"""The tiled InfoNCE equals the plain one: values and gradients (q, candidates, temperature), with masks."""

import pytest
import torch

import mmcore


def _case(n=37, big_n=53, d=16, seed=0):
    gen = torch.Generator().manual_seed(seed)
    q = torch.nn.functional.normalize(torch.randn(n, d, generator=gen), dim=1)
    c = torch.nn.functional.normalize(torch.randn(big_n, d, generator=gen), dim=1)
    targets = torch.randperm(big_n, generator=gen)[:n]
    labels = torch.randint(0, 3, (big_n,), generator=gen)
    valid = torch.rand(big_n, generator=gen) > 0.2
    return q, c, targets, labels, valid


def _grads(tile, q, c, targets, labels, valid, weights):
    q = q.clone().requires_grad_(True)
    c = c.clone().requires_grad_(True)
    log_scale = torch.tensor(2.5, requires_grad=True)
    rows = mmcore.info_nce_rows(q, c, targets, log_scale.exp(), labels, valid, tile_size=tile)
    (rows * weights).sum().backward()
    return rows.detach(), q.grad, c.grad, log_scale.grad


@pytest.mark.parametrize("tile", [1, 8, 16, 64])
@pytest.mark.parametrize("masked", [False, True])
def test_tiled_equals_plain_values_and_gradients(tile, masked):
    q, c, targets, labels, valid = _case()
    if not masked:
        labels = valid = None
    weights = torch.linspace(0.5, 1.5, len(q))  # uneven incoming gradients per row
    keep = torch.ones(len(q), dtype=torch.bool) if valid is None else valid[targets]
    weights = weights * keep  # rows whose own positive is invalid are meaningless: the runner drops them too
    plain = _grads(0, q, c, targets, labels, valid, weights)
    tiled = _grads(tile, q, c, targets, labels, valid, weights)
    plain, tiled = (plain[0][keep], *plain[1:]), (tiled[0][keep], *tiled[1:])
    for a, b, name in zip(plain, tiled, ("rows", "dq", "dc", "dscale")):
        # fp32, 1e-5 relative to the tensor's largest entry (tile=1 sums 53 blocks one by one)
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-5 * a.abs().max().item(), msg=name)


def test_tiled_loss_is_selectable_in_a_recipe_and_matches_plain_in_the_runner():
    from mmcore.builtins.losses import InfoNCEConfig, build_infonce
    from mmcore.train.objective import term_loss

    q, c, _, labels, valid = _case(n=40, big_n=40)
    term = mmcore.AlignmentTerm("t", q, c, valid, labels=labels)
    plain = term_loss(build_infonce(InfoNCEConfig(), None), term)
    tiled = term_loss(build_infonce(InfoNCEConfig(tile_size=8), None), term)
    torch.testing.assert_close(tiled, plain, rtol=1e-5, atol=1e-6)


def _pair_grads(tile, q, k, labels, valid, weights_fwd, weights_back, pair_rows=None):
    q = q.clone().requires_grad_(True)
    k = k.clone().requires_grad_(True)
    log_scale = torch.tensor(2.5, requires_grad=True)
    if pair_rows is None:
        rows, back = mmcore.info_nce_pair_rows(q, k, log_scale.exp(), labels, valid, tile_size=tile)
    else:
        rows, back = pair_rows(q, k, log_scale.exp(), labels, valid)
    ((rows * weights_fwd).sum() + (back * weights_back).sum()).backward()
    return rows.detach(), back.detach(), q.grad, k.grad, log_scale.grad


@pytest.mark.parametrize("tile", [1, 7, 16, 64])
@pytest.mark.parametrize("masked", [False, True])
def test_tiled_pair_sweep_equals_plain_pair_values_and_gradients(tile, masked):
    """Both directions of a symmetric term from one tiled sweep (rows and columns of the same blocks)."""
    q, k, _, labels, valid = _case(n=45, big_n=45, seed=3)
    if not masked:
        labels = valid = None
    keep = torch.ones(len(q), dtype=torch.bool) if valid is None else valid
    weights_fwd = torch.linspace(0.5, 1.5, len(q)) * keep
    weights_back = torch.linspace(2.0, 0.1, len(q)) * keep
    plain = _pair_grads(0, q, k, labels, valid, weights_fwd, weights_back)
    tiled = _pair_grads(tile, q, k, labels, valid, weights_fwd, weights_back)
    plain = (plain[0][keep], plain[1][keep], *plain[2:])
    tiled = (tiled[0][keep], tiled[1][keep], *tiled[2:])
    for a, b, name in zip(plain, tiled, ("forward rows", "reverse rows", "dq", "dk", "dscale")):
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-5 * a.abs().max().item(), msg=name)


def test_tiled_pair_sweep_hand_computed():
    """A 2x2 case by hand: row i's log-sum-exp is log(e^{s q_i.k_0} + e^{s q_i.k_1}), column j's over i."""
    q = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    k = torch.tensor([[0.6, 0.8], [1.0, 0.0]])
    s = torch.tensor(2.0)
    from mmcore.contrastive.tiled import tiled_pair_logsumexp

    rows, cols = tiled_pair_logsumexp(q, k, s, tile=1)
    import math

    e = math.exp
    expect_rows = [math.log(e(2 * 0.6) + e(2 * 1.0)), math.log(e(2 * 0.8) + e(0.0))]
    expect_cols = [math.log(e(2 * 0.6) + e(2 * 0.8)), math.log(e(2 * 1.0) + e(0.0))]
    torch.testing.assert_close(rows, torch.tensor(expect_rows))
    torch.testing.assert_close(cols, torch.tensor(expect_cols))


@pytest.mark.parametrize("form", ["two products", "transposed copy"])
@pytest.mark.parametrize("masked", [False, True])
def test_the_cuda_forms_of_the_pair_rows_equal_the_cpu_form(masked, form):
    """The CUDA paths of info_nce_pair_rows (bf16/fp16: a second product; fp32: a transposed copy, both instead of
    a column softmax), run on the CPU in fp32: same values and gradients."""
    from mmcore.contrastive.infonce import _column_bias, _pair_rows_by_one_product, _pair_rows_by_two_products

    q, k, _, labels, valid = _case(n=45, big_n=45, seed=5)
    if not masked:
        labels = valid = None
    keep = torch.ones(len(q), dtype=torch.bool) if valid is None else valid
    weights_fwd, weights_back = torch.linspace(0.5, 1.5, len(q)) * keep, torch.linspace(2.0, 0.1, len(q)) * keep
    plain = _pair_grads(0, q, k, labels, valid, weights_fwd, weights_back)

    def cuda_form(query, key, scale, labels, valid):
        if form == "two products":
            return _pair_rows_by_two_products(query, key, scale, _column_bias(valid), labels, labels)
        return _pair_rows_by_one_product(query, key, scale, _column_bias(valid), labels, labels, transpose=True)

    other = _pair_grads(0, q, k, labels, valid, weights_fwd, weights_back, pair_rows=cuda_form)
    plain, other = (plain[0][keep], plain[1][keep], *plain[2:]), (other[0][keep], other[1][keep], *other[2:])
    for a, b, name in zip(plain, other, ("forward rows", "reverse rows", "dq", "dk", "dscale")):
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-5 * a.abs().max().item(), msg=name)
