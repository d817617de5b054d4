"""``timm_image``: builds from timm's tiny test models at 32 px with random weights (nothing is downloaded)."""

from __future__ import annotations

import numpy as np
import pytest

import mmcore

timm = pytest.importorskip("timm", reason='pip install "mmcore-media[image]"')
torch = pytest.importorskip("torch")

from mmcore_media.image import COMPONENTS, TimmImageConfig, build_timm_image  # noqa: E402
from mmcore_media.tuning import LoraSettings, count_trainable  # noqa: E402

EMBED = 16


def context(pretrained: bool = True):
    return mmcore.EncoderContext(modality="image", input=mmcore.InputSpec.raw("image"), embed_dim=EMBED,
                                 pretrained=pretrained)


def build(load_weights: bool = True, **settings):
    settings.setdefault("model", "test_vit")
    settings.setdefault("img_size", 32)
    return build_timm_image(TimmImageConfig(**settings), context(load_weights))


@pytest.fixture(scope="module")
def photo(tmp_path_factory):
    """A 48 x 40 RGB noise image, as a PNG file and as the decoded PIL image."""
    from PIL import Image

    pixels = np.random.default_rng(0).integers(0, 256, (40, 48, 3), dtype=np.uint8)
    path = tmp_path_factory.mktemp("img") / "photo.png"
    Image.fromarray(pixels).save(path)
    return path, Image.open(path).convert("RGB")


@pytest.fixture(scope="module")
def vit():
    return build(model="test_vit")


def test_registered_name():
    assert [c.name for c in COMPONENTS] == ["timm_image"]


@pytest.mark.parametrize("model", ["test_vit", "test_resnet"])
def test_forward_gives_embed_dim(model):
    encoder = build(model=model, hidden=[8])
    batch = torch.randn(3, 3, 32, 32)
    assert encoder(batch).shape == (3, EMBED)


def test_preprocess_is_deterministic_and_same_for_path_and_image(vit, photo):
    path, image = photo
    first = vit.preprocess(path, train=False)
    assert first.shape == (3, 32, 32) and first.dtype == torch.float32
    assert torch.equal(first, vit.preprocess(path, train=False))
    assert torch.equal(first, vit.preprocess(image, train=False))
    assert torch.equal(first, vit.preprocess(np.asarray(image), train=False))


def test_train_preprocess_augments(vit, photo):
    path, _ = photo
    torch.manual_seed(0)
    views = [vit.preprocess(path, train=True) for _ in range(4)]
    assert all(v.shape == (3, 32, 32) for v in views)
    assert any(not torch.equal(views[0], v) for v in views[1:])
    assert not torch.equal(views[0], vit.preprocess(path, train=False))


def test_transforms_use_the_model_data_config(vit):
    """test_vit's pretrained config normalises with mean = std = 0.5: a mid-grey image maps to ~0."""
    from PIL import Image

    grey = Image.new("RGB", (32, 32), (128, 128, 128))
    assert vit.preprocess(grey).abs().max() < 0.01


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_local_checkpoint_file_loads(tmp_path, suffix):
    source = build(model="test_resnet")
    state = source.tower.state_dict()
    path = tmp_path / f"tower{suffix}"
    if suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    else:
        torch.save(state, path)
    loaded = build(model="test_resnet", pretrained=str(path))
    fresh = build(model="test_resnet")
    name = "layer4.0.conv1.weight"
    assert torch.equal(loaded.tower.state_dict()[name], state[name])
    assert not torch.equal(fresh.tower.state_dict()[name], state[name])


def test_checkpoint_of_another_model_is_an_error(tmp_path):
    path = tmp_path / "vit.pth"
    torch.save(build(model="test_vit").tower.state_dict(), path)
    with pytest.raises(mmcore.ConfigError) as info:
        build(model="test_resnet", pretrained=str(path))
    assert info.value.field == "pretrained"


def test_not_pretrained_context_skips_the_file():
    """A run being loaded builds the architecture only: the (here missing) file is not read."""
    encoder = build(model="test_resnet", pretrained="/nonexistent/tower.pth", load_weights=False)
    assert encoder(torch.randn(2, 3, 32, 32)).shape == (2, EMBED)
    with pytest.raises(mmcore.ConfigError, match="no such checkpoint file"):
        build(model="test_resnet", pretrained="/nonexistent/tower.pth")


def test_frozen_tower_gets_no_gradient_and_stays_in_eval_mode():
    encoder = build(model="test_resnet", tower="frozen").train()
    assert not encoder.tower.training and encoder.head.training
    encoder(torch.randn(4, 3, 32, 32)).sum().backward()
    assert all(p.grad is None for p in encoder.tower.parameters())
    assert all(p.grad is not None for p in encoder.head.parameters())


