"""Turn raw images and sounds into model input.

This is the one place where raw data becomes a stimulus: the datasets, the live
sensors and the "listen to a recall" tools all call these functions, so a model
trained on files sees exactly what it later sees from a camera or microphone.

* images -> (28, 28) float32 in [0, 1], ink bright on a dark background (MNIST).
* sounds -> (64, 64) float32 in [0, 1] log-mel spectrogram of 1 s at 8 kHz,
  rows are mel bands (low to high), columns are time frames.
"""

from __future__ import annotations

import functools
import math
import warnings
from pathlib import Path

import cv2
import numpy as np

SAMPLE_RATE = 8000
N_MELS = 64
N_FRAMES = 64
HOP = 125
N_FFT = 256  # 64 frames x 125 samples = 1 s at 8 kHz
IMAGE_SIZE = 28

N_SAMPLES = N_FRAMES * HOP  # samples in one stimulus (1 s)
TOP_DB = 80.0  # dynamic range kept below each utterance's loudest bin
F_MAX = SAMPLE_RATE / 2.0
MIN_DURATION_S = 0.010  # shorter clips carry no usable spectrum
_PAD = N_FFT // 2  # frames are centred on t * HOP


class FeatureError(ValueError):
    """Raw input that cannot become a stimulus; the message says what was wrong."""


# --------------------------------------------------------------------------- images


def image_to_stimulus(img: np.ndarray) -> np.ndarray:
    """Any grey or colour image -> (28, 28) float32 in [0, 1], ink bright on dark.

    Colour channels are averaged (so RGB and BGR give the same result; alpha is
    ignored). A bright background (median above mid-grey) is inverted so that
    photos of dark ink on paper look like MNIST. Non-square images are padded
    with their background value to a square first, so digits keep their shape.
    """
    grey = _to_unit_grey(img)
    if np.median(grey) > 0.5:
        grey = 1.0 - grey
    if grey.shape != (IMAGE_SIZE, IMAGE_SIZE):
        grey = _pad_to_square(grey)
        grey = cv2.resize(grey.astype(np.float32), (IMAGE_SIZE, IMAGE_SIZE),
                          interpolation=cv2.INTER_AREA)
    return np.clip(grey, 0.0, 1.0).astype(np.float32)


def _to_unit_grey(img: np.ndarray) -> np.ndarray:
    """Validate an image and return a 2-D float64 copy scaled to [0, 1]."""
    arr = np.asarray(img)
    if arr.size == 0:
        raise FeatureError(f"image is empty (shape {arr.shape})")
    if not (arr.ndim == 2 or (arr.ndim == 3 and arr.shape[2] in (1, 3, 4))):
        raise FeatureError(f"image must be HxW or HxWx1/3/4, got shape {arr.shape}")
    if arr.ndim == 3:
        arr = arr[..., :3]  # alpha is ignored
    arr = _scale_to_unit(arr)
    if arr.ndim == 3:
        arr = arr.mean(axis=2)
    arr = arr.astype(np.float64, copy=False)
    if not np.all(np.isfinite(arr)):
        raise FeatureError("image contains NaN or infinite values")
    if float(arr.max() - arr.min()) < 1.0 / 255.0:
        raise FeatureError(
            f"image is blank: no contrast at all (all pixels ~{float(arr.mean()):.3g})")
    return arr


def _scale_to_unit(arr: np.ndarray) -> np.ndarray:
    """Map pixel values to [0, 1] according to their type and range."""
    if arr.dtype == np.bool_:
        return arr.astype(np.float64)
    if arr.dtype == np.uint8:
        return arr.astype(np.float64) / 255.0
    if np.issubdtype(arr.dtype, np.unsignedinteger):
        return arr.astype(np.float64) / float(np.iinfo(arr.dtype).max)
    if not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)):
        raise FeatureError(f"image has unsupported dtype {arr.dtype}")
    arr = arr.astype(np.float64)
    if not np.all(np.isfinite(arr)):
        raise FeatureError("image contains NaN or infinite values")
    lo, hi = float(arr.min()), float(arr.max())
    if lo >= 0.0 and hi <= 1.0:
        return arr
    if lo >= 0.0 and hi <= 255.0:
        return arr / 255.0  # floats holding 8-bit values
    return (arr - lo) / (hi - lo) if hi > lo else arr - lo


def _pad_to_square(grey: np.ndarray) -> np.ndarray:
    """Pad with the background (median) value so resizing keeps the aspect ratio."""
    h, w = grey.shape
    if h == w:
        return grey
    side = max(h, w)
    top, left = (side - h) // 2, (side - w) // 2
    out = np.full((side, side), np.median(grey), dtype=np.float64)
    out[top:top + h, left:left + w] = grey
    return out


MNIST_BOX = 20  # MNIST fits each digit's ink box into 20x20 ...
MNIST_CENTRE = 14  # ... and shifts its centre of mass to pixel (14, 14) of the 28x28 field
_INK_BOX_LEVEL = 0.15  # ink fainter than this share of the peak (blur halo, noise) does not widen the box


