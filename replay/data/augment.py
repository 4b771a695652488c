"""Augmented copies of the training stimuli, for teaching the encoders (`agent.core.teaching`).

Every real user is a hand and a voice the agent never met, so the encoders are
taught on varied copies of what they saw and heard:

* images (kornia): random affine (rotation, shift, scale, shear), elastic
  distortion, and stroke width (grey dilation or erosion);
* sounds (audiomentations on the waveform, then the usual log-mel features):
  tempo, pitch, gain, white noise and babble (other training clips mixed in) at
  0-30 dB SNR;
* sounds that exist only as spectrograms (a live agent's experience, for sleep;
  kornia): a shift and stretch in time, a small shift and stretch in pitch (mel
  bins), and a short gap in time (a few frames masked across most mel bins).

Both are seeded: the same seed gives the same copies. Shapes and the [0, 1]
range of the stimuli are kept.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch

from agent.core import global_rng
from sensors.file_reading import read_wav_file
from sensors.sound_features import audio_to_stimulus

IMAGE_DEGREES = 15.0
IMAGE_SHIFT = 0.1  # of the image side
IMAGE_SCALE = (0.85, 1.15)
IMAGE_SHEAR = 15.0  # degrees
NOISE_SNR_DB = (0.0, 30.0)
SPEC_TIME_SHIFT = 0.1  # of the clip
SPEC_MEL_SHIFT = 0.03  # of the mel range (about 2 bins)
SPEC_TIME_STRETCH = (0.85, 1.15)
SPEC_MEL_STRETCH = (0.95, 1.05)


@contextmanager
def torch_seeded(seed: int) -> Iterator[None]:
    """Torch's global generator seeded for the span (kornia draws from it), then put back as it was;
    held under `global_rng.TORCH`, so augmenting in threads gives the bits of one after the other."""
    with global_rng.TORCH:
        state = torch.random.get_rng_state()
        torch.manual_seed(seed)
        try:
            yield
        finally:
            torch.random.set_rng_state(state)


class ImageAugmenter:
    """Random affine, elastic distortion and stroke width of (n, 28, 28) images in [0, 1]."""

    def __init__(self) -> None:
        import kornia.augmentation as K

        self.geometry = torch.nn.Sequential(
            K.RandomAffine(degrees=IMAGE_DEGREES, translate=(IMAGE_SHIFT, IMAGE_SHIFT), scale=IMAGE_SCALE,
                           shear=IMAGE_SHEAR, p=0.9),
            K.RandomElasticTransform(kernel_size=(15, 15), sigma=(4.0, 4.0), alpha=(1.0, 1.0), p=0.5),
        )
        self.kernel = torch.ones(2, 2)

    @torch.no_grad()
    def __call__(self, x: torch.Tensor, seed: int) -> torch.Tensor:
        from kornia.morphology import dilation, erosion

        with torch_seeded(seed):
            out = self.geometry(x.unsqueeze(1))
            pick = torch.rand(len(x))
        thick, thin = pick < 0.2, (pick >= 0.2) & (pick < 0.35)
        if thick.any():
            out[thick] = dilation(out[thick], self.kernel)
        if thin.any():
            out[thin] = erosion(out[thin], self.kernel)
        return out[:, 0].clamp_(0.0, 1.0)


class SpectrogramAugmenter:
    """Time shift and stretch, small pitch shift and stretch, and a masked gap in time, of (n, 64, 64)
    log-mel spectrograms (mel rows, time columns) in [0, 1]; the floor (0) fills in."""

    def __init__(self) -> None:
        import kornia.augmentation as K

        self.warp = torch.nn.Sequential(
            K.RandomAffine(degrees=0.0, translate=(SPEC_TIME_SHIFT, SPEC_MEL_SHIFT),
                           scale=(*SPEC_TIME_STRETCH, *SPEC_MEL_STRETCH), p=0.9),
            # a gap in time: kornia's ratio is height / width, so 4-16 masks 3-5 frames across 30-60 mel bins
            K.RandomErasing(scale=(0.02, 0.08), ratio=(4.0, 16.0), value=0.0, p=0.3),
        )

    @torch.no_grad()
    def __call__(self, x: torch.Tensor, seed: int) -> torch.Tensor:
        with torch_seeded(seed):
            return self.warp(x.unsqueeze(1))[:, 0].clamp_(0.0, 1.0)


class SoundAugmenter:
    """Tempo, pitch, gain and noise (white or babble) on the waveforms of training clips."""

    def __init__(self, files: Sequence[Path]):
        from audiomentations import AddGaussianSNR, Compose, Gain, PitchShift, TimeStretch

        self.waves = []
        for f in files:
            wave, rate = read_wav_file(f)
            self.waves.append((wave.astype(np.float32), rate))
        self.voice = Compose([
            TimeStretch(min_rate=0.85, max_rate=1.15, p=0.5, leave_length_unchanged=False),
            PitchShift(min_semitones=-2.0, max_semitones=2.0, p=0.5),
            Gain(min_gain_db=-6.0, max_gain_db=6.0, p=0.5),
        ])
        self.white = AddGaussianSNR(min_snr_db=NOISE_SNR_DB[0], max_snr_db=NOISE_SNR_DB[1], p=1.0)

    def __len__(self) -> int:
        return len(self.waves)

    def __call__(self, rows: np.ndarray, seed: int) -> np.ndarray:
        """Augmented (len(rows), 64, 64) spectrograms of training clips `rows`."""
        rng = np.random.default_rng(seed)
        waves = []
        with global_rng.PYTHON_NUMPY:  # audiomentations draws from `random` and numpy's global generator
            random.seed(seed)
            np.random.seed(seed % 2**32)
            for row in rows:
                wave, rate = self.waves[int(row)]
                wave = self.voice(samples=wave, sample_rate=rate)
                noise = rng.random()
                if noise < 0.3:
                    wave = self.white(samples=wave, sample_rate=rate)
                elif noise < 0.6:
                    wave = self._babble(wave, rate, rng)
                waves.append((wave, rate))
        out = np.empty((len(rows), 64, 64), np.float32)
        for k, (wave, rate) in enumerate(waves):
            out[k] = audio_to_stimulus(wave, rate)
        return out

    def _babble(self, wave: np.ndarray, rate: int, rng: np.random.Generator) -> np.ndarray:
        """Three other training clips, mixed under the clip at a random SNR."""
        mix = np.zeros_like(wave)
        for other in rng.integers(0, len(self.waves), 3):
            w, r = self.waves[int(other)]
            if r == rate:
                n = min(len(w), len(wave))
                start = int(rng.integers(0, len(wave) - n + 1))
                mix[start : start + n] += w[:n]
        p_sig, p_mix = float(np.mean(wave**2)), float(np.mean(mix**2))
        if p_sig <= 0 or p_mix <= 0:
            return wave
        snr_db = rng.uniform(*NOISE_SNR_DB)
        return (wave + mix * np.sqrt(p_sig / (p_mix * 10 ** (snr_db / 10)))).astype(np.float32)
