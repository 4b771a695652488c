"""Sounds become model input here, and model output sound again: a (64, 64) float32 log-mel
spectrogram in [0, 1] of 1 s at 8 kHz, rows the mel bands (low to high), columns the time frames.
The datasets, the microphone, `cdz recall` and the speaker all call these functions, so a model
trained on files hears exactly what it later hears from a microphone.
"""

from __future__ import annotations

import functools
import math

import numpy as np

from sensors.errors import FeatureError

SAMPLE_RATE = 8000
N_MELS = 64
N_FRAMES = 64
HOP = 125
N_FFT = 256  # 64 frames x 125 samples = 1 s at 8 kHz

N_SAMPLES = N_FRAMES * HOP  # samples in one stimulus (1 s)
TOP_DB = 80.0  # dynamic range kept below each utterance's loudest bin
F_MAX = SAMPLE_RATE / 2.0
MIN_DURATION_S = 0.010  # shorter clips carry no usable spectrum
_PAD = N_FFT // 2  # frames are centred on t * HOP




@functools.lru_cache(maxsize=1)
def _window() -> np.ndarray:
    """Periodic Hann window (the STFT/ISTFT pair below is built on it)."""
    n = np.arange(N_FFT)
    win = 0.5 - 0.5 * np.cos(2.0 * np.pi * n / N_FFT)
    win.setflags(write=False)
    return win


def _hz_to_mel(hz: np.ndarray) -> np.ndarray:
    """Slaney mel scale: linear below 1 kHz, logarithmic above.

    Chosen over HTK because at 64 bands over 0-4 kHz the HTK low bands would be
    narrower than one FFT bin (31.25 Hz) and come out empty.
    """
    hz = np.asarray(hz, dtype=np.float64)
    f_sp, min_log_hz = 200.0 / 3.0, 1000.0
    min_log_mel, logstep = min_log_hz / f_sp, math.log(6.4) / 27.0
    return np.where(hz < min_log_hz, hz / f_sp,
                    min_log_mel + np.log(np.maximum(hz, 1e-12) / min_log_hz) / logstep)


def _mel_to_hz(mel: np.ndarray) -> np.ndarray:
    """Inverse of :func:`_hz_to_mel`."""
    mel = np.asarray(mel, dtype=np.float64)
    f_sp, min_log_hz = 200.0 / 3.0, 1000.0
    min_log_mel, logstep = min_log_hz / f_sp, math.log(6.4) / 27.0
    return np.where(mel < min_log_mel, mel * f_sp,
                    min_log_hz * np.exp(logstep * (mel - min_log_mel)))


