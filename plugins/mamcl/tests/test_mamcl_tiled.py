"""MAMCL's ``tile_size``: the tiled loss equals the plain one, values and gradients, with modality labels and
invalid candidates, for both ``mask_reverse`` settings and both directions. In fp32: the tiled log-sum-exp
accumulates in fp32 whatever the input dtype."""

import pytest
import torch
from mmcore_mamcl.loss import MAMCLConfig, build_mamcl


def make_case(n=7, big_n=9, d=5, seed=0):
    gen = torch.Generator().manual_seed(seed)
    query = torch.nn.functional.normalize(torch.randn(n, d, generator=gen, dtype=torch.float32), dim=1)
    candidates = torch.nn.functional.normalize(torch.randn(big_n, d, generator=gen, dtype=torch.float32), dim=1)
    targets = torch.randperm(big_n, generator=gen)[:n]
    labels = torch.randint(0, 3, (big_n,), generator=gen)
    valid = torch.ones(big_n, dtype=torch.bool)
    valid[torch.randperm(big_n, generator=gen)[:2]] = False
    return query, candidates, targets, labels, valid


def rows_and_grads(loss, query, candidates, targets, labels, valid, direction):
    """Rows whose positive is valid (the core drops the others) and the gradients of their sum."""
    query = query.clone().requires_grad_(True)
    candidates = candidates.clone().requires_grad_(True)
    keep = valid[targets]
    rows = loss.rows(query, candidates, targets, labels, valid, direction)[keep]
    rows.sum().backward()
    return rows.detach(), query.grad, candidates.grad, loss.log_logit_scale.grad


def test_tile_size_defaults_to_the_plain_loss_and_rejects_negatives():
    assert MAMCLConfig().tile_size == 0
    with pytest.raises(ValueError):
        MAMCLConfig(tile_size=-1)


@pytest.mark.parametrize("shape", [(7, 9), (8, 8)])
@pytest.mark.parametrize("tile", [2, 3])
@pytest.mark.parametrize("mask_reverse", [True, False])
@pytest.mark.parametrize("direction", ["forward", "reverse"])
def test_tiled_mamcl_equals_plain_mamcl(shape, tile, mask_reverse, direction):
    case = make_case(*shape)

    def run(tile_size):
        config = MAMCLConfig(temperature=0.05, learnable=True, mask_reverse=mask_reverse, tile_size=tile_size)
        return rows_and_grads(build_mamcl(config, None), *case, direction)

    for name, tiled, plain in zip(("rows", "query", "candidates", "scale"), run(tile), run(0)):
        scale = plain.abs().max().item()  # fp32: errors relative to the largest entry
        torch.testing.assert_close(tiled, plain, rtol=0.0, atol=1e-5 * scale, msg=name)
