"""sensors.image_features, sound_features and file_reading: raw images/sounds -> stimuli, and clear errors for bad input."""

from __future__ import annotations

import gzip
import math
from pathlib import Path

import cv2
import numpy as np
import pytest
from scipy.io import wavfile
from scipy.signal import resample_poly

from sensors.errors import FeatureError
from sensors.file_reading import decode_image_file, read_audio_file, read_wav_file, write_png
from sensors.image_features import image_to_stimulus
from sensors.sound_features import N_FFT, N_FRAMES, N_MELS, SAMPLE_RATE, audio_to_stimulus, mel_filterbank, spectrogram_to_audio

CLIP = "7_jackson_32.wav"
OTHER_CLIP = "2_theo_11.wav"


@pytest.fixture(scope="module")
def clip(data_dir) -> tuple[np.ndarray, int]:
    return read_wav_file(data_dir / "fsdd" / CLIP)


@pytest.fixture(scope="module")
def digit(data_dir) -> np.ndarray:
    """The first MNIST test image as raw uint8 (a 7)."""
    with gzip.open(data_dir / "mnist" / "t10k-images-idx3-ubyte.gz", "rb") as fh:
        raw = fh.read(16 + 784)
    return np.frombuffer(raw, dtype=np.uint8, offset=16).reshape(28, 28).copy()


def _resampled(wave: np.ndarray, rate: int) -> np.ndarray:
    g = math.gcd(rate, SAMPLE_RATE)
    return resample_poly(wave.astype(np.float64), rate // g, SAMPLE_RATE // g)


def _mad(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.float64) - b).mean())


# --------------------------------------------------------------------------- audio


def test_audio_shape_and_range(clip):
    spec = audio_to_stimulus(*clip)
    assert spec.shape == (N_MELS, N_FRAMES) and spec.dtype == np.float32
    assert float(spec.min()) == 0.0 and float(spec.max()) == 1.0


def test_different_words_differ(clip, data_dir):
    other = read_audio_file(data_dir / "fsdd" / OTHER_CLIP)
    assert _mad(audio_to_stimulus(*clip), other) > 0.05


@pytest.mark.parametrize("rate", [16000, 44100])
def test_resampling_gives_same_spectrogram(clip, data_dir, rate):
    wave, sr = clip
    ref = audio_to_stimulus(wave, sr)
    spec = audio_to_stimulus(_resampled(wave, rate), rate)
    other = read_audio_file(data_dir / "fsdd" / OTHER_CLIP)
    assert _mad(spec, ref) < 0.01 < _mad(ref, other) / 5


def test_loudness_does_not_matter(clip):
    wave, sr = clip
    ref = audio_to_stimulus(wave, sr)
    np.testing.assert_allclose(audio_to_stimulus(wave * 0.003, sr), ref, atol=1e-4)
    as_int16 = np.round(wave / np.abs(wave).max() * 30000).astype(np.int16)
    assert _mad(audio_to_stimulus(as_int16, sr), ref) < 1e-3


def test_long_clip_is_centred_on_the_word(clip):
    wave, sr = clip
    ref = audio_to_stimulus(wave, sr)
    rng = np.random.default_rng(0)
    long = rng.normal(0.0, 1e-4, 5 * sr)  # 5 s of faint noise, word near the end
    long[3 * sr:3 * sr + wave.size] += wave
    assert _mad(audio_to_stimulus(long, sr), ref) < 0.05


def test_multichannel_is_mixed_down(clip):
    wave, sr = clip
    stereo = np.stack([wave, wave], axis=1)
    np.testing.assert_allclose(audio_to_stimulus(stereo, sr), audio_to_stimulus(wave, sr), atol=1e-5)


@pytest.mark.parametrize("wave,rate,match", [
    (np.zeros(0), 8000, "empty"),
    (np.ones(50), 8000, "short"),
    (np.zeros(4000), 8000, "silent"),
    (np.r_[np.ones(100), np.nan, np.ones(3000)], 8000, "NaN"),
    (np.r_[np.ones(100), np.inf, np.ones(3000)], 8000, "infinite"),
    (np.ones((2, 3, 4000)), 8000, "shape"),
    (np.random.default_rng(0).normal(size=4000), 0, "sample_rate"),
])
def test_bad_audio_raises(wave, rate, match):
    with pytest.raises(FeatureError, match=match):
        audio_to_stimulus(wave, rate)


def test_spectrogram_to_audio_round_trip(clip):
    spec = audio_to_stimulus(*clip)
    audio = spectrogram_to_audio(spec, n_iter=16)
    assert audio.dtype == np.float32 and np.all(np.isfinite(audio))
    assert abs(audio.size / SAMPLE_RATE - 1.0) < 0.05
    assert 0.5 < float(np.abs(audio).max()) <= 1.0
    heard = audio_to_stimulus(audio, SAMPLE_RATE)
    assert np.corrcoef(heard.ravel(), spec.ravel())[0, 1] > 0.8