def ink_to_mnist(grey_ink: np.ndarray) -> np.ndarray:
    """A crop with bright ink on dark (float in [0, 1]) -> (28, 28) float32 made the way MNIST was.

    The ink's bounding box is scaled (aspect kept, anti-aliased) to fit 20x20 and
    placed so that its centre of mass falls on pixel (14, 14), shifted by whole
    pixels and clipped at the border, as LeCun et al. did. The ink is scaled to a
    peak of 1 first, because a camera's contrast varies while MNIST's does not.
    A camera crop then looks like a training digit whatever its size and position.
    """
    arr = np.asarray(grey_ink, dtype=np.float64)
    if arr.ndim != 2 or arr.size == 0:
        raise FeatureError(f"ink crop must be a non-empty 2-D array, got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise FeatureError("ink crop contains NaN or infinite values")
    arr = np.clip(arr, 0.0, 1.0)
    peak = float(arr.max())
    if peak < 1.0 / 255.0:
        raise FeatureError(f"ink crop of shape {arr.shape} is blank (no ink)")
    arr = arr / peak
    rows = np.flatnonzero((arr > _INK_BOX_LEVEL).any(axis=1))
    cols = np.flatnonzero((arr > _INK_BOX_LEVEL).any(axis=0))
    box = arr[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1].astype(np.float32)
    h, w = box.shape
    scale = MNIST_BOX / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))  # cv2 wants (width, height)
    interp = cv2.INTER_AREA if scale < 1.0 else cv2.INTER_LINEAR
    small = np.clip(cv2.resize(box, size, interpolation=interp), 0.0, 1.0)
    return _place_by_mass(small)


def _place_by_mass(small: np.ndarray) -> np.ndarray:
    """Paste `small` into a 28x28 field with its centre of mass on (14, 14) (whole-pixel shift, clipped)."""
    mass = float(small.sum())
    ys, xs = np.indices(small.shape)
    cy = float((ys * small).sum()) / mass
    cx = float((xs * small).sum()) / mass
    top, left = int(round(MNIST_CENTRE - cy)), int(round(MNIST_CENTRE - cx))
    out = np.zeros((IMAGE_SIZE, IMAGE_SIZE), dtype=np.float32)
    y0, x0 = max(top, 0), max(left, 0)
    y1 = min(top + small.shape[0], IMAGE_SIZE)
    x1 = min(left + small.shape[1], IMAGE_SIZE)
    out[y0:y1, x0:x1] = small[y0 - top:y1 - top, x0 - left:x1 - left]
    return out


# --------------------------------------------------------------------------- audio


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


# --------------------------------------------------------------------------- files


def read_image_file(path: str | Path) -> np.ndarray:
    """Read a png/jpg as grey and turn it into a stimulus; errors name the file."""
    path = Path(path)
    try:
        img = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    except cv2.error as exc:
        raise FeatureError(f"{path}: cannot read image ({exc})") from exc
    if img is None:
        reason = "file does not exist" if not path.exists() else "not a readable image"
        raise FeatureError(f"{path}: {reason}")
    try:
        return image_to_stimulus(img)
    except FeatureError as exc:
        raise FeatureError(f"{path}: {exc}") from exc


_WAV_SCALES = {np.dtype(np.int16): 32768.0, np.dtype(np.int32): 2147483648.0}


def read_wav_file(path: str | Path) -> tuple[np.ndarray, int]:
    """Read a wav file as float32 in [-1, 1] plus its sample rate; errors name the file."""
    from scipy.io import wavfile  # heavy to import: only when a wav is read

    path = Path(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", wavfile.WavFileWarning)
            rate, data = wavfile.read(str(path))
    except FileNotFoundError as exc:
        raise FeatureError(f"{path}: file does not exist") from exc
    except Exception as exc:  # scipy's parser of untrusted bytes fails in many ways (even UnboundLocalError)
        raise FeatureError(f"{path}: corrupt or unsupported wav file ({type(exc).__name__}: {exc})") from exc
    return _wav_to_float(data, path), int(rate)


def _wav_to_float(data: np.ndarray, path: Path) -> np.ndarray:
    """Integer or float PCM -> float32 in [-1, 1]."""
    if data.dtype == np.uint8:
        return ((data.astype(np.float32) - 128.0) / 128.0)
    if data.dtype in _WAV_SCALES:
        return (data.astype(np.float64) / _WAV_SCALES[data.dtype]).astype(np.float32)
    if np.issubdtype(data.dtype, np.floating):
        return data.astype(np.float32)
    raise FeatureError(f"{path}: unsupported wav sample type {data.dtype}")


def read_audio_file(path: str | Path) -> np.ndarray:
    """Read a wav file and turn it into a stimulus; errors name the file."""
    wave, rate = read_wav_file(path)
    try:
        return audio_to_stimulus(wave, rate)
    except FeatureError as exc:
        raise FeatureError(f"{Path(path)}: {exc}") from exc


def write_png(path: str | Path, arr2d_in_0_1: np.ndarray, scale: int = 1) -> None:
    """Save a [0, 1] array as an 8-bit PNG, optionally upscaled (nearest) for viewing."""
    arr = np.asarray(arr2d_in_0_1, dtype=np.float64)
    if arr.ndim != 2 or arr.size == 0:
        raise FeatureError(f"write_png needs a non-empty 2-D array, got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise FeatureError("write_png: array contains NaN or infinite values")
    if int(scale) < 1:
        raise FeatureError(f"write_png: scale must be >= 1, got {scale}")
    img = np.round(np.clip(arr, 0.0, 1.0) * 255.0).astype(np.uint8)
    if scale > 1:
        img = cv2.resize(img, (img.shape[1] * int(scale), img.shape[0] * int(scale)),
                         interpolation=cv2.INTER_NEAREST)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), img):
        raise OSError(f"could not write PNG to {path}")