@functools.lru_cache(maxsize=1)
def mel_filterbank() -> np.ndarray:
    """(N_MELS, N_FFT//2+1) triangular, area-normalised mel filters, 0 Hz to 4 kHz."""
    fft_hz = np.linspace(0.0, SAMPLE_RATE / 2.0, N_FFT // 2 + 1)
    edges_hz = _mel_to_hz(np.linspace(_hz_to_mel(0.0), _hz_to_mel(F_MAX), N_MELS + 2))
    lower, centre, upper = edges_hz[:-2, None], edges_hz[1:-1, None], edges_hz[2:, None]
    rising = (fft_hz[None, :] - lower) / (centre - lower)
    falling = (upper - fft_hz[None, :]) / (upper - centre)
    fb = np.maximum(0.0, np.minimum(rising, falling))
    fb *= (2.0 / (upper - lower))  # equal area: a flat spectrum gives flat bands
    fb.setflags(write=False)
    return fb


@functools.lru_cache(maxsize=1)
def _mel_pinv() -> np.ndarray:
    """Pseudo-inverse of the filterbank, for turning mel power back into FFT power."""
    pinv = np.linalg.pinv(mel_filterbank())
    pinv.setflags(write=False)
    return pinv


def _matmul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Small matrix product without BLAS.

    Multi-threaded BLAS spends ~10 ms per tiny product on a busy machine (thread
    wake-ups), which made featurising FSDD 50x slower; einsum's own loop does not.
    """
    return np.einsum("ij,jk->ik", a, b)


def audio_to_stimulus(wave: np.ndarray, sample_rate: int) -> np.ndarray:
    """Waveform of any rate -> (64, 64) float32 log-mel spectrogram in [0, 1].

    The clip is resampled to 8 kHz and cut to 1 s centred on its energy, so a
    word in a long recording is kept whole. Each spectrogram is scaled to its
    own loudest bin (1.0) with an 80 dB floor (0.0), so loudness does not matter.
    """
    mono = _validate_wave(wave, sample_rate)
    mono = _resample(mono, int(sample_rate))
    mono = mono - mono.mean()  # DC offset would light up the lowest band
    if not np.any(mono):
        raise FeatureError("audio is silent (constant after resampling)")
    clip = _centre_crop(mono, N_SAMPLES)
    power = np.abs(_stft(clip)) ** 2                   # (freq, time)
    mel = _matmul(mel_filterbank(), power)             # (mel, time)
    peak = float(mel.max())
    if peak <= 0.0:
        raise FeatureError("audio is silent (no spectral energy)")
    db = 10.0 * np.log10(np.maximum(mel / peak, 10.0 ** (-TOP_DB / 10.0)))
    return ((db + TOP_DB) / TOP_DB).astype(np.float32)


def _validate_wave(wave: np.ndarray, sample_rate: int) -> np.ndarray:
    """Check a waveform and return it as a 1-D float64 mono signal."""
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, (int, np.integer)) \
            or sample_rate <= 0:
        raise FeatureError(f"sample_rate must be a positive integer, got {sample_rate!r}")
    arr = np.asarray(wave)
    if arr.size == 0:
        raise FeatureError(f"audio is empty (shape {arr.shape})")
    if not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)):
        raise FeatureError(f"audio has unsupported dtype {arr.dtype}")
    if arr.ndim == 2:
        # (samples, channels) as read from wav files; (channels, samples) if clearly so
        channel_axis = 0 if arr.shape[0] < arr.shape[1] and arr.shape[0] <= 8 else 1
        arr = arr.astype(np.float64).mean(axis=channel_axis)
    elif arr.ndim != 1:
        raise FeatureError(f"audio must be 1-D (mono) or 2-D (multi-channel), got shape {arr.shape}")
    arr = arr.astype(np.float64)
    if not np.all(np.isfinite(arr)):
        raise FeatureError("audio contains NaN or infinite values")
    if arr.shape[0] < MIN_DURATION_S * sample_rate:
        raise FeatureError(
            f"audio is too short: {arr.shape[0]} samples at {sample_rate} Hz "
            f"({1000.0 * arr.shape[0] / sample_rate:.1f} ms < {1000 * MIN_DURATION_S:.0f} ms)")
    if not np.any(arr):
        raise FeatureError("audio is silent (all samples are zero)")
    return arr


def _resample(mono: np.ndarray, sample_rate: int) -> np.ndarray:
    """Polyphase resampling to SAMPLE_RATE (exact for any integer rate)."""
    if sample_rate == SAMPLE_RATE:
        return mono
    g = math.gcd(sample_rate, SAMPLE_RATE)
    from scipy.signal import resample_poly  # heavy to import: only when audio needs resampling

    return resample_poly(mono, SAMPLE_RATE // g, sample_rate // g)


def _centre_crop(mono: np.ndarray, length: int) -> np.ndarray:
    """Cut or zero-pad to `length` samples centred on the energy-weighted centre."""
    energy = mono * mono
    centre = int(round(float(np.dot(np.arange(mono.shape[0]), energy) / energy.sum())))
    start = centre - length // 2
    out = np.zeros(length, dtype=np.float64)
    src_lo, src_hi = max(start, 0), min(start + length, mono.shape[0])
    out[src_lo - start:src_hi - start] = mono[src_lo:src_hi]
    return out


def _frame_index() -> np.ndarray:
    """(N_FRAMES, N_FFT) sample indices into the padded signal."""
    return np.arange(N_FRAMES)[:, None] * HOP + np.arange(N_FFT)[None, :]


def _stft(clip: np.ndarray) -> np.ndarray:
    """(N_FFT//2+1, N_FRAMES) complex STFT of a 1 s clip, frames centred on t*HOP."""
    padded = np.pad(clip, (_PAD, _PAD))
    frames = padded[_frame_index()] * _window()
    return np.fft.rfft(frames, axis=1).T


def _istft(spec: np.ndarray) -> np.ndarray:
    """Weighted overlap-add inverse of :func:`_stft` (least-squares for a given STFT)."""
    frames = np.fft.irfft(spec.T, n=N_FFT, axis=1) * _window()
    total = N_SAMPLES + 2 * _PAD
    out = np.zeros(total)
    norm = np.zeros(total)
    idx = _frame_index()
    np.add.at(out, idx, frames)
    np.add.at(norm, idx, np.broadcast_to(_window() ** 2, idx.shape))
    out = np.where(norm > 1e-8, out / np.maximum(norm, 1e-8), 0.0)
    return out[_PAD:_PAD + N_SAMPLES]


def spectrogram_to_audio(spec: np.ndarray, n_iter: int = 32) -> np.ndarray:
    """(64, 64) stimulus -> 1 s float32 waveform at 8 kHz, for listening to recalls.

    Mel power is mapped back to FFT power with the filterbank pseudo-inverse and
    the missing phase is estimated with Griffin-Lim (fixed seed, so it is
    repeatable). Loudness was discarded by the features; the result is scaled
    to a peak of 0.9.
    """
    arr = np.asarray(spec, dtype=np.float64)
    if arr.shape != (N_MELS, N_FRAMES):
        raise FeatureError(f"spectrogram must have shape ({N_MELS}, {N_FRAMES}), got {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise FeatureError("spectrogram contains NaN or infinite values")
    if n_iter < 0:
        raise FeatureError(f"n_iter must be >= 0, got {n_iter}")
    mel_power = 10.0 ** ((np.clip(arr, 0.0, 1.0) * TOP_DB - TOP_DB) / 10.0)
    magnitude = np.sqrt(np.maximum(_matmul(_mel_pinv(), mel_power), 0.0))
    phase = np.exp(2j * np.pi * np.random.default_rng(0).random(magnitude.shape))
    for _ in range(n_iter):
        rebuilt = _stft(_istft(magnitude * phase))
        phase = rebuilt / np.maximum(np.abs(rebuilt), 1e-12)
    wave = _istft(magnitude * phase)
    peak = float(np.abs(wave).max())
    return (wave * (0.9 / peak) if peak > 0 else wave).astype(np.float32)
