"""`cdz lsl in NAME --sense audio|visual`: a Lab Streaming Layer stream as one of the agent's senses.

The stream is resolved by name; its samples are pulled a few hundred times a second
and go where a microphone's or a camera's would:

* audio (one channel at the stream's nominal rate) through the microphone's word
  finder and noise gate (`sensors.words`, `sensors.microphone.utterance_stimulus`):
  one stimulus per word;
* frames (one flattened image per sample, its shape from `--shape` or the stream's
  `desc`) through the camera's card finder and tracker (`sensors.card`), or with
  `--pictures` each frame taken as a still picture (`sensors.files.picture`).

A stimulus's event time is the LSL stamp of its first sample (a word's onset, a
frame), brought onto our LSL clock by `inlet.time_correction()` and from there onto
the bus's clock (`sensors.lsl.ClockBridge`): the agent pairs what the sender
captured, when the sender captured it, however late it arrives.

Samples that cannot be heard or seen (NaN or infinite values) are counted and left
out; a stream that stops is logged and waited for (liblsl reconnects a stream that has
a source_id; one without is resolved again by name).
"""

from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np

from agent.core.messages import Stimulus
from agent.runtime.bus import BusClient
from agent.runtime.service import Latency, Service
from sensors.card import CardTracker, look
from sensors.errors import SensorError
from sensors.errors import FeatureError
from sensors.files import picture
from sensors.lsl import ClockBridge, SampleStamps, declared_shape, frame_of
from sensors.microphone import utterance_stimulus
from sensors.words import Segment, UtteranceSegmenter

log = logging.getLogger(__name__)

CORRECTION_EVERY_S = 5.0  # liblsl re-measures the sender's clock in the background about this often
STAMPS_KEPT_S = 30.0  # a word is published within max_s + hangover of its onset: far less than this
_SCALE = {"int16": 32768.0, "int32": 2147483648.0}  # integer audio to [-1, 1]


def resolve(pylsl: Any, name: str, timeout_s: float) -> Any:
    """The stream called `name` (its resolved info); SensorError naming the streams that were seen if none is."""
    found = pylsl.resolve_byprop("name", name, minimum=1, timeout=timeout_s)
    if found:
        return found[0]
    seen = sorted({f"{s.name()} ({s.type()}, {s.channel_count()} ch)" for s in pylsl.resolve_streams(wait_time=1.0)})
    raise SensorError(f"no LSL stream named {name!r} answered within {timeout_s:g} s; streams seen: "
                      f"{', '.join(seen) or 'none'}. Is the sender running on this network? Off one subnet, "
                      "list its machine in KnownPeers of an lsl_api.cfg (LSLAPICFG=path); see docs/RUNTIME.md, "
                      "'Lab Streaming Layer'")


def open_inlet(pylsl: Any, info: Any, timeout_s: float) -> tuple[Any, Any]:
    """An open inlet on a resolved stream and its full info (with `desc`)."""
    inlet = pylsl.StreamInlet(info, max_buflen=30, recover=True)
    try:
        inlet.open_stream(timeout=timeout_s)
        return inlet, inlet.info(timeout=timeout_s)
    except pylsl.util.TimeoutError:
        inlet.close_stream()
        raise SensorError(f"LSL stream {info.name()!r} was found but did not open within {timeout_s:g} s") from None


def dtype_of(pylsl: Any, info: Any, sense: str) -> np.dtype:
    """The numpy dtype of a numeric stream (int8 for frames only: LSL has no uint8, so 8-bit pixels travel
    as int8 and are read back as the bytes they are); SensorError for strings and 64-bit integers."""
    fmt = info.channel_format()
    dtypes = {pylsl.cf_float32: "float32", pylsl.cf_double64: "float64", pylsl.cf_int16: "int16",
              pylsl.cf_int32: "int32", **({pylsl.cf_int8: "int8"} if sense == "visual" else {})}
    if fmt not in dtypes:
        raise SensorError(f"LSL stream {info.name()!r} carries {'strings' if fmt == pylsl.cf_string else 'integers'} "
                          f"of a format --sense {sense} does not read: send float32, double64, int16 or int32 "
                          f"values{' (or 8-bit pixels as int8)' if sense == 'visual' else ''}")
    return np.dtype(dtypes[fmt])


