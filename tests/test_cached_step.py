"""The cached step (``trainer.embed_chunk``, GradCache) gives the whole batch's gradient: every strategy with every
loss, dropout replayed, frozen and partly frozen towers, per-term temperatures, aux losses, bf16 autocast, and
activation checkpointing; the recipe settings and what they refuse."""

import pytest
import torch

import mmcore
from mmcore.contracts import select_rows
from mmcore.recipe import RecipeError, structure_recipe
from mmcore.registry import get_registry
from mmcore.train.build import assemble

PAIRING = [["image", "text"], ["image", "audio"], ["image", "text", "audio"]]  # sparse: no row is text+audio only
STRATEGIES = {
    "pairwise": {"name": "pairwise"},
    "imagebind": {"name": "imagebind", "anchor": "image"},
    "centrobind": {"name": "centrobind"},
    "centrobind_loo": {"name": "centrobind", "leave_one_out": True, "detach_anchor": False},
    "emergentbridge": {"name": "emergentbridge", "anchor": "image", "proxy": "text", "mapper": "mlp",
                       "projection": "loss"},
}
LOSSES = {
    "infonce": {"name": "infonce"},
    "infonce_tiled": {"name": "infonce", "tile_size": 24},
    "mamcl": {"name": "mamcl", "learnable": True},
    "mamcl_tiled": {"name": "mamcl", "learnable": True, "tile_size": 24},
    "siglip": {"name": "siglip"},
    "siglip_tiled": {"name": "siglip", "tile_size": 24},
}


def build(anchor=None, loss=None, dropout=0.0, batch=100, **changes):
    """A module and one training batch of ``batch`` rows (sparse pairing), built from a tiny recipe."""
    raw = mmcore.testing.tiny_recipe(
        anchor=anchor or {"name": "pairwise"}, loss=loss or {"name": "infonce"},
        encoders={m: {"name": "mlp", "hidden": [48], "dropout": dropout} for m in ("image", "text", "audio")},
        trainer={"batch_size": batch}, **changes)
    raw["dataset"]["pairing"] = PAIRING
    return mmcore.testing.module_and_batch(raw)


def gradients(module, batch, chunk, seed=7, embed=None):
    """:func:`mmcore.testing.step_gradients`, or the step with the embeddings ``embed(module, batch)`` (a
    reference)."""
    if embed is None:
        return mmcore.testing.step_gradients(module, batch, chunk, seed)
    module.zero_grad(set_to_none=True)
    torch.manual_seed(seed)
    total = torch.stack(list(module.align(embed(module, batch), batch).values())).sum()
    total.backward()
    return total.item(), {n: p.grad.clone() for n, p in module.named_parameters() if p.grad is not None}


def chunked_with_graph(chunk):
    """Reference embeddings: each encoder run ``chunk`` rows at a time in the same order as the cached step, every
    chunk's graph kept (what the cached step must equal, dropout masks included)."""
    def embed(module, batch):
        z = {}
        for m, encoder in module.encoders.items():
            index = module.present_rows(batch.present[m], (batch.rows or {}).get(m))
            count = batch.size if index is None else int(index.numel())
            parts = [encoder(select_rows(batch.inputs[m], slice(s, s + chunk) if index is None else
                                         index[s:s + chunk])) for s in range(0, count, chunk)]
            z[m] = module.scatter_present(torch.cat(parts), batch.size, index)
        return z
    return embed


def assert_same(expected, got, tolerance=1e-5):
    (loss_a, grads_a), (loss_b, grads_b) = expected, got
    assert loss_b == pytest.approx(loss_a, rel=tolerance, abs=tolerance)
    assert set(grads_b) == set(grads_a)
    for name, g in grads_a.items():
        scale = max(g.abs().max().item(), 1e-8)
        assert (grads_b[name] - g).abs().max().item() <= tolerance * scale, name


