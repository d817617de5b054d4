"""``open_clip_image`` / ``open_clip_text``: a tiny open_clip model registered from a JSON config written here,
random weights, the bundled tokenizer (nothing is downloaded)."""

from __future__ import annotations

import json

import numpy as np
import pytest

import mmcore

open_clip = pytest.importorskip("open_clip", reason='pip install "mmcore-media[clip]"')
torch = pytest.importorskip("torch")

from mmcore_media.clip import (COMPONENTS, OpenClipImageConfig, OpenClipTextConfig,  # noqa: E402
                               build_open_clip_image, build_open_clip_text)
from mmcore_media.tuning import LoraSettings, count_trainable  # noqa: E402

TINY = "mmcore-test-tiny-clip"
WIDTH = 16  # the tiny model's CLIP embedding width
CONTEXT = 16
TINY_CONFIG = {
    "embed_dim": WIDTH,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 32, "head_width": 16, "patch_size": 8},
    "text_cfg": {"context_length": CONTEXT, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2},
}


@pytest.fixture(scope="module", autouse=True)
def tiny_model(tmp_path_factory):
    path = tmp_path_factory.mktemp("clip") / f"{TINY}.json"
    path.write_text(json.dumps(TINY_CONFIG))
    open_clip.add_model_config(path)


def image_encoder(embed_dim: int = WIDTH, load_weights: bool = True, **settings):
    context = mmcore.EncoderContext(modality="image", input=mmcore.InputSpec.raw("image"), embed_dim=embed_dim,
                                    pretrained=load_weights)
    return build_open_clip_image(OpenClipImageConfig(**{"model": TINY, **settings}), context)


def text_encoder(embed_dim: int = WIDTH, load_weights: bool = True, **settings):
    context = mmcore.EncoderContext(modality="text", input=mmcore.InputSpec.raw("text"), embed_dim=embed_dim,
                                    pretrained=load_weights)
    return build_open_clip_text(OpenClipTextConfig(**{"model": TINY, **settings}), context)


@pytest.fixture(scope="module")
def photo(tmp_path_factory):
    from PIL import Image

    pixels = np.random.default_rng(1).integers(0, 256, (40, 48, 3), dtype=np.uint8)
    path = tmp_path_factory.mktemp("img") / "photo.jpg"
    Image.fromarray(pixels).save(path)
    return path, Image.open(path).convert("RGB")


def test_registered_names():
    assert [c.name for c in COMPONENTS] == ["open_clip_image", "open_clip_text"]


def test_image_forward_in_clip_space_or_through_a_head(photo):
    encoder = image_encoder()
    pixels = torch.stack([encoder.preprocess(photo[0]), encoder.preprocess(photo[1])])
    assert pixels.shape == (2, 3, 32, 32)
    assert isinstance(encoder.head, torch.nn.Identity)
    assert encoder(pixels).shape == (2, WIDTH)
    assert image_encoder(embed_dim=8, head="linear", hidden=[12])(pixels).shape == (2, 8)


def test_text_forward_and_tokens():
    encoder = text_encoder()
    tokens = encoder.preprocess("a dog barking")
    assert tokens.shape == (CONTEXT,) and tokens.dtype == torch.int64
    assert int(tokens[0]) == 49406  # CLIP's start-of-text token: the bundled SimpleTokenizer
    assert torch.equal(tokens, encoder.preprocess("  a dog barking ", train=True))  # no text augmentation
    batch = torch.stack([tokens, encoder.preprocess("rain on a tin roof")])
    assert encoder(batch).shape == (2, WIDTH)
    assert text_encoder(embed_dim=8, head="linear")(batch).shape == (2, 8)


def test_image_preprocess_eval_is_deterministic_and_train_augments(photo):
    path, image = photo
    encoder = image_encoder()
    first = encoder.preprocess(path)
    assert torch.equal(first, encoder.preprocess(path, train=False))
    assert torch.equal(first, encoder.preprocess(image, train=False))
    torch.manual_seed(0)
    views = [encoder.preprocess(path, train=True) for _ in range(4)]
    assert any(not torch.equal(first, v) for v in views)


def test_head_none_needs_clip_width():
    with pytest.raises(mmcore.ConfigError, match=f"{WIDTH}-d .* embed_dim = 32") as info:
        image_encoder(embed_dim=32)
    assert info.value.field == "head"
    with pytest.raises(mmcore.ConfigError) as info:
        text_encoder(hidden=[8])
    assert info.value.field == "hidden"


def test_local_checkpoint_file_loads_each_tower(tmp_path):
    source = open_clip.create_model(TINY, pretrained=None)
    path = tmp_path / "clip.pt"
    torch.save(source.state_dict(), path)
    image = image_encoder(pretrained=str(path))
    text = text_encoder(pretrained=str(path))
    assert torch.equal(image.tower.conv1.weight, source.visual.conv1.weight)
    assert torch.equal(text.tower.clip.token_embedding.weight, source.token_embedding.weight)
    assert not torch.equal(image_encoder().tower.conv1.weight, source.visual.conv1.weight)


