"""The noise gate (`sensors.words.gate_noise`): a word heard in a hissing room gives the stimulus of the
word itself, and a silent room changes nothing."""

from __future__ import annotations

import numpy as np
import pytest

from sensors.file_reading import read_wav_file
from sensors.sound_features import audio_to_stimulus
from sensors.words import gate_noise, segments_of, words_in


def _similarity(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(a.ravel(), b.ravel())[0, 1])


@pytest.fixture(scope="module")
def word(data_dir) -> tuple[np.ndarray, int]:
    return read_wav_file(data_dir / "fsdd" / "2_george_3.wav")


def test_a_word_in_a_hissing_room_gives_the_stimulus_of_the_word(word):
    wave, rate = word
    clean = audio_to_stimulus(wave, rate)
    rng = np.random.default_rng(0)
    pause = np.zeros(rate // 2, np.float32)
    room = np.concatenate([pause, wave, pause])
    room = room + rng.normal(0.0, 10 ** (-50 / 20), room.size).astype(np.float32)  # -50 dBFS hiss throughout
    (seg,) = segments_of(room, rate)
    without = _similarity(audio_to_stimulus(seg.audio, rate), clean)
    gated = _similarity(audio_to_stimulus(gate_noise(seg.audio, seg.noise, rate), rate), clean)
    print(f"similarity to the clean word: {without:.3f} without the gate, {gated:.3f} with it")
    assert gated > without + 0.05 and gated > 0.9  # without the gate: 0.86


def test_a_silent_room_or_no_sample_changes_nothing(word):
    wave, rate = word
    assert gate_noise(wave, None, rate) is not None
    np.testing.assert_array_equal(gate_noise(wave, None, rate), wave)
    np.testing.assert_array_equal(gate_noise(wave, np.zeros(rate, np.float32), rate), wave)
    np.testing.assert_array_equal(gate_noise(wave, np.full(100, 1e-3, np.float32), rate), wave)  # too short


def test_each_word_of_a_noisy_recording_is_found_once_and_gated(word, data_dir):
    wave, rate = word
    other, _ = read_wav_file(data_dir / "fsdd" / "7_lucas_2.wav")
    rng = np.random.default_rng(1)
    pause = lambda s: np.zeros(int(s * rate), np.float32)
    recording = np.concatenate([pause(0.6), wave, pause(0.7), other, pause(0.6)])
    recording = recording + rng.normal(0.0, 10 ** (-55 / 20), recording.size).astype(np.float32)
    found = words_in(recording, rate)
    assert len(found) == 2
    for w, clean in zip(found, (wave, other)):
        assert _similarity(audio_to_stimulus(w.audio, rate), audio_to_stimulus(clean, rate)) > 0.85


def _words_under_hiss(data_dir, rate: int, hiss_dbfs: float, n: int = 20):
    """`n` FSDD test words of all six voices with pauses, +-6 dB apart, under a white hiss, at `rate`."""
    from tools.material.utterance_audio import build_recording, pick_utterances

    paths = pick_utterances(data_dir / "fsdd", n, "test", seed=3)
    return build_recording(paths, rate=rate, noise_db=hiss_dbfs, jitter_db=6.0, seed=3)


@pytest.mark.parametrize("rate", [8000, 44100])  # the stimulus rate, and a sound card's that WebRTC does not take
def test_words_under_a_loud_hiss_are_each_found_once(data_dir, rate):
    """A hiss at -27 dBFS is about 10-20 dB under the words: too close for an energy threshold (it
    cut 9 and 7 of the 20 once here), not for WebRTC's voice detector, which tells a voice by its
    spectrum (20 and 19 of 20)."""
    from tools.material.utterance_audio import score_segments

    recording, truth = _words_under_hiss(data_dir, rate, -27.0)
    found = segments_of(recording, rate, voice="webrtc")
    score = score_segments([(s.start / rate, s.end / rate) for s in found], truth)
    energy = score_segments([(s.start / rate, s.end / rate) for s in segments_of(recording, rate)], truth)
    print(f"exactly once: {score.share:.2f} with the voice detector, {energy.share:.2f} by energy alone")
    assert score.share >= 0.9 and score.spurious == 0


def test_an_unknown_voice_detector_is_a_clear_error_and_odd_frames_fall_back_to_energy():
    from sensors.words import UtteranceSegmenter

    with pytest.raises(ValueError, match="'webrtc' or 'energy'"):
        segments_of(np.zeros(800, np.float32), 8000, voice="silero")
    assert UtteranceSegmenter(8000).voice is None  # energy, the default
    assert UtteranceSegmenter(8000, voice="webrtc").voice is not None
    assert UtteranceSegmenter(11025, voice="webrtc").voice is not None  # 9.98 ms frames: near enough to 10
    for odd in (UtteranceSegmenter(8000, frame_s=0.015, voice="webrtc"), UtteranceSegmenter(150, voice="webrtc")):
        assert odd.voice is None
        assert odd.push(np.random.default_rng(0).normal(0, 0.1, 3000).astype(np.float32)) is not None
