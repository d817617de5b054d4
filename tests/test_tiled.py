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
    from mmcore.runner import term_loss

    q, c, _, labels, valid = _case(n=40, big_n=40)
    term = mmcore.AlignmentTerm("t", q, c, valid, labels=labels)
    plain = term_loss(build_infonce(InfoNCEConfig(), None), term)
    tiled = term_loss(build_infonce(InfoNCEConfig(tile_size=8), None), term)
    torch.testing.assert_close(tiled, plain, rtol=1e-5, atol=1e-6)