def check_stream(pylsl: Any, info: Any, sense: str, shape: tuple[int, int, int] | None) -> tuple[int, int, int] | None:
    """What a sense needs of a stream, checked before anything is pulled: one channel at a nominal rate for
    sound; for frames, a shape (given or declared) whose pixels are its channels. Returns the frame shape."""
    dtype_of(pylsl, info, sense)
    name, n = info.name(), info.channel_count()
    if sense == "audio":
        if n != 1:
            raise SensorError(f"LSL stream {name!r} has {n} channels; --sense audio takes a 1-channel stream "
                              "(pick one channel at the sender)")
        if not info.nominal_srate() > 0:
            raise SensorError(f"LSL stream {name!r} declares no sampling rate; --sense audio needs one")
        return None
    shape = shape or declared_shape(info)
    if shape is None:
        raise SensorError(f"LSL stream {name!r} declares no frame shape (desc/shape/height and width): "
                          "give it with --shape HEIGHTxWIDTH[xDEPTH]")
    if shape[0] * shape[1] * shape[2] != n:
        raise SensorError(f"LSL stream {name!r} has {n} channels, but frames of shape "
                          f"{'x'.join(map(str, shape))} need {shape[0] * shape[1] * shape[2]}")
    return shape


class LslIn(Service):
    """Pulls one LSL stream and publishes the stimuli of one sense found in it."""

    stamps_events = True

    def __init__(self, bus: BusClient, inlet: Any, info: Any, sense: str, *, pylsl: Any,
                 shape: tuple[int, int, int] | None = None, pictures: bool = False, stall_s: float = 2.0,
                 gen: int = 0, **segmenter_args: Any):
        super().__init__(bus, gen)
        self.pylsl = pylsl
        self.inlet, self.info = inlet, info
        self.stream = info.name()
        self.sense = sense
        self.shape = check_stream(pylsl, info, sense, shape)
        self.dtype = dtype_of(pylsl, info, sense)
        self.rate = info.nominal_srate()
        self.pictures = pictures
        self.stall_s = stall_s
        self.clock = ClockBridge(self.bus_ns, pylsl.local_clock)
        self.correction = inlet.time_correction(timeout=5.0)
        self._corrected = time.monotonic()
        if sense == "audio":
            self.segmenter = UtteranceSegmenter(int(round(self.rate)), **segmenter_args)
            self.stamps = SampleStamps(self.rate, int(STAMPS_KEPT_S * self.rate))
            self.chunk = max(1, int(self.rate))
        else:
            self.tracker = CardTracker()
            self.chunk = 64
        self.seq = 0
        self.samples = 0
        self.nan_samples = 0  # audio samples that were not finite: heard as silence
        self.bad_frames = 0  # frames with a non-finite value: left out
        self.no_stimulus = 0  # words that could not be featurised, pictures without a digit
        self.stalls = 0
        self.lost = 0
        self.stalled = False
        self._last_data = time.monotonic()
        self._last_warning = -float("inf")
        self._last_resolve = -float("inf")
        self.latency = Latency()

    # ------------------------------------------------------------------ pulling
    def tick(self) -> None:
        if self.inlet is None:
            self._find_again()
            return
        try:
            x, stamps = self.inlet.pull_chunk(timeout=0.0, max_samples=self.chunk, as_numpy=True)
        except self.pylsl.util.LostError:
            self._lose()
            return
        now = time.monotonic()
        if len(stamps) == 0:
            if self.rate > 0 and not self.stalled and now - self._last_data > self.stall_s:
                self.stalled, self.stalls = True, self.stalls + 1
                log.warning("%s: no samples from LSL stream %r for %.1f s (sender stopped or the network is down); "
                            "waiting for it", self.name, self.stream, self.stall_s)
            return
        if self.stalled:
            log.warning("%s: LSL stream %r is back after %.1f s", self.name, self.stream, now - self._last_data)
            self.stalled = False
        self._last_data = now
        if now - self._corrected > CORRECTION_EVERY_S:
            self._corrected = now
            try:
                self.correction = self.inlet.time_correction(timeout=0.1)
            except (self.pylsl.util.TimeoutError, self.pylsl.util.LostError):
                pass  # keep the last one
        self.samples += len(stamps)
        local = np.asarray(stamps, np.float64) + self.correction  # the sender's stamps on our LSL clock
        if self.sense == "audio":
            self.hear(np.asarray(x)[:, 0], local)
        else:
            for row, t in zip(np.asarray(x), local):
                self.see(row, float(t))

    def _lose(self) -> None:
        self.lost += 1
        log.error("%s: LSL stream %r is lost (it has no source_id to be recovered by); looking for it again by name",
                  self.name, self.stream)
        self.inlet.close_stream()
        self.inlet = None

    def _find_again(self) -> None:
        if time.monotonic() - self._last_resolve < 2.0:
            return
        self._last_resolve = time.monotonic()
        found = self.pylsl.resolve_byprop("name", self.stream, minimum=1, timeout=0.2)
        if not found:
            return
        try:
            inlet, info = open_inlet(self.pylsl, found[0], 2.0)
        except SensorError as e:
            log.warning("%s: %s", self.name, e)
            return
        if (info.channel_count(), info.channel_format(), info.nominal_srate()) != \
                (self.info.channel_count(), self.info.channel_format(), self.info.nominal_srate()):
            log.error("%s: a stream named %r is back with other channels or rate; not taken", self.name, self.stream)
            inlet.close_stream()
            return
        log.warning("%s: LSL stream %r found again", self.name, self.stream)
        self.inlet, self.info = inlet, info

    def _warn(self, text: str, *args: Any) -> None:
        """At most one warning every 10 s about bad samples (a broken sender would flood the log)."""
        if time.monotonic() - self._last_warning >= 10.0:
            self._last_warning = time.monotonic()
            log.warning(text, *args)

    # ------------------------------------------------------------------ senses
    def hear(self, samples: np.ndarray, stamps: np.ndarray) -> None:
        """A chunk of sound into the word finder; each word found is published."""
        wave = samples.astype(np.float32) / _SCALE.get(self.dtype.name, 1.0)
        bad = ~np.isfinite(wave)
        if bad.any():
            self.nan_samples += int(bad.sum())
            self._warn("%s: %d samples of %r were NaN or infinite, heard as silence (%d so far)", self.name,
                       int(bad.sum()), self.stream, self.nan_samples)
            wave[bad] = 0.0
        self.stamps.add(stamps)
        for seg in self.segmenter.push(wave):
            self.say_word(seg)

    def say_word(self, seg: Segment) -> None:
        try:
            data = utterance_stimulus(seg, self.segmenter.rate)
        except FeatureError as e:
            self.no_stimulus += 1
            log.warning("%s: skipped a word: %s", self.name, e)
            return
        self.publish(data, self.stamps.at(seg.onset))
        self.latency.add((self.pylsl.local_clock() - self.stamps.at(seg.voiced_end - 1)) * 1e3)

    def see(self, row: np.ndarray, t_lsl: float) -> None:
        """One frame: a card in view (or, with --pictures, the frame as a picture) becomes a stimulus."""
        if row.dtype.kind == "f" and not np.isfinite(row).all():
            self.bad_frames += 1
            self._warn("%s: a frame of %r had NaN or infinite values and was left out (%d so far)", self.name,
                       self.stream, self.bad_frames)
            return
        frame = frame_of(row.view(np.uint8) if row.dtype == np.int8 else row, self.shape)
        if self.pictures:
            try:
                stim = picture(frame).x
            except FeatureError:
                self.no_stimulus += 1
                return
        else:
            stim, _ = look(frame)
            if not self.tracker.update(stim, t_lsl):
                return
        self.publish(stim, t_lsl)
        self.latency.add((self.pylsl.local_clock() - t_lsl) * 1e3)

    def publish(self, data: np.ndarray, t_lsl: float) -> None:
        """A stimulus stamped with its first sample's time, on the bus's clock."""
        self.bus.send(Stimulus(modality=self.sense, t_ns=self.clock.to_bus(t_lsl), seq=self.seq, mseq=self.seq,
                               data=np.ascontiguousarray(data, np.float32), source=self.name, gen=self.gen))
        self.seq += 1

    def stats(self) -> dict:
        extra = ({"too_short": self.segmenter.rejected, "cut": self.segmenter.cut} if self.sense == "audio"
                 else {} if self.pictures else self.tracker.stats())
        return {"role": "sensor", "modality": self.sense, "stream": self.stream[:64], "rate": self.rate,
                "samples": self.samples, "stimuli": self.seq, "nan_samples": self.nan_samples,
                "bad_frames": self.bad_frames, "no_stimulus": self.no_stimulus, "stalls": self.stalls,
                "stalled": self.stalled, "lost": self.lost, "time_correction_ms": self.correction * 1e3,
                "latency_p50_ms": self.latency.percentile(50), "latency_p95_ms": self.latency.percentile(95), **extra}