def test_unfreeze_last_trains_exactly_the_last_block():
    encoder = build(model="test_vit", tower="frozen", unfreeze_last=1).train()
    trainable = {n for n, p in encoder.named_parameters() if p.requires_grad}
    last = len(encoder.tower.blocks) - 1
    expected = {f"tower.blocks.{last}.{n}" for n, _ in encoder.tower.blocks[last].named_parameters()}
    expected |= {f"head.{n}" for n, _ in encoder.head.named_parameters()}
    assert trainable == expected
    assert encoder.tower.blocks[last].training and not encoder.tower.blocks[0].training
    encoder(torch.randn(2, 3, 32, 32)).sum().backward()
    assert encoder.tower.blocks[last].attn.qkv.weight.grad is not None
    assert encoder.tower.blocks[0].attn.qkv.weight.grad is None


def test_unfreeze_last_on_resnet_stages():
    encoder = build(model="test_resnet", tower="frozen", unfreeze_last=2)
    trainable = {n.split(".")[1] for n, p in encoder.named_parameters() if p.requires_grad and n.startswith("tower")}
    assert trainable == {"layer3", "layer4"}
    with pytest.raises(mmcore.ConfigError, match="4 blocks"):
        build(model="test_resnet", tower="frozen", unfreeze_last=5)


def test_lora_trains_only_adapters_and_head():
    pytest.importorskip("peft", reason='pip install "mmcore-media[lora]"')
    encoder = build(model="test_vit", tower="lora", lora=LoraSettings(r=2, alpha=4, target_modules=["qkv"]))
    adapters = sum(p.numel() for n, p in encoder.tower.named_parameters() if "lora_" in n)
    head = sum(p.numel() for p in encoder.head.parameters())
    blocks = len(timm.create_model("test_vit", num_classes=0).blocks)
    width = 64  # test_vit's embed_dim: qkv is Linear(64, 192); LoRA adds A [2, 64] and B [192, 2] per block
    assert adapters == blocks * (2 * width + 3 * width * 2)
    assert count_trainable(encoder)[0] == adapters + head
    encoder(torch.randn(2, 3, 32, 32)).sum().backward()
    assert all((p.grad is not None) == p.requires_grad for p in encoder.parameters())


def test_config_errors():
    with pytest.raises(mmcore.ConfigError, match="test_vit") as info:
        build(model="test_vitt")
    assert info.value.field == "model"
    with pytest.raises(mmcore.ConfigError) as info:
        build(model="test_vit", img_size=8)  # smaller than one 16 px patch
    assert info.value.field == "img_size"
    with pytest.raises(mmcore.ConfigError) as info:
        build(model="test_vit", img_size=-1)
    assert info.value.field == "img_size"
    with pytest.raises(mmcore.ConfigError) as info:
        build(model="test_vit", tower="lora")
    assert info.value.field == "lora.target_modules"
    with pytest.raises(mmcore.ConfigError) as info:
        build(model="test_vit", unfreeze_last=1)  # needs tower = "frozen"
    assert info.value.field == "unfreeze_last"


def test_trains_through_the_core_with_lora_and_loads_for_encode(media_demo, tmp_path):
    """2 epochs on the demo manifest: LoRA timm_image on images, audio_cnn on speech, preprocessing in a forked
    DataLoader worker; the loaded run (built without pretrained weights, then restored) has the trained adapters
    and encodes a path and its decoded image identically."""
    pytest.importorskip("peft", reason='pip install "mmcore-media[lora]"')
    pytest.importorskip("torchaudio", reason='pip install "mmcore-media[audio]"')
    from PIL import Image

    from mmcore.testing import run_recipe, tiny_recipe

    raw = tiny_recipe(dataset={"name": "manifest", "path": str(media_demo)},
                      evaluators=[{"name": "retrieval"}],
                      trainer={"max_epochs": 2, "batch_size": 16, "num_workers": 1})
    raw["encoders"] = {
        "image": {"name": "timm_image", "model": "test_vit", "img_size": 32, "tower": "lora",
                  "lora": {"r": 2, "target_modules": ["qkv"]}},
        "audio": {"name": "audio_cnn", "model": "test_resnet", "sample_rate": 8000, "clip_seconds": 1.0,
                  "n_mels": 32, "n_fft": 256, "hop_length": 128, "freq_mask": 4, "time_mask": 8},
    }
    metrics = run_recipe(raw, tmp_path / "run")
    assert any(k.startswith("retrieval/") for k in metrics)

    model = mmcore.load(tmp_path / "run")
    encoder = model.module.encoders["image"]
    adapters = {n: p for n, p in encoder.tower.named_parameters() if "lora_B" in n}
    assert adapters and all(p.abs().sum() > 0 for p in adapters.values())  # trained (peft starts B at zero)
    first = media_demo.parent / next(line.split(",")[0] for line in media_demo.read_text().splitlines()[1:])
    z = model.encode("image", [str(first), Image.open(first)])
    assert z.shape == (2, 32) and np.abs(z[0] - z[1]).max() < 1e-6
