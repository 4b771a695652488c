"""Finding words in sound: a voice-activity detector that cuts a stream into one clip per word,
and a noise gate that takes the room's steady noise out of each clip.

A frame is speech when it stands well above the room's noise floor (an energy
detector, the default), or with `voice="webrtc"` when WebRTC's voice detector
(`webrtcvad-wheels`) says so and it stands a few dB above the floor: that finds words
under a loud hiss, but WebRTC's own hangover once joined two words 0.66 s apart in the
live hissing-room test, so it is not the default yet (docs/RESULTS.md).

The microphone runs them live (`sensors.microphone`), and `words_in` runs them offline
over a recording, for `cdz recall`, the API, evaluation and tests, so a sound file is
cut and cleaned exactly as the microphone would do it.
"""

from __future__ import annotations

import logging
from collections import deque
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Segment:
    """One utterance: sample indices since the segmenter began, and its audio (pre-roll included)."""

    start: int  # first sample of the clip (onset minus pre-roll)
    onset: int  # first sample of the frame that crossed the start threshold
    voiced_end: int  # one past the last frame above the stop threshold
    end: int  # one past the clip's last sample (a short tail after voiced_end)
    audio: np.ndarray
    cut: bool = False  # speech went on for longer than max_s and was cut there
    noise: np.ndarray | None = None  # the quiet just before it (NOISE_S at most): what the room sounds like


_IDLE, _SPEECH, _CUT = "idle", "speech", "cut"
NOISE_S = 0.5  # seconds of the quiet before an utterance kept as its noise sample
_FLOOR_MIN_DB = -100.0
QUIET_PERCENTILE = 10  # of a cut clip's frame energies: the level it seldom goes below (the room under it)


log = logging.getLogger(__name__)
VOICE_MARGIN_DB = 3.0  # with the voice detector, a speech frame also stands this far above the noise floor
VOICE_MODE = 2  # WebRTC's aggressiveness, 0-3 (docs/RESULTS.md: 2 and 3 alike in white noise, 2 without strays)
_VOICE_RATES = (8000, 16000, 32000, 48000)  # the rates WebRTC's detector takes; others go to 8 kHz


class VoiceDetector:
    """WebRTC's voice-activity detector on one 10, 20 or 30 ms frame at a time.

    It tells a voice from a steady noise by its spectrum, so a word under a hiss that an
    energy threshold would miss is still found. Frames at a rate it does not take (a
    sound card's 44.1 kHz) are brought to 8 kHz by linear interpolation: enough for a
    speech/no-speech decision, not for listening."""

    def __init__(self, rate: int, frame_len: int, mode: int = VOICE_MODE):
        import webrtcvad

        ms = 1000.0 * frame_len / rate
        nominal = min((10, 20, 30), key=lambda m: abs(ms - m))
        if abs(ms - nominal) > 0.05 * nominal:  # 11.025 kHz makes 9.98 ms frames: near enough
            raise ValueError(f"the voice detector takes 10, 20 or 30 ms frames, not {ms:g} ms")
        self.rate = rate if rate in _VOICE_RATES else 8000
        self.n = nominal * self.rate // 1000
        exact = self.rate == rate and frame_len == self.n
        self._grid = None if exact else np.arange(self.n) * (frame_len / self.n)
        self.vad = webrtcvad.Vad(mode)

    def __call__(self, frame: np.ndarray) -> bool:
        if self._grid is not None:
            frame = np.interp(self._grid, np.arange(frame.shape[0]), frame)
        pcm = np.round(np.clip(frame, -1.0, 1.0) * 32767.0).astype("<i2")
        return bool(self.vad.is_speech(pcm.tobytes(), self.rate))


