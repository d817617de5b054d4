"""The ``hf_audio`` module (see :mod:`mmcore_media.hf_audio`). Imported by the build only (torch and transformers
at module level)."""

from __future__ import annotations

import inspect

import torch
from torch import nn

import mmcore

from ._text_model import load_processor, load_tower, model_source, projection_head, tuned
from .decode import mono, read_audio, resample

MASK = "attention_mask"


def crop(wave, length: int, train: bool):
    """``wave [samples]`` cut to at most ``length`` samples: a random window when ``train`` (torch's RNG, which the
    DataLoader seeds per worker), else the first ``length``; ``length = 0`` keeps it whole."""
    if not length or wave.shape[-1] <= length:
        return wave
    start = int(torch.randint(0, wave.shape[-1] - length + 1, ())) if train else 0
    return wave[start:start + length]


def frame_mask(tower: nn.Module, mask, frames: int):
    """``mask [B, L]`` over the tower's input -> ``[B, frames]`` over its output: the model's own rule where it has
    one (wav2vec2-likes: ``_get_feature_vector_attention_mask``, exact for its convolutions), else input positions
    sampled evenly (exact for Whisper's stride-2 encoder)."""
    own = getattr(tower, "_get_feature_vector_attention_mask", None)
    if own is not None:
        return own(frames, mask)
    index = torch.arange(frames, device=mask.device) * mask.shape[1] // frames
    return mask[:, index]


def _accepts(module: nn.Module, name: str) -> bool:
    parameters = inspect.signature(module.forward).parameters
    return name in parameters or any(p.kind is p.VAR_KEYWORD for p in parameters.values())


class HfAudio(nn.Module):
    """``forward({input_values | input_features: [b, ...], attention_mask?: [b, L]}) -> [b, embed_dim]``;
    ``preprocess`` and ``collate`` use only the feature extractor (they run in DataLoader workers)."""

    def __init__(self, tower: nn.Module, extractor, head: nn.Module, clip_seconds: float, mask_to_model: bool):
        super().__init__()
        self.tower = tower
        self.head = head
        self.extractor = extractor
        self.input_name = extractor.model_input_names[0]
        self.rate = int(extractor.sampling_rate)
        self.clip_samples = int(round(clip_seconds * self.rate))
        self.mask_to_model = mask_to_model

    def preprocess(self, raw, train: bool = False) -> dict:
        """One clip (a path or ``(wave, rate)``) -> the extractor's tensors for it, without the batch dimension:
        ``{input_values | input_features: [...] float32[, attention_mask: [L] long]}``. An undecodable file is a
        :class:`mmcore_media.decode.MediaError` naming it."""
        wave, rate = read_audio(raw)
        wave = crop(resample(mono(wave), rate, self.rate), self.clip_samples, train)
        features = self.extractor(wave, sampling_rate=self.rate, return_tensors="pt", return_attention_mask=True)
        out = {self.input_name: features[self.input_name][0].float()}
        if MASK in features:
            out[MASK] = features[MASK][0].long()
        return out

    def collate(self, values: list) -> dict:
        """Per-clip dicts -> ``{name: [B, ...]}``: stacked when the shapes agree, else padded by the extractor
        (waveform models: ``input_values`` with its padding value, ``attention_mask`` with 0)."""
        values = list(values)
        if len({tuple(v[self.input_name].shape) for v in values}) > 1:
            padded = self.extractor.pad(values, return_tensors="pt", return_attention_mask=True)
            return {self.input_name: padded[self.input_name].float(), MASK: padded[MASK].long()}
        return {name: torch.stack([v[name] for v in values]) for name in values[0]}

    def forward(self, inputs: dict):
        mask = inputs.get(MASK)
        arguments = {self.input_name: inputs[self.input_name]}
        if self.mask_to_model and mask is not None:
            arguments[MASK] = mask
        hidden = self.tower(**arguments).last_hidden_state  # [b, T, H]
        if mask is None:
            return self.head(hidden.mean(1))
        weights = frame_mask(self.tower, mask, hidden.shape[1]).to(hidden.dtype).unsqueeze(-1)
        return self.head((hidden * weights).sum(1) / weights.sum(1).clamp_min(1.0))


def _encoder_only(model: nn.Module) -> nn.Module:
    """Whisper and other encoder-decoders: the encoder (the decoder has nothing to say about a clip)."""
    if getattr(model.config, "is_encoder_decoder", False):
        return model.get_encoder()
    return model


def build(config, context: mmcore.EncoderContext) -> HfAudio:
    from transformers import AutoFeatureExtractor, AutoModel

    source, local = model_source(config.model)
    extractor = load_processor(AutoFeatureExtractor, source, local)
    if not hasattr(extractor, "sampling_rate") or not getattr(extractor, "model_input_names", None):
        raise mmcore.ConfigError("model", f"{source}: {type(extractor).__name__} is not an audio feature extractor")
    tower = _encoder_only(load_tower(AutoModel, source, local, context.pretrained))
    width = tower.config.hidden_size
    mask_to_model = bool(getattr(extractor, "return_attention_mask", False)) and _accepts(tower, MASK)
    tower = tuned(tower, config, context.modality)
    head = projection_head(width, list(config.hidden), context.embed_dim)
    return HfAudio(tower, extractor, head, config.clip_seconds, mask_to_model)
