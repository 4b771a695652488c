"""`cdz mic`: hear spoken digits through a microphone and publish each as an audio stimulus.

PortAudio calls `RingBuffer.callback` on its own thread with every block of samples;
the callback only copies them into a preallocated ring (it must never block, or the
device overflows). The service loop drains the ring into an `UtteranceSegmenter`
(`sensors.words`), an energy voice-activity detector that cuts the stream into one
clip per spoken word, and publishes every clip as a `Stimulus` (modality "audio") made by
`sensors.sound_features.audio_to_stimulus` after the noise gate (`sensors.words.gate_noise`), the same function that featurises FSDD, so the
agent hears the microphone exactly as it heard its training data.

The segmenter works at the device's own rate (audio_to_stimulus resamples to 8 kHz);
`sensors.words.segment_wave` runs it offline over a recording, for evaluation and tests.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable
from typing import Any, Sequence

import numpy as np

from agent.runtime.bus import BusClient
from agent.runtime.service import Latency, Service
from agent.core.messages import Stimulus
from sensors.errors import FeatureError
from sensors.sound_features import audio_to_stimulus
from sensors.words import Segment, UtteranceSegmenter, gate_noise
from sensors.errors import SensorError

log = logging.getLogger(__name__)

SOURCE = "microphone"
MODALITY = "audio"



# ---------------------------------------------------------------------- devices
def load_sounddevice() -> Any:
    """The sounddevice module, imported late so that the rest of this module works without PortAudio."""
    try:
        import sounddevice
    except ImportError:
        raise SensorError("the sounddevice package is missing: pip install sounddevice") from None
    except OSError as e:  # raised at import when the PortAudio library itself is absent
        raise SensorError(f"PortAudio is not installed ({e}): install it with `apt-get install libportaudio2` "
                          "(Debian/Ubuntu) or `brew install portaudio` (macOS)") from None
    return sounddevice


def list_input_devices(sd: Any = None) -> list[dict]:
    """Every device that can record: index, name, channels, default rate, and whether it is the default."""
    sd = sd or load_sounddevice()
    try:
        default = sd.default.device[0]
    except Exception:  # no default set or PortAudio reports none
        default = -1
    if default is None or default < 0:
        try:
            default = int(sd.query_devices(kind="input")["index"])
        except Exception:
            default = -1
    return [{"index": i, "name": str(d["name"]), "channels": int(d["max_input_channels"]),
             "rate": int(d["default_samplerate"]), "default": i == default}
            for i, d in enumerate(sd.query_devices()) if d["max_input_channels"] > 0]


def format_devices(devices: Sequence[dict]) -> str:
    """One line per input device, the way errors and `cdz mic --list` show them."""
    if not devices:
        return "  (none)"
    return "\n".join(f"  {d['index']}: {d['name']} ({d['channels']} ch, {d['rate']} Hz)"
                     f"{'  [default]' if d['default'] else ''}" for d in devices)


def pick_input(devices: Sequence[dict], mic: str | int | None) -> int:
    """The index of the input device `mic` names: an index, or part of a name (case-insensitive);
    None: the default. Errors list the input devices and how to choose one."""
    how = f"input devices:\n{format_devices(devices)}\nchoose one with --mic NAME or --mic INDEX"
    if not devices:
        raise SensorError("no audio input device found: connect a microphone, start PulseAudio or PipeWire, "
                          f"or check the permissions on /dev/snd\n{how}")
    if mic is None or (isinstance(mic, str) and not mic.strip()):
        chosen = [d["index"] for d in devices if d["default"]]
        return chosen[0] if chosen else devices[0]["index"]
    text = str(mic).strip()
    if isinstance(mic, int) or text.isdecimal():
        if any(d["index"] == int(text) for d in devices):
            return int(text)
        raise SensorError(f"--mic {text}: no input device has that index\n{how}")
    exact = [d["index"] for d in devices if d["name"].lower() == text.lower()]
    found = exact or [d["index"] for d in devices if text.lower() in d["name"].lower()]
    if len(found) == 1:
        return found[0]
    if not found:
        raise SensorError(f"--mic {text!r}: no input device has that in its name\n{how}")
    raise SensorError(f"--mic {text!r} matches several input devices ({', '.join(map(str, found))}); "
                      f"give more of the name or the index\n{how}")


def choose_input(mic: str | int | None) -> int:
    """The PortAudio index of the input device to record from (see `pick_input`)."""
    return pick_input(list_input_devices(), mic)


# ---------------------------------------------------------------------- ring buffer
class RingBuffer:
    """A fixed float32 ring between PortAudio's thread (one writer) and the service loop (one reader).

    The writer never waits and allocates nothing but views: when the ring is full the
    newest samples are dropped and counted (`overflows`, `dropped`), as are PortAudio's
    own input overflows (`input_overflows`) and any error inside the callback (`errors`).
    `stamp` maps the stream to wall time: (sample index, `clock()` of that sample).
    """

    def __init__(self, capacity: int, rate: int, clock: Callable[[], int] = time.time_ns):
        if capacity < 1 or rate < 1:
            raise ValueError(f"capacity and rate must be positive, got {capacity}, {rate}")
        self.capacity = int(capacity)
        self.rate = int(rate)
        self._buf = np.zeros(self.capacity, np.float32)
        self.written = 0  # samples stored so far (only the writer changes it)
        self.read_count = 0  # samples read so far (only the reader changes it)
        self.overflows = 0
        self.dropped = 0
        self.input_overflows = 0
        self.errors = 0
        self.stamp: tuple[int, int] | None = None
        self.clock = clock  # the microphone process's wall clock

    def callback(self, indata: np.ndarray, frames: int, time_info: Any, status: Any) -> None:
        """The sounddevice InputStream callback: copy, stamp, count; never raise."""
        try:
            now = self.clock()
            if status and getattr(status, "input_overflow", False):
                self.input_overflows += 1
            lag_s = frames / self.rate  # the block's first sample is about one block old...
            try:  # ...unless PortAudio knows when the ADC took it
                adc = float(time_info.currentTime - time_info.inputBufferAdcTime)
                if 0.0 < adc < 0.5:
                    lag_s = adc
            except Exception:
                pass
            self.write(indata[:, 0] if indata.ndim == 2 else indata, now - int(lag_s * 1e9))
        except Exception:
            self.errors += 1

    def write(self, samples: np.ndarray, t_ns: int | None = None) -> int:
        """Store what fits of `samples` (dropping and counting the rest); returns the number stored."""
        n = int(samples.shape[0])
        k = min(n, self.capacity - (self.written - self.read_count))
        if k < n:
            self.overflows += 1
            self.dropped += n - k
        if k > 0:
            w = self.written % self.capacity
            first = min(k, self.capacity - w)
            self._buf[w:w + first] = samples[:first]
            self._buf[:k - first] = samples[first:k]
            if t_ns is not None:
                self.stamp = (self.written, t_ns)
            self.written += k
        return k

    def available(self) -> int:
        return self.written - self.read_count

    def read(self, max_n: int | None = None) -> np.ndarray:
        """A copy of the oldest unread samples (all of them, or at most `max_n`)."""
        n = self.written - self.read_count
        if max_n is not None:
            n = min(n, max_n)
        r = self.read_count % self.capacity
        first = min(n, self.capacity - r)
        out = np.concatenate([self._buf[r:r + first], self._buf[:n - first]])
        self.read_count += n
        return out

    def wall_ns(self, index: int) -> int:
        """Wall-clock time (ns) of stream sample `index`, from the latest stamp (now if none yet)."""
        if self.stamp is None:
            return self.clock()
        at, t = self.stamp
        return t + int(round((index - at) * 1e9 / self.rate))


def utterance_stimulus(seg: Segment, rate: int) -> np.ndarray:
    """One found word as its stimulus: noise-gated by the quiet before it, then featurised as FSDD is
    (FeatureError if it cannot be). Every live source of sound (`cdz mic`, `cdz lsl in`) goes through here."""
    return audio_to_stimulus(gate_noise(seg.audio, seg.noise, rate), rate)


# ---------------------------------------------------------------------- the process
class Microphone(Service):
    """Records from one input device and publishes one audio `Stimulus` per utterance.

    `t_ns` of a stimulus is the wall-clock time its utterance began (capture time);
    `seq` and `mseq` count the stimuli. `segments` keeps (start_s, end_s) in stream
    time of the latest ones, for evaluation.
    """

    stamps_events = True

    def __init__(self, bus: BusClient, device: int | str | None = None, rate: int | None = None, gen: int = 0,
                 ring_s: float = 10.0, sd: Any = None, **segmenter_args: Any):
        super().__init__(bus, gen)
        self.sd = sd or load_sounddevice()
        try:
            info = self.sd.query_devices(device, "input")
        except Exception as e:
            raise SensorError(f"cannot use input device {device!r} ({e})\ninput devices:\n"
                              f"{format_devices(list_input_devices(self.sd))}\n"
                              "choose one with --mic NAME or --mic INDEX") from None
        self.device = device if device is not None else int(info["index"])
        self.device_name = str(info["name"])
        self.rate = int(rate or info["default_samplerate"])
        self.ring = RingBuffer(int(ring_s * self.rate), self.rate, clock=self.local_ns)
        self.segmenter = UtteranceSegmenter(self.rate, **segmenter_args)
        self.stream: Any = None
        self.seq = 0
        self.feature_errors = 0
        self.latency = Latency()
        self.segments: deque[tuple[float, float]] = deque(maxlen=1000)

    # ------------------------------------------------------------------ stream
    def start(self) -> None:
        """Open and start the input stream (mono, float32, the device's rate)."""
        try:
            self.stream = self.sd.InputStream(device=self.device, channels=1, samplerate=self.rate,
                                              dtype="float32", latency="low", callback=self.ring.callback)
            self.stream.start()
        except Exception as e:  # sounddevice.PortAudioError and friends
            self.stream = None
            raise SensorError(f"cannot record from input device {self.device} ({self.device_name}) "
                              f"at {self.rate} Hz: {e}") from None

    def wait_for_audio(self, timeout_s: float = 5.0) -> bool:
        """True once the device delivers samples (some servers start a stream only after a while)."""
        deadline = time.monotonic() + timeout_s
        while self.ring.written == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        return self.ring.written > 0

    def close(self) -> None:
        stream, self.stream = self.stream, None
        if stream is not None:
            try:
                stream.stop()
            finally:
                stream.close()

    # ------------------------------------------------------------------ loop
    def tick(self) -> None:
        samples = self.ring.read()
        if samples.size == 0:
            return
        for seg in self.segmenter.push(samples):
            self.publish(seg)

    def publish(self, seg: Segment) -> None:
        """Features of one utterance onto the bus, stamped with the time it began."""
        self.segments.append((seg.start / self.rate, seg.end / self.rate))
        try:
            data = utterance_stimulus(seg, self.rate)
        except FeatureError as e:
            self.feature_errors += 1
            log.warning("%s: skipped an utterance: %s", self.name, e)
            return
        onset = self.bus_ns(self.ring.wall_ns(seg.onset))  # when the word began, on the hub's clock
        self.bus.send(Stimulus(modality=MODALITY, t_ns=onset, seq=self.seq, mseq=self.seq, data=data, source=SOURCE,
                               gen=self.gen))
        self.seq += 1
        self.latency.add((self.local_ns() - self.ring.wall_ns(seg.voiced_end)) / 1e6)

    def stats(self) -> dict:
        floor = self.segmenter.floor_db
        level, self.segmenter.peak_db = self.segmenter.peak_db, -120.0
        return {"role": "sensor", "modality": MODALITY, "device": self.device_name[:64], "rate": self.rate,
                "utterances": self.seq, "too_short": self.segmenter.rejected, "cut": self.segmenter.cut,
                "feature_errors": self.feature_errors, "overflows": self.ring.overflows + self.ring.input_overflows,
                "dropped_samples": self.ring.dropped, "callback_errors": self.ring.errors,
                "audio_s": self.ring.read_count / self.rate, "level_db": level,
                "noise_floor_db": floor if floor is not None else -120.0,
                "latency_p50_ms": self.latency.percentile(50), "latency_p95_ms": self.latency.percentile(95)}
