"""``audio_cnn``: log-mel front end + timm's tiny test CNNs with one input channel, short 8 kHz clips, random
weights (nothing is downloaded)."""

from __future__ import annotations

import numpy as np
import pytest

import mmcore

timm = pytest.importorskip("timm", reason='pip install "mmcore-media[audio]"')
torchaudio = pytest.importorskip("torchaudio", reason='pip install "mmcore-media[audio]"')
torch = pytest.importorskip("torch")

from mmcore_media.audio import COMPONENTS, AudioCnnConfig, build_audio_cnn  # noqa: E402

EMBED = 16
RATE = 8000
SMALL = dict(sample_rate=RATE, clip_seconds=0.5, n_mels=32, n_fft=256, hop_length=64)  # [1, 32, 63] log-mels
FRAMES = 1 + 4000 // 64


def build(load_weights: bool = True, **settings):
    settings = {"model": "test_resnet", **SMALL, **settings}
    context = mmcore.EncoderContext(modality="audio", input=mmcore.InputSpec.raw("audio"), embed_dim=EMBED,
                                    pretrained=load_weights)
    return build_audio_cnn(AudioCnnConfig(**settings), context)


def tone(hz: float, seconds: float, rate: int) -> np.ndarray:
    t = np.arange(round(seconds * rate)) / rate
    return (0.5 * np.sin(2 * np.pi * hz * t)).astype(np.float32)


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    """0.8 s of noise plus a 440 Hz tone, stereo at 22.05 kHz, as a WAV file and as the decoded pair."""
    import soundfile

    from mmcore_media.decode import read_audio

    rng = np.random.default_rng(0)
    left = tone(440, 0.8, 22050) + 0.05 * rng.standard_normal(17640).astype(np.float32)
    wave = np.stack([left, 0.5 * left])
    path = tmp_path_factory.mktemp("audio") / "clip.wav"
    soundfile.write(path, wave.T, 22050, subtype="FLOAT")
    return path, read_audio(path)


@pytest.fixture(scope="module")
def encoder():
    return build(freq_mask=6, time_mask=10)


def test_registered_name():
    assert [c.name for c in COMPONENTS] == ["audio_cnn"]


@pytest.mark.parametrize("model", ["test_resnet", "test_efficientnet", "test_vit"])
def test_forward_gives_embed_dim(model, clip):
    """CNNs take any spectrogram size; the ViT is built at (n_mels, frames), here 32 x 64 for its 16 px
    patches."""
    seconds = 0.5 if model != "test_vit" else 63 * 64 / RATE
    audio = build(model=model, hidden=[8], clip_seconds=seconds).train()
    batch = torch.stack([audio.preprocess(clip[0]), audio.preprocess(clip[0], train=True)])
    assert batch.shape == (2, 1, 32, FRAMES if model != "test_vit" else 64)
    assert audio(batch).shape == (2, EMBED)


def test_eval_preprocess_is_deterministic_and_same_for_path_and_waveform(encoder, clip):
    path, decoded = clip
    first = encoder.preprocess(path, train=False)
    assert first.shape == (1, 32, FRAMES) and first.dtype == torch.float32
    assert torch.equal(first, encoder.preprocess(path, train=False))
    assert torch.equal(first, encoder.preprocess(decoded, train=False))


def test_train_preprocess_augments_only_when_configured(encoder, clip):
    path, _ = clip
    torch.manual_seed(0)
    views = [encoder.preprocess(path, train=True) for _ in range(3)]
    assert any(not torch.equal(views[0], v) for v in views[1:])
    plain = build()  # no SpecAugment: a clip shorter than clip_seconds is only padded, identically
    short = (tone(440, 0.3, RATE), RATE)
    assert torch.equal(plain.preprocess(short, train=True), plain.preprocess(short, train=False))


def test_resampled_to_the_encoder_rate():
    """The same tone given at 16 kHz and at 8 kHz gives nearly the same log-mel (it was resampled to 8 kHz)."""
    audio = build()
    at_16k = audio.preprocess((tone(440, 0.5, 16000), 16000))
    at_8k = audio.preprocess((tone(440, 0.5, RATE), RATE))
    assert at_16k.shape == at_8k.shape
    peak = at_8k[0, :, 10:50].mean(dim=1)
    assert int(peak.argmax()) == int(at_16k[0, :, 10:50].mean(dim=1).argmax())
    assert (at_16k - at_8k)[0, :, 10:50].abs().median() < 1.0  # dB, away from the clip edges


def test_mono_is_the_channel_mean():
    audio = build()
    wave = tone(300, 0.5, RATE)
    stereo = np.stack([wave, np.zeros_like(wave)])
    assert torch.allclose(audio.preprocess((stereo, RATE)), audio.preprocess((wave / 2, RATE)))


def test_fixed_length_crops_at_random_in_training_and_centred_in_eval():
    from mmcore_media._audio_model import fixed_length

    wave = torch.arange(10.0)
    assert torch.equal(fixed_length(wave, 4, train=False), torch.tensor([3.0, 4.0, 5.0, 6.0]))
    assert torch.equal(fixed_length(wave, 12, train=True)[10:], torch.zeros(2))
    torch.manual_seed(0)
    starts = {int(fixed_length(wave, 4, train=True)[0]) for _ in range(30)}
    assert len(starts) > 2 and starts <= set(range(7))


def test_frozen_tower_gets_no_gradient(clip):
    audio = build(tower="frozen").train()
    batch = torch.stack([audio.preprocess(clip[0], train=True) for _ in range(3)])
    audio(batch).sum().backward()
    assert all(p.grad is None for p in audio.tower.parameters())
    assert all(p.grad is not None for p in [*audio.head.parameters(), *audio.input_norm.parameters()])


def test_unfreeze_last_trains_exactly_the_last_block():
    audio = build(model="test_efficientnet", tower="frozen", unfreeze_last=1)
    last = len(audio.tower.blocks) - 1
    tower_trainable = {n for n, p in audio.tower.named_parameters() if p.requires_grad}
    assert tower_trainable == {f"blocks.{last}.{n}" for n, _ in audio.tower.blocks[last].named_parameters()}


def test_local_checkpoint_file_loads(tmp_path):
    source = build()
    path = tmp_path / "audio_tower.pth"
    torch.save(source.tower.state_dict(), path)
    loaded = build(pretrained=str(path))
    name = "conv1.0.weight"  # test_resnet's deep stem
    assert loaded.tower.state_dict()[name].shape[1] == 1  # one input channel
    assert torch.equal(loaded.tower.state_dict()[name], source.tower.state_dict()[name])


@pytest.mark.parametrize(("settings", "field"), [
    ({"clip_seconds": 0.01}, "clip_seconds"),
    ({"f_max": 5000.0}, "f_max"),
    ({"freq_mask": 40}, "freq_mask"),
    ({"model": "test_resnett"}, "model"),
    ({"model": "test_vit"}, "n_mels"),  # 63 frames: not a multiple of its 16 px patches
    ({"sample_rate": 0}, "sample_rate"),
])
def test_config_errors(settings, field):
    with pytest.raises(mmcore.ConfigError) as info:
        build(**settings)
    assert info.value.field == field
