"""Encoder ``audio_cnn``: a torchaudio log-mel front end feeding a timm CNN (one input channel), trained from
scratch by default, then a projection head into the shared space.

    [encoders.audio]
    name = "audio_cnn"
    model = "resnet18"          # any timm model name (CNNs take any spectrogram size; ViT-like ones get it)
    pretrained = ""             # "" random | "hub" timm's ImageNet weights (stem summed to 1 channel) | a file
    sample_rate = 16000         # every clip is resampled to this rate
    clip_seconds = 4.0          # fixed length: cropped (random offset in training, centred in eval) or padded
    n_mels = 64                 # log-mel bins; n_fft = 400, hop_length = 160 (25 ms windows, 10 ms hop at 16 kHz)
    freq_mask = 0               # SpecAugment (training only): largest frequency mask, in mel bins (0 = off)
    time_mask = 0               #                               largest time mask, in frames (0 = off)

How each setting maps onto the libraries:

- waveform: ``decode.read_audio`` (soundfile) -> channel mean (mono) -> ``torchaudio.transforms.Resample(rate,
  sample_rate)`` (one per source rate, its kernel built once) -> ``clip_seconds * sample_rate`` samples (``fixed_length``);
- spectrogram: ``torchaudio.transforms.MelSpectrogram(sample_rate, n_fft, hop_length, n_mels, f_min, f_max)``
  then ``AmplitudeToDB("power", top_db)``; SpecAugment: ``FrequencyMasking(freq_mask)`` and
  ``TimeMasking(time_mask)``, masked cells set to the clip's mean level;
- tower: ``timm.create_model(model, in_chans=1, num_classes=0[, img_size=(n_mels, frames)])``; blocks,
  ``pretrained``, ``tower``/``unfreeze_last``/``lora`` as for ``timm_image``.

Where the mel runs: in ``preprocess``, i.e. in the DataLoader workers on the CPU, one clip at a time. Decoding,
resampling and the mel are then all off the training loop's device and process; the eval transform is
deterministic and identical in training evaluation and ``encode``; batches travel as ``[b, 1, n_mels, frames]``
log-mels (at the defaults 64 x 401 floats, 100 KB a clip, smaller than a 4 s float waveform at 16 kHz would be).
The dB values are normalised in ``forward`` by a batch norm over the mel bins (PANNs' ``bn0``).
"""

from __future__ import annotations

import attrs

import mmcore

from .tuning import LoraSettings, TowerMode, check_tuning

AUDIO_INSTALL = 'pip install "mmcore-media[audio]"'


@attrs.frozen
class AudioCnnConfig:
    """The front end (``sample_rate``, ``clip_seconds``, ``n_mels``, ``n_fft``, ``hop_length``, ``f_min``,
    ``f_max`` (0: half the rate), ``top_db``, SpecAugment ``freq_mask``/``time_mask``), the timm tower
    (``model``, ``pretrained``), the head's ``hidden`` widths and the tuning (see :mod:`mmcore_media.tuning`)."""

    model: str = "resnet18"
    pretrained: str = ""
    sample_rate: int = 16000
    clip_seconds: float = 4.0
    n_mels: int = 64
    n_fft: int = 400
    hop_length: int = 160
    f_min: float = 0.0
    f_max: float = 0.0
    top_db: float = 80.0
    freq_mask: int = 0
    time_mask: int = 0
    hidden: list[int] = attrs.field(factory=list)
    tower: TowerMode = "train"
    unfreeze_last: int = 0
    lora: LoraSettings = LoraSettings()


def front_end(config: AudioCnnConfig):
    """The :class:`~mmcore_media._audio_model.FrontEnd` of ``config``; ConfigError for impossible settings."""
    from ._audio_model import FrontEnd

    for field in ("sample_rate", "n_mels", "n_fft", "hop_length"):
        if getattr(config, field) <= 0:
            raise mmcore.ConfigError(field, f"must be > 0, got {getattr(config, field)}")
    samples = round(config.clip_seconds * config.sample_rate)
    if samples < config.n_fft:
        raise mmcore.ConfigError("clip_seconds", f"{config.clip_seconds} s is {samples} samples at "
                                                 f"{config.sample_rate} Hz, shorter than one window (n_fft = "
                                                 f"{config.n_fft})")
    nyquist = config.sample_rate / 2
    if not 0 <= config.f_min < (config.f_max or nyquist) <= nyquist:
        raise mmcore.ConfigError("f_max", f"need 0 <= f_min < f_max <= {nyquist:g} (half of sample_rate), got "
                                          f"f_min = {config.f_min}, f_max = {config.f_max}")
    front = FrontEnd(config.sample_rate, samples, config.n_fft, config.hop_length, config.n_mels, config.f_min,
                     config.f_max, config.top_db, config.freq_mask, config.time_mask)
    for field, limit in (("freq_mask", config.n_mels), ("time_mask", front.frames)):
        if not 0 <= getattr(config, field) <= limit:
            raise mmcore.ConfigError(field, f"must be between 0 and {limit}, got {getattr(config, field)}")
    return front


def build_audio_cnn(config: AudioCnnConfig, context: mmcore.EncoderContext):
    check_tuning(config.tower, config.unfreeze_last, config.lora)
    try:
        import timm  # noqa: F401
        import torchaudio  # noqa: F401
    except ImportError as exc:
        raise mmcore.ConfigError("name", f"audio_cnn needs timm and torchaudio: {AUDIO_INSTALL} ({exc})") from None
    from . import _image_model as towers
    from ._audio_model import AudioCnnEncoder, LogMel

    front = front_end(config)
    size = (front.n_mels, front.frames)
    tower = towers.create_tower(config.model, config.pretrained, context.pretrained, size, in_chans=1,
                                size_field="n_mels")
    try:
        width = towers.feature_width(tower, (1, *size), size_field="n_mels")
    except mmcore.ConfigError as exc:
        raise mmcore.ConfigError(exc.field, f"{exc} (the log-mel is [1, n_mels, frames], frames = 1 + "
                                            "clip_seconds * sample_rate // hop_length)") from None
    tuned, trainable = towers.tune(tower, config.tower, config.unfreeze_last, config.lora, context.modality)
    head = towers.projection_head(width, list(config.hidden), context.embed_dim)
    return AudioCnnEncoder(tuned, head, config.tower == "frozen", trainable, LogMel(front))


COMPONENTS = [
    mmcore.Component("audio_cnn", AudioCnnConfig, build_audio_cnn,
                     "torchaudio log-mel front end (resample, fixed clip, SpecAugment) + a timm CNN from scratch "
                     "+ projection head"),
]