@pytest.mark.parametrize("loss", list(LOSSES))
@pytest.mark.parametrize("anchor", list(STRATEGIES))
def test_the_cached_step_gives_the_whole_batch_gradient_for_every_strategy_and_loss(anchor, loss):
    module, batch = build(STRATEGIES[anchor], LOSSES[loss])
    plain = gradients(module, batch, 0)
    # the strategy's and the loss's own parameters (mapper, temperatures, siglip's bias) get gradients too
    assert any(not n.startswith("encoders.") for n in plain[1]) or anchor != "emergentbridge"
    for chunk in (7, 32, 1000):
        assert_same(plain, gradients(module, batch, chunk))


def test_dropout_is_replayed_chunk_by_chunk():
    module, batch = build(STRATEGIES["imagebind"], dropout=0.3)
    # one chunk holding every row draws the masks in the plain step's order: the very same gradient
    assert_same(gradients(module, batch, 0), gradients(module, batch, 1000))
    # smaller chunks draw their masks chunk by chunk; the replay must reuse exactly those
    for chunk in (9, 40):
        assert_same(gradients(module, batch, 0, embed=chunked_with_graph(chunk)), gradients(module, batch, chunk))
    # and the masks are really random (otherwise the checks above say nothing)
    assert gradients(module, batch, 0, seed=1)[0] != gradients(module, batch, 0, seed=2)[0]


def test_the_rng_goes_on_as_after_the_plain_step():
    module, batch = build(dropout=0.3)
    gradients(module, batch, 0, seed=3)
    after_plain = torch.rand(3)
    gradients(module, batch, 16, seed=3)
    assert torch.equal(torch.rand(3), after_plain)


def test_frozen_and_partly_frozen_towers_and_per_term_temperatures():
    loss = {"name": "infonce", "per_term": {"audio-image": {"temperature": 0.05},
                                            "text-image": {"temperature": 0.1, "learnable": True}}}
    module, batch = build(STRATEGIES["imagebind"], loss)
    module.encoders["image"].requires_grad_(False)  # a frozen tower
    module.encoders["text"][0].requires_grad_(False)  # an adapter-style tower: only its later layers train
    plain = gradients(module, batch, 0)
    assert not any(n.startswith("encoders.image.") or n.startswith("encoders.text.0.") for n in plain[1])
    assert any(n.startswith("loss.per_term.text-image.") for n in plain[1])  # the learnable per-term temperature
    assert_same(plain, gradients(module, batch, 13))


def test_bf16_autocast_within_its_tolerance():
    from mmcore.train.grad_checkpointing import enable

    module, batch = build(STRATEGIES["centrobind"])

    def in_autocast(chunk):
        with torch.autocast("cpu", dtype=torch.bfloat16):  # a block of its own per step, as Lightning runs them
            return gradients(module, batch, chunk)

    cached = in_autocast(16)  # the first step: autocast's weight copies are made by the graph-free pass
    plain = in_autocast(0)
    # documented in the README: bf16 rounds the chunked and whole-batch GEMMs differently; 2% of the largest entry
    assert_same(plain, cached, tolerance=2e-2)
    for encoder in module.encoders.values():
        enable(encoder)
    assert_same(plain, in_autocast(16), tolerance=2e-2)  # with activation checkpointing in the replay too


def test_grad_checkpointing_keeps_the_gradient_and_the_state_dict_keys():
    module, batch = build(STRATEGIES["imagebind"], dropout=0.2)
    keys = set(module.state_dict())
    plain = gradients(module, batch, 0)
    from mmcore.train.grad_checkpointing import enable

    for encoder in module.encoders.values():
        assert enable(encoder) == ["torch.utils.checkpoint"]
    assert set(module.state_dict()) == keys
    assert_same(plain, gradients(module, batch, 0))
    assert_same(plain, gradients(module, batch, 1000))  # with the cached step as well


def test_grad_checkpointing_uses_a_towers_own_switch():
    from torch import nn

    from mmcore.train.grad_checkpointing import enable

    class Tower(nn.Module):  # timm's and open_clip's spelling
        def __init__(self):
            super().__init__()
            self.proj, self.switched = nn.Linear(4, 4), False

        def set_grad_checkpointing(self, enable=True):
            self.switched = enable

    class Encoder(nn.Module):
        def __init__(self):
            super().__init__()
            self.left, self.right, self.head = Tower(), Tower(), nn.Linear(4, 2)

    encoder = Encoder()
    assert enable(encoder) == ["Tower.set_grad_checkpointing"] * 2
    assert encoder.left.switched and encoder.right.switched
    assert "forward" not in vars(encoder)  # not wrapped as a whole when a tower checkpoints itself