def voice_detector(kind: str, rate: int, frame_len: int) -> VoiceDetector | None:
    """The detector for `kind` ("webrtc" or "energy": None). "webrtc" falls back to energy
    without its package (with a warning) or for frames it cannot take (an odd rate or
    frame length)."""
    if kind not in ("webrtc", "energy"):
        raise ValueError(f"voice detector must be 'webrtc' or 'energy', got {kind!r}")
    if kind == "energy":
        return None
    try:
        return VoiceDetector(rate, frame_len)
    except ImportError:
        log.warning("webrtcvad is not installed: words are found by their energy alone "
                    "(pip install webrtcvad-wheels)")
    except ValueError as e:
        log.info("%s at %d Hz: words are found by their energy alone", e, rate)
    return None


def _energy_db(frames: np.ndarray) -> np.ndarray:
    """Mean power of each (n, hop) frame, in dB of full scale."""
    return 10.0 * np.log10(np.einsum("ij,ij->i", frames, frames, dtype=np.float64) / frames.shape[1] + 1e-12)


class UtteranceSegmenter:
    """Voice-activity detection over 10 ms frames, one `Segment` per spoken word.

    The noise floor follows the quiet frames (down fast, up slowly; frozen during speech).
    With `voice="energy"` (the default) speech starts on a frame `start_db` above the floor
    and goes on while frames stay `stop_db` above it; with `voice="webrtc"` a frame is
    speech when WebRTC's detector says so and it stands `VOICE_MARGIN_DB` above the floor. Either way a frame must be above `min_level_db`, so that digital silence does not
    make every click speech, and speech ends after `hangover_s` without it; the gap
    inside "six" or "eight" is shorter than the hangover.
    A clip keeps `preroll_s` before the onset (soft consonants start below the threshold),
    clips with less than `min_s` of speech are dropped (clicks, taps; FSDD's shortest "six"
    lasts 0.14 s, so the limit is below that), and speech longer
    than `max_s` (the stimulus length) is cut there; the floor then jumps to the cut clip's
    quiet level (its 10th percentile frame), and the rest is skipped until a pause, so a
    noise that comes on and stays becomes the floor within a clip.
    """

    def __init__(self, rate: int, frame_s: float = 0.01, start_db: float = 12.0, stop_db: float = 6.0,
                 min_level_db: float = -60.0, hangover_s: float = 0.3, preroll_s: float = 0.1,
                 tail_s: float = 0.05, min_s: float = 0.08, max_s: float = 1.0, voice: str = "energy"):
        if rate < 100:
            raise ValueError(f"rate must be at least 100 Hz, got {rate}")
        self.rate = int(rate)
        self.hop = max(1, int(round(rate * frame_s)))
        self.voice = voice_detector(voice, self.rate, self.hop)
        self.start_db, self.stop_db, self.min_level_db = start_db, stop_db, min_level_db
        self.hangover = max(1, int(round(hangover_s * rate / self.hop)))
        self.tail = int(round(tail_s * rate))
        self.min_len = int(round(min_s * rate))
        self.max_len = int(round(max_s * rate))
        self.floor_db: float | None = None
        self.peak_db = -120.0  # loudest frame since the caller last reset it (input level)
        self.state = _IDLE
        self.pos = 0  # stream index of the next frame
        self.rejected = 0  # too short
        self.cut = 0  # too long
        self._partial = np.zeros(0, np.float32)
        self._history: deque[np.ndarray] = deque(maxlen=max(0, int(round(preroll_s * rate / self.hop))))
        self._room: deque[np.ndarray] = deque(maxlen=max(1, int(round(NOISE_S * rate / self.hop))))  # quiet frames
        self._noise: np.ndarray | None = None  # the room just before the utterance under way
        self._frames: list[np.ndarray] = []
        self._start = self._onset = self._voiced_end = 0
        self._quiet = 0

    def thresholds(self) -> tuple[float, float]:
        floor = _FLOOR_MIN_DB if self.floor_db is None else self.floor_db
        return (max(floor + self.start_db, self.min_level_db),
                max(floor + self.stop_db, self.min_level_db - (self.start_db - self.stop_db)))

    def _speech(self, frame: np.ndarray, e: float) -> tuple[bool, bool]:
        """Whether the frame may start an utterance, and whether it keeps one going."""
        start_thr, stop_thr = self.thresholds()
        if self.voice is None:
            return e >= start_thr, e >= stop_thr
        floor = _FLOOR_MIN_DB if self.floor_db is None else self.floor_db
        voiced = e >= max(floor + VOICE_MARGIN_DB, self.min_level_db) and self.voice(frame)
        return voiced, voiced

    def push(self, samples: np.ndarray) -> list[Segment]:
        """Feed more of the stream; returns the utterances that ended in it."""
        data = np.concatenate([self._partial, np.asarray(samples, np.float32).ravel()])
        n = data.shape[0] // self.hop
        self._partial = data[n * self.hop:]
        if n == 0:
            return []
        frames = data[:n * self.hop].reshape(n, self.hop)
        energy = _energy_db(frames)
        self.peak_db = max(self.peak_db, float(energy.max()))
        out = []
        for frame, e in zip(frames, energy.tolist()):
            seg = self._step(frame, e)
            if seg is not None:
                out.append(seg)
        return out

    def flush(self) -> list[Segment]:
        """End of the stream: the utterance in progress, if long enough."""
        seg = self._finish() if self.state == _SPEECH else None
        self.state = _IDLE
        return [seg] if seg is not None else []

    def _step(self, frame: np.ndarray, e: float) -> Segment | None:
        p = self.pos
        self.pos += self.hop
        starts, goes_on = self._speech(frame, e) if self.floor_db is not None else (False, False)
        seg = None
        if self.state == _IDLE:
            if self.floor_db is None:  # the first frame is the room: a hiss already on is not speech
                self._track_floor(e, rise=0.01)
                self._room.append(frame)
            elif starts:
                self.state, self._quiet = _SPEECH, 0
                self._frames = [*self._history, frame]
                self._start, self._onset, self._voiced_end = p - len(self._history) * self.hop, p, p + self.hop
                room = list(self._room)[:-len(self._history) or None]  # the pre-roll may hold a soft onset
                self._noise = np.concatenate(room) if room else None
            else:
                self._track_floor(e, rise=0.01)
                self._room.append(frame)
        elif self.state == _SPEECH:
            self._frames.append(frame)
            if goes_on:
                self._voiced_end, self._quiet = p + self.hop, 0
            else:
                self._quiet += 1
            if self.pos - self._onset >= self.max_len:
                # a sound that went on this long without dropping below its quiet level holds the room
                # (a fan or a hiss switched on): the floor rises to that level at once, so the change
                # costs this one clip, not the seconds of words a slow rise would swallow
                quiet_db = float(np.percentile(_energy_db(np.stack(self._frames)), QUIET_PERCENTILE))
                seg = self._finish(cut=True)
                self.state, self._quiet, self.cut = _CUT, 0, self.cut + 1
                self.floor_db = max(_FLOOR_MIN_DB if self.floor_db is None else self.floor_db, quiet_db)
            elif self._quiet >= self.hangover:
                seg = self._finish()
                self.state = _IDLE
        else:  # _CUT: wait for a pause; a sound that never stops becomes the floor
            self._quiet = self._quiet + 1 if not goes_on else 0
            self._track_floor(e, rise=0.01)
            if self._quiet >= self.hangover:
                self.state = _IDLE
        self._history.append(frame)
        return seg

    def _track_floor(self, e: float, rise: float) -> None:
        e = max(e, _FLOOR_MIN_DB)
        if self.floor_db is None:
            self.floor_db = e
        else:
            self.floor_db += (0.2 if e < self.floor_db else rise) * (e - self.floor_db)

    def _finish(self, cut: bool = False) -> Segment | None:
        end = self.pos if cut else min(self._voiced_end + self.tail, self.pos)
        frames, self._frames = self._frames, []
        if not cut and self._voiced_end - self._onset < self.min_len:
            self.rejected += 1
            return None
        audio = np.concatenate(frames)[:end - self._start]
        return Segment(self._start, self._onset, min(self._voiced_end, end), end, audio, cut, self._noise)