def test_not_pretrained_context_skips_the_weights():
    encoder = image_encoder(pretrained="/nonexistent/clip.pt", load_weights=False)
    assert encoder(torch.zeros(1, 3, 32, 32)).shape == (1, WIDTH)


def test_frozen_by_default_no_gradient_to_the_tower():
    encoder = text_encoder(embed_dim=8, head="linear").train()
    tokens = torch.stack([encoder.preprocess("a"), encoder.preprocess("b c")])
    encoder(tokens).sum().backward()
    assert all(p.grad is None for p in encoder.tower.parameters())
    assert all(p.grad is not None for p in encoder.head.parameters())
    assert count_trainable(text_encoder())[0] == 0  # a fixed anchor in CLIP's own space


def test_unfreeze_last_trains_exactly_the_last_block():
    encoder = text_encoder(unfreeze_last=1)
    trainable = {n for n, p in encoder.named_parameters() if p.requires_grad}
    blocks = encoder.tower.clip.transformer.resblocks
    assert trainable == {f"tower.clip.transformer.resblocks.{len(blocks) - 1}.{n}"
                         for n, _ in blocks[-1].named_parameters()}
    image = image_encoder(unfreeze_last=2)
    assert {n.split(".")[3] for n, p in image.named_parameters() if p.requires_grad} == {"0", "1"}


def test_train_tower_has_no_unused_parameters():
    """With tower = "train" every parameter gets a gradient (the text tower drops CLIP's logit scale)."""
    encoder = text_encoder(tower="train")
    encoder(torch.stack([encoder.preprocess("a"), encoder.preprocess("b")])).sum().backward()
    assert all(p.grad is not None for p in encoder.parameters())


def test_lora_trains_only_adapters():
    pytest.importorskip("peft", reason='pip install "mmcore-media[lora]"')
    encoder = image_encoder(embed_dim=8, head="linear", tower="lora",
                            lora=LoraSettings(r=2, target_modules=["c_fc"]))
    adapters = sum(p.numel() for n, p in encoder.tower.named_parameters() if "lora_" in n)
    assert adapters == 2 * (2 * 32 + 4 * 32 * 2)  # 2 blocks, c_fc = Linear(32, 128): A [2, 32] + B [128, 2]
    assert count_trainable(encoder)[0] == adapters + sum(p.numel() for p in encoder.head.parameters())


@pytest.mark.parametrize(("settings", "field", "match"), [
    ({"model": "ViT-B-33"}, "model", "ViT-B-32"),
    ({"pretrained": "laion9b"}, "pretrained", "its tags"),
    ({"tower": "lora"}, "lora.target_modules", "c_fc"),
    ({"image_size": -2}, "image_size", "> 0"),
])
def test_config_errors(settings, field, match):
    with pytest.raises(mmcore.ConfigError, match=match) as info:
        image_encoder(**settings)
    assert info.value.field == field


def test_binds_audio_into_a_frozen_clip_space_through_the_core(media_demo, tmp_path):
    """ImageBind's setup in 2 epochs on the demo manifest: frozen open_clip image and text towers in CLIP's own
    space (head = "none"), loaded from a checkpoint file, audio_cnn trained into it; zero-shot from the demo's
    prompts. The loaded run (architecture only, then restored) encodes text exactly as that CLIP does: the frozen
    tower was not changed by training, and its output is CLIP's own embedding."""
    pytest.importorskip("timm", reason='pip install "mmcore-media[audio]"')
    pytest.importorskip("torchaudio", reason='pip install "mmcore-media[audio]"')
    from mmcore_media.demo import PROMPTS

    from mmcore.testing import run_recipe, tiny_recipe

    clip = open_clip.create_model(TINY, pretrained=None).eval()
    torch.save(clip.state_dict(), tmp_path / "clip.pt")
    raw = tiny_recipe(embed_dim=WIDTH, dataset={"name": "manifest", "path": str(media_demo), "prompts": list(PROMPTS)},
                      evaluators=[{"name": "retrieval"}, {"name": "zero_shot", "text": "text"}],
                      trainer={"max_epochs": 2, "batch_size": 16, "num_workers": 1})
    raw["encoders"] = {
        "image": {"name": "open_clip_image", "model": TINY, "pretrained": str(tmp_path / "clip.pt")},
        "text": {"name": "open_clip_text", "model": TINY, "pretrained": str(tmp_path / "clip.pt")},
        "audio": {"name": "audio_cnn", "model": "test_resnet", "sample_rate": 8000, "clip_seconds": 1.0,
                  "n_mels": 32, "n_fft": 256, "hop_length": 128},
    }
    metrics = run_recipe(raw, tmp_path / "run")
    assert any(k.startswith("zero_shot/") for k in metrics)

    (tmp_path / "clip.pt").unlink()  # the run needs only its own checkpoint
    model = mmcore.load(tmp_path / "run")
    tokens = open_clip.get_tokenizer(TINY)(["a dog barking"])
    expected = torch.nn.functional.normalize(clip.encode_text(tokens), dim=-1).detach().numpy()
    assert np.abs(model.encode("text", ["a dog barking"]) - expected).max() < 1e-5