def test_the_recipe_switches_and_what_they_refuse():
    registry = get_registry()
    raw = mmcore.testing.tiny_recipe(trainer={"embed_chunk": 32})
    raw["encoders"]["image"]["grad_checkpointing"] = True
    module, _ = assemble(structure_recipe(raw, registry, "<test>"))
    assert module.grad_checkpointing == {"image": ["torch.utils.checkpoint"]}
    from mmcore.recipe import recipe_to_dict

    assert recipe_to_dict(module.recipe)["encoders"]["image"]["grad_checkpointing"] is True
    with pytest.raises(RecipeError, match=r"trainer.embed_chunk: .*'>= 0'|embed_chunk.*>= 0"):
        structure_recipe(mmcore.testing.tiny_recipe(trainer={"embed_chunk": -1}), registry, "<test>")
    with pytest.raises(RecipeError) as refused:
        structure_recipe(mmcore.testing.tiny_recipe(trainer={"accumulate_grad_batches": 4}), registry, "<test>")
    assert "trainer.accumulate_grad_batches" in str(refused.value) and "trainer.embed_chunk" in str(refused.value)
    from mmcore.train.settings import check_trainer

    fp16 = structure_recipe(mmcore.testing.tiny_recipe(trainer={"embed_chunk": 8, "precision": "16-mixed"}),
                            registry, "<test>")
    with pytest.raises(RecipeError, match="fp16 loss scaler"):
        check_trainer(fp16)


def test_a_run_with_the_cached_step_and_checkpointing_trains_the_weights_of_a_plain_run(tmp_path):
    """Through Lightning's loop (zero_grad, clipping, AdamW, the schedule): 4 steps of the cached step with
    activation checkpointing reach the weights of 4 plain steps (one BLAS thread, so sums run in one order)."""
    from mmcore.runs.checkpoints import load_checkpoint

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        plain = mmcore.testing.tiny_recipe(trainer={"max_epochs": 1, "gradient_clip_val": 1.0})
        cached = mmcore.testing.tiny_recipe(trainer={"max_epochs": 1, "gradient_clip_val": 1.0, "embed_chunk": 24})
        cached["encoders"]["image"]["grad_checkpointing"] = True
        metrics = [mmcore.testing.run_recipe(raw, tmp_path / name) for raw, name in ((plain, "plain"),
                                                                                  (cached, "cached"))]
    finally:
        torch.set_num_threads(threads)
    weights = [load_checkpoint(tmp_path / name / "checkpoints" / "last.ckpt")["state_dict"]
               for name in ("plain", "cached")]
    assert weights[0].keys() == weights[1].keys()
    initial = assemble(structure_recipe(plain, get_registry(), "<test>"))[0].state_dict()
    assert any(not torch.allclose(initial[k], v) for k, v in weights[0].items())  # training moved the weights
    for key, value in weights[0].items():
        assert torch.allclose(weights[1][key], value, atol=1e-5, rtol=1e-4), key
    # the test split, embedded 24 rows at a time: float rounding moves a few tied ranks, no more
    assert metrics[1] == pytest.approx(metrics[0], rel=5e-3, abs=1e-2)


def test_a_modality_no_row_of_the_batch_has_runs_on_zero_rows_as_in_the_plain_step():
    module, batch = build(STRATEGIES["pairwise"])
    present = dict(batch.present)
    present["audio"] = torch.zeros_like(present["audio"])
    batch = type(batch)(batch.inputs, present, batch.labels, batch.ids)
    calls = []
    module.encoders["audio"].register_forward_hook(lambda mod, args, out: calls.append(out.shape[0]))
    plain = gradients(module, batch, 0)
    assert calls == [0]
    cached = gradients(module, batch, 16)
    assert calls == [0, 0, 0]  # without a graph, then again with one (under DDP its parameters must be reached)
    assert_same(plain, cached)
