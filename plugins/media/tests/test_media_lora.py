"""Fine-tuning a transformers tower (hf_text on a tiny BERT loaded from a directory): LoRA trains only its adapters
and the head, frozen weights get no gradient, the adapters survive a state_dict round trip into an encoder built
without pretrained weights (what checkpoint, resume and load rely on), and unfreeze_last trains only the last layer."""

import mmcore
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers", reason='pip install "mmcore-media[text]"')
pytest.importorskip("peft", reason='pip install "mmcore-media[lora]"')

from mmcore_media.text import HfTextConfig, build_hf_text  # noqa: E402
from mmcore_media.tuning import LoraSettings, count_trainable  # noqa: E402

TEXTS = ["a dog barking", "the cat", "a bird sings loudly"]


def build(model, pretrained=True, **settings):
    context = mmcore.EncoderContext("text", mmcore.InputSpec.raw("text"), 8, pretrained=pretrained)
    return build_hf_text(HfTextConfig(model=model, **settings), context)


def batch(encoder, texts=TEXTS):
    return encoder.collate([encoder.preprocess(t) for t in texts])


def backward_once(encoder):
    encoder.train()
    encoder(batch(encoder)).square().sum().backward()


def test_lora_trains_only_the_adapters_and_the_head(bert_dir):
    encoder = build(bert_dir, tower="lora", lora=LoraSettings(r=4, alpha=8))
    trainable = {name: p for name, p in encoder.named_parameters() if p.requires_grad}
    adapters = {name: p for name, p in trainable.items() if "lora_A" in name or "lora_B" in name}
    head = {name: p for name, p in trainable.items() if name.startswith("head.")}
    assert set(trainable) == set(adapters) | set(head)
    # peft's default for BERT adapts query and value of each of the 2 layers: A [4, 16] and B [16, 4] each
    assert len(adapters) == 2 * 2 * 2 and all(p.numel() == 4 * 16 for p in adapters.values())
    assert {name.split(".")[-4] for name in adapters} == {"query", "value"}
    assert count_trainable(encoder)[0] == sum(p.numel() for p in adapters.values()) + (16 * 8 + 8)


def test_frozen_tower_weights_get_no_gradient_and_adapters_do(bert_dir):
    encoder = build(bert_dir, tower="lora", lora=LoraSettings(r=4, alpha=8))
    backward_once(encoder)
    for name, p in encoder.named_parameters():
        if p.requires_grad:
            continue
        assert p.grad is None, name
    lora_b = [p for name, p in encoder.named_parameters() if "lora_B" in name]
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in lora_b)  # B starts at 0, so A's grad is 0

    frozen = build(bert_dir, tower="frozen")
    backward_once(frozen)
    assert all(p.grad is None for p in frozen.tower.parameters())
    assert all(p.grad is not None for p in frozen.head.parameters())


def test_adapters_survive_a_state_dict_round_trip_into_an_unpretrained_build(bert_dir):
    trained = build(bert_dir, tower="lora", lora=LoraSettings(r=4, alpha=8))
    optimizer = torch.optim.SGD([p for p in trained.parameters() if p.requires_grad], lr=0.5)
    for _ in range(2):  # a couple of steps, so the adapters are no longer the identity
        optimizer.zero_grad()
        backward_once(trained)
        optimizer.step()
    assert any(p.abs().sum() > 0 for name, p in trained.named_parameters() if "lora_B" in name)

    restored = build(bert_dir, pretrained=False, tower="lora", lora=LoraSettings(r=4, alpha=8))
    with torch.no_grad():
        before = restored.eval()(batch(restored))
    restored.load_state_dict(trained.state_dict())  # strict: the same keys, adapters included
    with torch.no_grad():
        expected, got = trained.eval()(batch(trained)), restored(batch(restored))
    assert torch.equal(expected, got)
    assert not torch.allclose(before, got)  # the random, unpretrained weights were really replaced
    plain = build(bert_dir).eval()  # the pretrained tower without the trained adapters differs
    with torch.no_grad():
        assert not torch.allclose(plain(batch(plain)), got)