def segments_of(wave: np.ndarray, rate: int, chunk_s: float = 0.05, **kwargs: Any) -> list[Segment]:
    """Every utterance the live segmenter finds in a recording (pre-roll included, with its noise sample).

    The wave is fed in chunks of `chunk_s`, as a sound card would deliver it."""
    seg = UtteranceSegmenter(rate, **kwargs)
    wave = np.asarray(wave, np.float32)
    if wave.ndim == 2:
        wave = wave.mean(axis=1)
    step = max(1, int(chunk_s * rate))
    return [s for i in range(0, wave.shape[0], step) for s in seg.push(wave[i:i + step])] + seg.flush()


def segment_wave(wave: np.ndarray, rate: int, chunk_s: float = 0.05, **kwargs: Any) -> list[tuple[float, float]]:
    """(start_s, end_s) of every utterance the live segmenter finds in a recording (pre-roll included)."""
    return [(s.start / rate, s.end / rate) for s in segments_of(wave, rate, chunk_s, **kwargs)]


# ---------------------------------------------------------------------- the noise gate
GATE_STD = 1.5  # a time-frequency bin is kept when it stands this many noise deviations above the noise's mean
_GATE_MIN_NOISE_S = 0.1  # a shorter noise sample says too little about the room: no gate
_SILENT = 1e-6  # RMS of digital silence: nothing to take out