def test_spectrogram_to_audio_rejects_wrong_shape():
    with pytest.raises(FeatureError, match="shape"):
        spectrogram_to_audio(np.zeros((28, 28)))


def test_mel_filterbank_has_no_empty_band():
    fb = mel_filterbank()
    assert fb.shape == (N_MELS, N_FFT // 2 + 1)
    assert np.all(fb.sum(axis=1) > 0)
    peaks = fb.argmax(axis=1)
    assert np.all(np.diff(peaks) >= 0) and peaks[-1] > peaks[0]  # low to high


# --------------------------------------------------------------------------- wav files


def test_read_wav_formats(tmp_path):
    t = np.arange(4000) / 8000.0
    tone = 0.5 * np.sin(2 * np.pi * 440 * t)
    for name, data in [("i16", (tone * 32767).astype(np.int16)),
                       ("i32", (tone * 2 ** 31).astype(np.int32)),
                       ("u8", np.round(tone * 127 + 128).astype(np.uint8)),
                       ("f32", tone.astype(np.float32))]:
        path = tmp_path / f"{name}.wav"
        wavfile.write(path, 8000, data)
        wave, rate = read_wav_file(path)
        assert rate == 8000 and wave.dtype == np.float32
        np.testing.assert_allclose(wave, tone, atol=0.01, err_msg=name)


def test_corrupt_wav_names_the_file(tmp_path, data_dir):
    path = tmp_path / "broken.wav"
    path.write_bytes((data_dir / "fsdd" / CLIP).read_bytes()[:20])
    with pytest.raises(FeatureError) as err:
        read_audio_file(path)
    assert str(path) in str(err.value)
    junk = tmp_path / "junk.wav"
    junk.write_bytes(b"not a wav file at all")
    with pytest.raises(FeatureError, match="junk.wav"):
        read_wav_file(junk)


def test_silent_wav_file_names_the_file(tmp_path):
    path = tmp_path / "quiet.wav"
    wavfile.write(path, 8000, np.zeros(4000, dtype=np.int16))
    with pytest.raises(FeatureError, match="quiet.wav.*silent"):
        read_audio_file(path)


# --------------------------------------------------------------------------- images


def test_mnist_image_is_kept(digit):
    x = image_to_stimulus(digit)
    assert x.shape == (28, 28) and x.dtype == np.float32
    np.testing.assert_allclose(x, digit / 255.0, atol=1e-7)
    np.testing.assert_array_equal(image_to_stimulus(x), x)


def test_bright_background_is_inverted(digit):
    paper = 255 - cv2.resize(digit, (140, 140), interpolation=cv2.INTER_NEAREST)
    x = image_to_stimulus(paper)
    assert x.shape == (28, 28)
    assert float(np.median(x)) < 0.1
    assert np.corrcoef(x.ravel(), digit.ravel())[0, 1] > 0.95


def test_colour_and_non_square_images(digit):
    big = cv2.resize(digit, (112, 112), interpolation=cv2.INTER_NEAREST)
    wide = np.zeros((112, 200), dtype=np.uint8)
    wide[:, 44:156] = big
    rgba = np.dstack([wide, wide, wide, np.full_like(wide, 255)])
    x = image_to_stimulus(rgba)
    np.testing.assert_allclose(x, image_to_stimulus(wide), atol=1e-6)
    # padded to a square first, so the digit keeps its shape and lands in the middle
    assert np.corrcoef(x[6:22, 6:22].ravel(), cv2.resize(digit, (16, 16), interpolation=cv2.INTER_AREA).ravel())[0, 1] > 0.9


@pytest.mark.parametrize("img,match", [
    (np.zeros((0, 28)), "empty"),
    (np.full((28, 28), np.nan), "NaN"),
    (np.full((28, 28), 0.3), "blank"),
    (np.full((50, 40, 3), 255, dtype=np.uint8), "blank"),
    (np.zeros((2, 28, 28, 3)), "shape"),
    (np.zeros(28), "shape"),
])
def test_bad_images_raise(img, match):
    with pytest.raises(FeatureError, match=match):
        image_to_stimulus(img)


def test_png_round_trip(tmp_path, digit):
    path = tmp_path / "out" / "digit.png"
    write_png(path, digit / 255.0, scale=3)
    on_disk = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    assert on_disk.shape == (84, 84)
    np.testing.assert_array_equal(on_disk[::3, ::3], digit)
    np.testing.assert_allclose(decode_image_file(path)[::3, ::3], digit / 255.0, atol=0.02)


def test_unreadable_image_names_the_file(tmp_path):
    path = tmp_path / "broken.png"
    path.write_bytes(b"\x89PNG garbage")
    with pytest.raises(FeatureError, match="broken.png"):
        decode_image_file(path)
    with pytest.raises(FeatureError, match="missing.png"):
        decode_image_file(Path(tmp_path / "missing.png"))
