"""hf_audio: tiny AST, wav2vec2 and Whisper models saved with their feature extractors (save_pretrained) into
temporary directories and loaded back by path; decoding, resampling, cropping, padding, pooling over the frames of
the clip, the architecture-only build, tuning, and the settings it rejects."""

import sys

import mmcore
import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers", reason='pip install "mmcore-media[hf-audio]"')

from mmcore_media.decode import MediaError  # noqa: E402
from mmcore_media.hf_audio import COMPONENTS, HfAudioConfig, build_hf_audio  # noqa: E402

RATE = 16000


def _ast(directory):
    from transformers import ASTConfig, ASTFeatureExtractor, ASTModel

    ASTModel(ASTConfig(hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32,
                       num_mel_bins=32, max_length=100, frequency_stride=10, time_stride=10)).save_pretrained(directory)
    ASTFeatureExtractor(num_mel_bins=32, max_length=100).save_pretrained(directory)  # 100 frames = 1 s


def _wav2vec2(directory):
    from transformers import Wav2Vec2Config, Wav2Vec2FeatureExtractor, Wav2Vec2Model

    # the layer-norm variant, whose extractor returns (and whose model takes) an attention mask
    Wav2Vec2Model(Wav2Vec2Config(hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32,
                                 conv_dim=(8, 8), conv_stride=(5, 4), conv_kernel=(10, 4), num_conv_pos_embeddings=16,
                                 num_conv_pos_embedding_groups=2, feat_extract_norm="layer", do_stable_layer_norm=True,
                                 mask_time_prob=0.0)).save_pretrained(directory)
    Wav2Vec2FeatureExtractor(return_attention_mask=True).save_pretrained(directory)


def _whisper(directory):
    from transformers import WhisperConfig, WhisperFeatureExtractor, WhisperModel

    WhisperModel(WhisperConfig(d_model=16, encoder_layers=2, decoder_layers=1, encoder_attention_heads=2,
                               decoder_attention_heads=2, encoder_ffn_dim=32, decoder_ffn_dim=32, num_mel_bins=16,
                               max_source_positions=50, max_target_positions=16, vocab_size=64, pad_token_id=0,
                               bos_token_id=1, eos_token_id=2, decoder_start_token_id=1)).save_pretrained(directory)
    WhisperFeatureExtractor(feature_size=16, chunk_length=1).save_pretrained(directory)  # 1 s = 100 frames


SAVERS = {"ast": _ast, "wav2vec2": _wav2vec2, "whisper": _whisper}


@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory):
    dirs = {}
    for name, save in SAVERS.items():
        torch.manual_seed(0)
        dirs[name] = str(tmp_path_factory.mktemp(name))
        save(dirs[name])
    return dirs


def build(model, pretrained=True, embed_dim=8, **settings):
    context = mmcore.EncoderContext("audio", mmcore.InputSpec.raw("audio"), embed_dim, pretrained=pretrained)
    return build_hf_audio(HfAudioConfig(model=model, **settings), context)


def tone(seconds, rate=RATE, channels=1, hz=440.0):
    t = np.arange(int(seconds * rate)) / rate
    wave = np.stack([np.sin(2 * np.pi * hz * (c + 1) * t) for c in range(channels)]).astype(np.float32)
    return wave * 0.5, rate


def embed(encoder, clips):
    encoder.eval()
    with torch.no_grad():
        return encoder(encoder.collate([encoder.preprocess(c) for c in clips]))


@pytest.mark.parametrize("name, tower_class, key", [("ast", "ASTModel", "input_values"),
                                                    ("wav2vec2", "Wav2Vec2Model", "input_values"),
                                                    ("whisper", "WhisperEncoder", "input_features")])
def test_each_tower_loads_from_its_directory_and_embeds_a_batch(model_dirs, name, tower_class, key):
    encoder = build(model_dirs[name], clip_seconds=1.0, hidden=[12])
    assert type(encoder.tower).__name__ == tower_class and encoder.input_name == key
    from transformers import AutoModel

    saved = AutoModel.from_pretrained(model_dirs[name])
    saved = saved.get_encoder() if name == "whisper" else saved
    for weight, value in saved.state_dict().items():  # the saved weights, not a fresh initialisation
        assert torch.equal(encoder.tower.state_dict()[weight], value), weight
    out = embed(encoder, [tone(0.7), tone(1.5, rate=8000, channels=2)])
    assert out.shape == (2, 8) and torch.isfinite(out).all()
    assert [c.name for c in COMPONENTS] == ["hf_audio"]


@pytest.mark.parametrize("name", list(SAVERS))
def test_preprocess_resamples_to_mono_and_is_deterministic_in_eval(model_dirs, name, tmp_path):
    import soundfile

    encoder = build(model_dirs[name], clip_seconds=1.0)
    wave, rate = tone(1.3, rate=8000, channels=2)
    first, again = encoder.preprocess((wave, rate)), encoder.preprocess((wave, rate))
    assert all(torch.equal(first[k], again[k]) for k in first)
    path = tmp_path / "clip.wav"
    soundfile.write(path, wave.T, rate, subtype="FLOAT")
    from_file = encoder.preprocess(str(path))
    assert all(torch.allclose(first[k].float(), from_file[k].float(), atol=1e-6) for k in first)
    resampled = encoder.preprocess((wave.mean(0).repeat(2), RATE))  # ~the same clip already at 16 kHz, mono
    assert first[encoder.input_name].shape == resampled[encoder.input_name].shape