def test_unfreeze_last_trains_only_the_last_layer(bert_dir):
    encoder = build(bert_dir, tower="frozen", unfreeze_last=1)
    trainable = {name for name, p in encoder.named_parameters() if p.requires_grad}
    assert trainable == {f"tower.encoder.layer.1.{n}" for n, _ in encoder.tower.encoder.layer[1].named_parameters()} \
        | {"head.0.weight", "head.0.bias"}
    backward_once(encoder)
    assert all(p.grad is None for p in encoder.tower.encoder.layer[0].parameters())
    assert all(p.grad is not None for p in encoder.tower.encoder.layer[1].parameters())


def test_lora_without_peft_names_the_pip_command(bert_dir, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "peft", None)
    with pytest.raises(mmcore.ConfigError, match=r'pip install "mmcore-media\[lora\]"'):
        build(bert_dir, tower="lora")


def test_lora_on_a_module_name_the_tower_lacks_is_a_config_error(bert_dir):
    with pytest.raises(mmcore.ConfigError) as info:
        build(bert_dir, tower="lora", lora=LoraSettings(target_modules=["qkv"]))
    assert info.value.field == "lora.target_modules"


def test_adapters_train_through_the_core_and_come_back_with_the_loaded_run(media_demo, bert_dir, tmp_path):
    """One epoch on the demo manifest: images (timm, frozen anchor), captions through hf_text with LoRA, speech
    through hf_audio (tiny wav2vec2, last layer unfrozen), preprocessing in a forked DataLoader worker. The loaded
    run (built without pretrained weights, then restored) holds the trained adapters and layer, and encodes text and
    audio as the modules do on their eval preprocessing."""
    pytest.importorskip("timm", reason='pip install "mmcore-media[image]"')
    import numpy as np
    from mmcore.testing import run_recipe, tiny_recipe
    from mmcore_media.decode import read_audio
    from transformers import Wav2Vec2Config, Wav2Vec2FeatureExtractor, Wav2Vec2Model

    speech = tmp_path / "wav2vec2"
    Wav2Vec2Model(Wav2Vec2Config(hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32,
                                 conv_dim=(8, 8), conv_stride=(10, 8), conv_kernel=(10, 8), num_conv_pos_embeddings=8,
                                 num_conv_pos_embedding_groups=2, mask_time_prob=0.0)).save_pretrained(speech)
    Wav2Vec2FeatureExtractor().save_pretrained(speech)
    raw = tiny_recipe(dataset={"name": "manifest", "path": str(media_demo)}, evaluators=[{"name": "retrieval"}],
                      anchor={"name": "imagebind", "anchor": "image"},
                      trainer={"max_epochs": 1, "batch_size": 16, "num_workers": 1})
    raw["encoders"] = {
        "image": {"name": "timm_image", "model": "test_vit", "img_size": 32, "tower": "frozen"},
        "text": {"name": "hf_text", "model": bert_dir, "tower": "lora", "lora": {"r": 2}},
        "audio": {"name": "hf_audio", "model": str(speech), "clip_seconds": 1.0, "tower": "frozen",
                  "unfreeze_last": 1},
    }
    run_recipe(raw, tmp_path / "run")

    model = mmcore.load(tmp_path / "run")
    text, audio = model.module.encoders["text"], model.module.encoders["audio"]
    assert all(p.abs().sum() > 0 for n, p in text.named_parameters() if "lora_B" in n)  # trained (B starts at 0)
    pretrained = Wav2Vec2Model.from_pretrained(speech).state_dict()
    changed = {k for k, v in audio.tower.state_dict().items() if not torch.equal(v, pretrained[k])}
    assert changed and all(k.startswith("encoder.layers.1.") for k in changed)  # only the unfrozen layer trained
    with torch.no_grad():
        by_hand = torch.nn.functional.normalize(text.eval()(text.collate([text.preprocess("a dog barking")])), dim=-1)
    assert np.abs(model.encode("text", ["a dog barking"]) - by_hand.numpy()).max() < 1e-6
    clip = media_demo.parent / next(r.split(",")[1] for r in media_demo.read_text().splitlines()[1:] if r.split(",")[1])
    z = model.encode("audio", [str(clip), read_audio(clip)])
    assert z.shape == (2, 32) and np.abs(z[0] - z[1]).max() < 1e-6
