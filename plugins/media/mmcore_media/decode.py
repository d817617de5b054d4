"""Reading one media item into the decoded form every encoder of this plugin accepts.

The forms (what a dataset yields for a modality whose input is ``InputSpec.media(kind)``, and what
``encode(modality, [...])`` may be given):

- image: a ``PIL.Image.Image`` (converted to RGB here), an ``[H, W, 3]`` uint8 array, or a file path;
- audio: a ``(waveform, sample_rate)`` pair, ``waveform`` a float array ``[samples]`` or ``[channels, samples]``,
  or a file path (any format libsndfile reads: WAV, FLAC, OGG, ...); returned as ``([channels, samples]
  float32, sample_rate)``;
- text:  a non-empty ``str``.

Every failure is a :class:`MediaError` whose message names the file. Decoding uses Pillow and soundfile (both
plain wheels); resampling uses scipy's polyphase filter, so nothing here needs torchvision or torchaudio.
"""

from __future__ import annotations

import os
from fractions import Fraction

import numpy as np


class MediaError(ValueError):
    """A media item that cannot be decoded; ``source`` is the file (or a description of the value)."""

    def __init__(self, source, message: str):
        super().__init__(f"{source}: {message}")
        self.source = str(source)


def _is_path(value) -> bool:
    return isinstance(value, (str, os.PathLike))


def read_image(source):
    """A ``PIL.Image.Image`` in RGB from a path, an image or an ``[H, W, 3]`` / ``[H, W]`` uint8 array."""
    from PIL import Image, UnidentifiedImageError

    if isinstance(source, Image.Image):
        return source.convert("RGB")
    if isinstance(source, np.ndarray):
        if source.ndim not in (2, 3) or source.dtype != np.uint8:
            raise MediaError("array", f"expected a uint8 array [H, W, 3] or [H, W], got {source.dtype}{list(source.shape)}")
        return Image.fromarray(source).convert("RGB")
    if not _is_path(source):
        raise MediaError(repr(source)[:80], f"expected an image file path or a PIL image, got {type(source).__name__}")
    try:
        with Image.open(source) as image:
            image.load()  # decode now: a truncated file fails here, not inside a transform
            return image.convert("RGB")
    except FileNotFoundError:
        raise MediaError(source, "no such file") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise MediaError(source, f"cannot decode the image ({type(exc).__name__}: {exc})") from None


def read_audio(source):
    """``(waveform [channels, samples] float32, sample_rate)`` from a path or a ``(waveform, rate)`` pair."""
    if isinstance(source, tuple) and len(source) == 2:
        wave, rate = source
        wave = np.asarray(wave, dtype=np.float32)
        if wave.ndim == 1:
            wave = wave[None]
        if wave.ndim != 2 or wave.shape[1] == 0:
            raise MediaError("waveform", f"expected a waveform [samples] or [channels, samples], got {list(wave.shape)}")
        return wave, int(rate)
    if not _is_path(source):
        raise MediaError(repr(source)[:80], "expected an audio file path or a (waveform, sample_rate) pair, "
                                            f"got {type(source).__name__}")
    import soundfile

    if not os.path.exists(source):  # libsndfile reports a missing file only as "System error"
        raise MediaError(source, "no such file")
    try:
        wave, rate = soundfile.read(os.fspath(source), dtype="float32", always_2d=True)
    except FileNotFoundError:
        raise MediaError(source, "no such file") from None
    except (soundfile.LibsndfileError, RuntimeError, OSError, ValueError) as exc:
        raise MediaError(source, f"cannot decode the audio ({exc})") from None
    if wave.shape[0] == 0:
        raise MediaError(source, "the audio holds no samples")
    return np.ascontiguousarray(wave.T), int(rate)


def read_text(source) -> str:
    """The text itself: a non-empty string (surrounding whitespace stripped)."""
    if not isinstance(source, str):
        raise MediaError(repr(source)[:80], f"expected a string, got {type(source).__name__}")
    text = source.strip()
    if not text:
        raise MediaError(repr(source), "empty text")
    return text


def resample(wave, rate: int, target: int):
    """``wave [channels, samples]`` at ``rate`` -> at ``target`` (scipy polyphase; a no-op when equal)."""
    if rate == target:
        return wave
    from scipy.signal import resample_poly

    ratio = Fraction(target, rate).limit_denominator(1000)
    return resample_poly(wave, ratio.numerator, ratio.denominator, axis=-1).astype(np.float32)


def mono(wave):
    """``[channels, samples]`` -> ``[samples]``, the channel mean."""
    return wave.mean(axis=0) if wave.ndim == 2 else wave


READERS = {"image": read_image, "audio": read_audio, "text": read_text}
"""media kind -> reader, for datasets and encoders that dispatch on ``InputSpec.media``."""