def test_wav2vec2_crops_long_clips_and_pads_short_ones_in_the_batch(model_dirs):
    encoder = build(model_dirs["wav2vec2"], clip_seconds=0.5)
    clip = tone(1.0, hz=220.0)
    assert encoder.preprocess(clip)["input_values"].shape == (8000,)
    start = encoder.preprocess((clip[0][:, :8000], RATE))["input_values"]
    assert torch.equal(encoder.preprocess(clip)["input_values"], start)  # eval: the first 0.5 s
    torch.manual_seed(1)
    windows = {tuple(encoder.preprocess(clip, train=True)["input_values"][:4].tolist()) for _ in range(4)}
    assert len(windows) > 1  # training: random windows
    batch = encoder.collate([encoder.preprocess(tone(0.2)), encoder.preprocess(clip)])
    assert batch["input_values"].shape == batch["attention_mask"].shape == (2, 8000)
    assert batch["attention_mask"].sum(1).tolist() == [3200, 8000]
    assert batch["input_values"][0, 3200:].abs().max() == 0


def test_wav2vec2_padding_never_changes_a_clips_embedding(model_dirs):
    encoder = build(model_dirs["wav2vec2"], clip_seconds=0)
    short, longer = tone(0.3, hz=330.0), tone(1.0, hz=550.0)
    alone, beside = embed(encoder, [short]), embed(encoder, [short, longer])
    assert torch.allclose(alone[0], beside[0], atol=1e-5)


def test_whisper_pools_only_the_frames_of_the_clip(model_dirs):
    encoder = build(model_dirs["whisper"]).eval()
    inputs = encoder.collate([encoder.preprocess(tone(0.5))])
    assert inputs["input_features"].shape == (1, 16, 100) and inputs["attention_mask"].sum() == 50
    with torch.no_grad():
        hidden = encoder.tower(input_features=inputs["input_features"]).last_hidden_state  # [1, 50, 16]
        assert torch.allclose(encoder(inputs), encoder.head(hidden[:, :25].mean(1)), atol=1e-6)


def test_without_pretrained_it_builds_from_the_config_and_loads_a_state_dict_exactly(model_dirs, tmp_path):
    import shutil

    config_only = tmp_path / "config-only"
    shutil.copytree(model_dirs["wav2vec2"], config_only)
    (config_only / "model.safetensors").unlink()
    reference = build(model_dirs["wav2vec2"], tower="frozen", unfreeze_last=1)
    restored = build(str(config_only), pretrained=False, tower="frozen", unfreeze_last=1)
    clips = [tone(0.4), tone(0.9, hz=880.0)]
    assert not torch.allclose(embed(reference, clips), embed(restored, clips))
    restored.load_state_dict(reference.state_dict())
    assert torch.equal(embed(reference, clips), embed(restored, clips))


def test_unfreeze_last_trains_the_last_transformer_layer_not_the_conv_front_end(model_dirs):
    encoder = build(model_dirs["wav2vec2"], tower="frozen", unfreeze_last=1)
    trainable = {n for n, p in encoder.named_parameters() if p.requires_grad}
    last = {f"tower.encoder.layers.1.{n}" for n, _ in encoder.tower.encoder.layers[1].named_parameters()}
    assert trainable == last | {"head.0.weight", "head.0.bias"}
    encoder.train()
    encoder(encoder.collate([encoder.preprocess(tone(0.5))])).sum().backward()
    assert all(p.grad is None for n, p in encoder.named_parameters() if n not in trainable)
    assert all(p.grad is not None for n, p in encoder.named_parameters() if n in trainable)


def test_lora_on_named_modules_trains_only_adapters_and_head(model_dirs):
    pytest.importorskip("peft", reason='pip install "mmcore-media[lora]"')
    from mmcore_media.tuning import LoraSettings

    encoder = build(model_dirs["whisper"], tower="lora", lora=LoraSettings(r=2, target_modules=["q_proj", "v_proj"]))
    trainable = [n for n, p in encoder.named_parameters() if p.requires_grad]
    assert len([n for n in trainable if "lora_" in n]) == 2 * 2 * 2  # 2 layers x (q, v) x (A, B)
    assert all("lora_" in n or n.startswith("head.") for n in trainable)
    assert embed(encoder, [tone(0.5)]).shape == (1, 8)


def test_an_undecodable_file_is_a_media_error_naming_it(model_dirs, tmp_path):
    encoder = build(model_dirs["ast"])
    bad = tmp_path / "not-audio.wav"
    bad.write_bytes(b"RIFF....WAVEfmt garbage")
    with pytest.raises(MediaError, match="not-audio.wav"):
        encoder.preprocess(str(bad))
    with pytest.raises(MediaError, match="missing.wav"):
        encoder.preprocess(str(tmp_path / "missing.wav"))


@pytest.mark.parametrize("settings, field", [({"model": ""}, "model"), ({"clip_seconds": -1.0}, "clip_seconds"),
                                             ({"hidden": [0]}, "hidden[0]"), ({"unfreeze_last": 1}, "unfreeze_last")])
def test_bad_settings_are_config_errors(model_dirs, settings, field):
    with pytest.raises(mmcore.ConfigError) as info:
        build(**{"model": model_dirs["ast"], **settings})
    assert info.value.field == field


def test_a_wrong_input_a_missing_directory_and_missing_transformers_are_config_errors(model_dirs, tmp_path,
                                                                                     monkeypatch):
    with pytest.raises(mmcore.ConfigError, match="raw audio"):
        build_hf_audio(HfAudioConfig(model=model_dirs["ast"]), mmcore.EncoderContext("audio", 40, 8))
    with pytest.raises(mmcore.ConfigError, match="no such model directory"):
        build(str(tmp_path / "nowhere"))
    monkeypatch.setitem(sys.modules, "transformers", None)
    with pytest.raises(mmcore.ConfigError, match=r'pip install "mmcore-media\[hf-audio\]"'):
        build(model_dirs["ast"])