def gate_noise(clip: np.ndarray, noise: np.ndarray | None, rate: int) -> np.ndarray:
    """The clip with the room's steady noise taken out (spectral gating), or the clip itself.

    Training words (FSDD) are nearly noise-free, and each stimulus is scaled to its own
    loudest bin with an 80 dB floor, so a hiss 50 dB under the word still fills every
    quiet bin of the spectrogram and the word is misheard. From the quiet before the
    word, each frequency's noise level (mean and spread in dB over 32 ms frames) is
    learned; a bin of the clip is kept only where it stands GATE_STD spreads above it,
    the mask is smoothed over neighbouring bins and frames, and the rest is silenced.
    A room that is digitally silent, or too short a sample, leaves the clip as it is.
    (noisereduce does this too, but it imports torch, which the microphone process
    must not load.)
    """
    from scipy.ndimage import uniform_filter
    from scipy.signal import istft, stft

    clip = np.asarray(clip, np.float32)
    if noise is None or noise.size < _GATE_MIN_NOISE_S * rate or float(np.sqrt(np.mean(noise ** 2))) < _SILENT:
        return clip
    nfft = max(64, 1 << int(round(np.log2(0.032 * rate))))  # about 32 ms
    _, _, n_spec = stft(noise, rate, nperseg=nfft, noverlap=nfft * 3 // 4)
    _, _, c_spec = stft(clip, rate, nperseg=nfft, noverlap=nfft * 3 // 4)
    n_db = 20.0 * np.log10(np.abs(n_spec) + 1e-10)
    c_db = 20.0 * np.log10(np.abs(c_spec) + 1e-10)
    threshold = n_db.mean(axis=1, keepdims=True) + GATE_STD * n_db.std(axis=1, keepdims=True)
    mask = uniform_filter((c_db > threshold).astype(np.float32), size=(3, 3))
    _, gated = istft(c_spec * mask, rate, nperseg=nfft, noverlap=nfft * 3 // 4)
    out = np.zeros_like(clip)
    n = min(clip.size, gated.size)
    out[:n] = gated[:n]
    return out if np.any(out) else clip


@dataclass(frozen=True)
class Word:
    """One word of a recording: where it lies and its audio with the room's noise gated out."""

    start_s: float
    end_s: float
    audio: np.ndarray


def words_in(wave: np.ndarray, rate: int) -> list[Word]:
    """Every word the microphone's segmenter finds in a recording, each noise-gated as the microphone does."""
    return [Word(s.start / rate, s.end / rate, gate_noise(s.audio, s.noise, rate)) for s in segments_of(wave, rate)]
