"""Encoder ``hf_audio``: a transformers audio tower (AST, wav2vec2 and its kin, Whisper's encoder) fed by the model's
own feature extractor, mean-pooled over time, then a projection head.

::

    (wave, rate) or path --read_audio, mono, resample to the extractor's sampling_rate, crop to clip_seconds-->
        [samples] --AutoFeatureExtractor--> {input_values | input_features [, attention_mask]}     (preprocess)
        --stack, or the extractor's pad for waveform models--> [B, ...]                            (collate)
        --tower--> last_hidden_state [B, T, H] --mean over the frames of the clip--> [B, H] --head--> [B, embed_dim]

``model``: a hub id (passed to transformers as is) or a local directory (``local_files_only``) holding the model and
its feature extractor (``save_pretrained`` of both). ``AutoModel`` loads it; an encoder-decoder (Whisper) keeps its
encoder only (``get_encoder()``). What the extractor makes decides the rest:

- AST (``ASTFeatureExtractor``): log-mel ``input_values [frames, mel]``, padded or cut to its ``max_length`` frames
  (1024 = 10.24 s): a fixed shape, stacked;
- Whisper (``WhisperFeatureExtractor``): log-mel ``input_features [mel, frames]`` of its ``chunk_length`` (30 s),
  padded: a fixed shape, stacked. Its frame mask restricts the mean to the frames of the clip;
- wav2vec2-likes (``Wav2Vec2FeatureExtractor``): the normalised waveform ``input_values [samples]`` of variable
  length, padded per batch by the extractor (``pad``; attention mask 0 on padding). The mask is given to the model
  when the extractor says so (``return_attention_mask``, true for the layer-norm variants, whose outputs padding
  then leaves unchanged), and always restricts the mean to the frames of the clip.

``clip_seconds``: clips longer than this are cut to it (``0``: keep whole clips) -- at a random offset when
training, the first ``clip_seconds`` otherwise, so ``preprocess(x, train=False)`` is deterministic. ``hidden``: the
head's hidden widths. Fine-tuning: ``tower``, ``unfreeze_last`` (the transformer layers: see
:func:`mmcore_media._text_model.transformer_blocks`), ``[lora]`` (peft has no default targets for these models: name
them, e.g. ``["q_proj", "v_proj"]`` for wav2vec2 and Whisper, ``["query", "value"]`` for AST).

When ``context.pretrained`` is False the tower is built from its ``AutoConfig`` alone (no weight file is read); the
feature extractor (no weights) is always loaded.
"""

from __future__ import annotations

import attrs

import mmcore

from .text import check_media
from .tuning import LoraSettings, TowerMode, check_tuning

HF_AUDIO_INSTALL = 'pip install "mmcore-media[hf-audio]"'


@attrs.frozen
class HfAudioConfig:
    """``[encoders.<m>]`` of ``hf_audio``: see the module docstring."""

    model: str = ""
    clip_seconds: float = 10.0
    hidden: list[int] = attrs.field(factory=list)
    tower: TowerMode = "train"
    unfreeze_last: int = 0
    lora: LoraSettings = attrs.field(factory=LoraSettings)


def check_audio_settings(config: HfAudioConfig) -> None:
    """ConfigError for a missing model, a negative clip length or a bad hidden width (no library needed)."""
    if not config.model:
        raise mmcore.ConfigError("model", "name the audio model: a hub id (e.g. \"MIT/ast-finetuned-audioset-10-10-"
                                          "0.4593\") or a local directory with the model and its feature extractor")
    if config.clip_seconds < 0:
        raise mmcore.ConfigError("clip_seconds", f"must be >= 0 (0 keeps whole clips), got {config.clip_seconds}")
    for index, width in enumerate(config.hidden):
        if width <= 0:
            raise mmcore.ConfigError(f"hidden[{index}]", f"must be > 0, got {width}")
    check_tuning(config.tower, config.unfreeze_last, config.lora)


def build_hf_audio(config: HfAudioConfig, context: mmcore.EncoderContext):
    check_audio_settings(config)
    check_media(context, "audio", "hf_audio")
    try:
        import transformers  # noqa: F401
    except ImportError as exc:
        raise mmcore.ConfigError("name", f"hf_audio needs transformers: {HF_AUDIO_INSTALL}") from exc
    from . import _hf_audio_model

    return _hf_audio_model.build(config, context)


COMPONENTS = [
    mmcore.Component("hf_audio", HfAudioConfig, build_hf_audio,
                     "transformers audio tower (AST, wav2vec2, Whisper's encoder) through its feature extractor, "
                     "mean-pooled + projection head"),
]
