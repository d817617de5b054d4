"""Real towers under the core's cached step (``trainer.embed_chunk``) and activation checkpointing
(``grad_checkpointing``): a timm ViT and a BERT with LoRA adapters and dropout, on the demo set's images and
captions, give the gradients of the plain step; each tower's own checkpointing switch is the one turned on."""

from __future__ import annotations

import pytest
from mmcore.testing import module_and_batch, step_gradients

pytest.importorskip("timm", reason='pip install "mmcore-media[image]"')
pytest.importorskip("peft", reason='pip install "mmcore-media[lora]"')


def recipe(media_demo, bert_dir, checkpointing=False):
    return {
        "seed": 0, "embed_dim": 16,
        "dataset": {"name": "manifest", "path": str(media_demo)},
        "encoders": {
            "image": {"name": "timm_image", "model": "test_vit", "img_size": 32, "grad_checkpointing": checkpointing},
            "text": {"name": "hf_text", "model": bert_dir, "tower": "lora", "lora": {"r": 4, "alpha": 8},
                     "grad_checkpointing": checkpointing}},
        "anchor": {"name": "imagebind", "anchor": "image"},
        "loss": {"name": "infonce", "tile_size": 8},
        "evaluators": [{"name": "retrieval"}],
        "trainer": {"batch_size": 24, "accelerator": "cpu", "devices": 1},
    }


def assert_same(expected, got):
    (loss_a, grads_a), (loss_b, grads_b) = expected, got
    assert loss_b == pytest.approx(loss_a, rel=1e-5)
    assert set(grads_b) == set(grads_a)
    for name, g in grads_a.items():
        assert (grads_b[name] - g).abs().max().item() <= 1e-5 * max(g.abs().max().item(), 1e-8), name


def test_a_vit_and_a_lora_bert_with_dropout_give_the_plain_steps_gradient_in_chunks(media_demo, bert_dir):
    module, batch = module_and_batch(recipe(media_demo, bert_dir))
    plain = step_gradients(module, batch, 0, seed=3)
    trained = set(plain[1])
    assert any("lora_A" in n for n in trained) and not any("base_layer" in n for n in trained)
    assert any(n.startswith("encoders.image.") for n in trained)
    assert step_gradients(module, batch, 0, seed=4)[0] != plain[0]  # BERT's dropout is on: seeds matter
    # one chunk of every row draws the dropout masks in the plain step's order, and the replay reuses them
    assert_same(plain, step_gradients(module, batch, 24, seed=3))
    # chunks of 5 rows (masks drawn chunk by chunk; tests/test_cached_step.py checks their replay): with dropout
    # off, the plain step's gradient
    module.encoders["text"].eval()
    assert_same(step_gradients(module, batch, 0), step_gradients(module, batch, 5))


def test_grad_checkpointing_turns_on_each_towers_own_switch_and_keeps_the_gradient(media_demo, bert_dir):
    module, batch = module_and_batch(recipe(media_demo, bert_dir))
    checkpointed, _ = module_and_batch(recipe(media_demo, bert_dir, checkpointing=True))
    how = checkpointed.grad_checkpointing
    assert how["image"] == ["VisionTransformer.set_grad_checkpointing"], how
    assert len(how["text"]) == 1 and how["text"][0].endswith("_checkpointing_enable"), how
    assert any(getattr(m, "grad_checkpointing", False) for m in checkpointed.encoders["image"].modules())
    assert any(getattr(m, "gradient_checkpointing", False) is True for m in checkpointed.encoders["text"].modules())
    checkpointed.load_state_dict(module.state_dict())
    for m in ("image", "text"):
        module.encoders[m].eval()  # dropout off: the same forward in both modules
        checkpointed.encoders[m].eval()
    assert_same(step_gradients(module, batch, 0), step_gradients(checkpointed, batch, 0))
    assert_same(step_gradients(module, batch, 0), step_gradients(checkpointed, batch, 7))
