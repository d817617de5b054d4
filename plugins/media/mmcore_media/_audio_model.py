"""The ``audio_cnn`` module: a torchaudio log-mel front end (in ``preprocess``) feeding a timm CNN with one
input channel, then the projection head.

Imported by the build only (torch, torchaudio and timm at module level).

``preprocess(raw, train) -> [1, n_mels, frames]`` float32 log-mel (dB), with ``frames = 1 + samples //
hop_length`` and ``samples = round(clip_seconds * sample_rate)``; it runs in the DataLoader workers.
``forward(log_mel [b, 1, n_mels, frames]) -> [b, embed_dim]``: a batch norm over the mel bins (PANNs' ``bn0``:
the dB scale is normalised by learned statistics, so preprocessing needs no dataset statistics), the tower,
the head.
"""

from __future__ import annotations

import attrs
import torch
import torchaudio
from torch import nn

from ._image_model import TunedTower, _Unregistered


@attrs.frozen
class FrontEnd:
    """Waveform -> log-mel, for one clip. ``clip_samples`` long at ``sample_rate``; ``freq_mask`` /
    ``time_mask``: SpecAugment's largest mask widths (mel bins, frames; 0 = none), applied in training only."""

    sample_rate: int
    clip_samples: int
    n_fft: int
    hop_length: int
    n_mels: int
    f_min: float
    f_max: float
    top_db: float
    freq_mask: int
    time_mask: int

    @property
    def frames(self) -> int:
        return 1 + self.clip_samples // self.hop_length

    def transforms(self):
        """``(mel, to_db, masks)``: torchaudio's ``MelSpectrogram``, ``AmplitudeToDB`` and the SpecAugment
        maskings (``FrequencyMasking``, ``TimeMasking``)."""
        from torchaudio import transforms as T

        mel = T.MelSpectrogram(self.sample_rate, n_fft=self.n_fft, hop_length=self.hop_length, n_mels=self.n_mels,
                               f_min=self.f_min, f_max=self.f_max or None)
        masks = ([T.FrequencyMasking(self.freq_mask)] if self.freq_mask else []) + \
                ([T.TimeMasking(self.time_mask)] if self.time_mask else [])
        return mel, T.AmplitudeToDB("power", top_db=self.top_db), masks


def fixed_length(wave: torch.Tensor, samples: int, train: bool) -> torch.Tensor:
    """``[n] -> [samples]``: a longer clip is cropped (at a random offset in training, centred otherwise), a
    shorter one zero-padded at the end."""
    extra = wave.shape[0] - samples
    if extra > 0:
        start = int(torch.randint(0, extra + 1, ())) if train else extra // 2
        return wave[start:start + samples]
    return nn.functional.pad(wave, (0, -extra))


class LogMel:
    """The front end as a callable on a decoded or path audio item (see the module docstring)."""

    def __init__(self, front: FrontEnd):
        self.front = front
        self.mel, self.to_db, self.masks = front.transforms()
        self._resamplers: dict = {}  # source rate -> torchaudio.transforms.Resample (its sinc kernel built once)

    def resample(self, wave: torch.Tensor, rate: int) -> torch.Tensor:
        """``[n]`` at ``rate`` -> at the front end's rate (``torchaudio.transforms.Resample``, cached per rate)."""
        if rate == self.front.sample_rate:
            return wave
        if rate not in self._resamplers:
            self._resamplers[rate] = torchaudio.transforms.Resample(rate, self.front.sample_rate)
        return self._resamplers[rate](wave)

    @torch.no_grad()
    def __call__(self, raw, train: bool = False) -> torch.Tensor:
        from .decode import read_audio

        wave, rate = read_audio(raw)
        wave = self.resample(torch.from_numpy(wave).mean(dim=0), rate)  # mono, at sample_rate
        wave = fixed_length(wave, self.front.clip_samples, train)
        spec = self.to_db(self.mel(wave[None]))  # [1, n_mels, frames]
        if train:
            for mask in self.masks:
                spec = mask(spec, mask_value=float(spec.mean()))  # masked cells at the clip's mean level
        return spec.contiguous()


class AudioCnnEncoder(TunedTower):
    """See the module docstring."""

    def __init__(self, tower, head, frozen, trainable_blocks, log_mel: LogMel):
        super().__init__(tower, head, frozen, trainable_blocks)
        self.input_norm = nn.BatchNorm2d(log_mel.front.n_mels)
        self.log_mel = _Unregistered(log_mel)

    def preprocess(self, raw, train: bool = False) -> torch.Tensor:
        return self.log_mel.value(raw, train)

    def forward(self, log_mel):
        x = self.input_norm(log_mel.transpose(1, 2)).transpose(1, 2)  # normalise each mel bin
        return self.head(self.tower(x))
