"""`cdz speaker`: say out loud what the agent recalls when it sees a digit.

It listens to `recon.audio` (the decoded spectrogram of the audio cluster a visual
cue brought to mind), turns each into a 1 s waveform with Griffin-Lim
(`spectrogram_to_audio`) and plays it through sounddevice, and/or writes it as a
wav file (`--wav-dir`, for machines without speakers and for tests).

Recalls can arrive at up to 60 per second, far more than anyone can listen to, so
at most one utterance starts every `--every` seconds and never while one is still
playing; meanwhile the newest recall waits (one at most) and the ones it replaces
are counted as skipped. Playback is a callback stream: the loop never waits for it.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from agent.runtime.bus import BusClient
from agent.runtime.service import Latency, Service
from agent.core.messages import Message, Reconstruction
from sensors.sound_features import N_FRAMES, N_MELS, SAMPLE_RATE, spectrogram_to_audio
from sensors.errors import SensorError

log = logging.getLogger(__name__)




# ---------------------------------------------------------------------- devices
def load_sounddevice() -> Any:
    """The sounddevice module, or a SensorError saying how to install what it needs."""
    try:
        import sounddevice
    except ImportError:
        raise SensorError("the sounddevice package is missing: pip install sounddevice") from None
    except OSError as e:  # sounddevice raises this at import when libportaudio is absent
        raise SensorError(f"{e}: install it with `sudo apt-get install libportaudio2` (Debian/Ubuntu), "
                          "or use --wav-dir DIR to write the sounds as wav files instead") from None
    return sounddevice


def output_devices(devices: Sequence[dict]) -> list[tuple[int, str]]:
    """(index, name) of every device that can play sound, from `sounddevice.query_devices()`."""
    return [(i, str(d.get("name", "?"))) for i, d in enumerate(devices) if d.get("max_output_channels", 0) > 0]


def _listing(outs: list[tuple[int, str]]) -> str:
    return "\n".join(f"  {i}: {name}" for i, name in outs)


def pick_output_device(spec: str | None, devices: Sequence[dict], default: int | None = None) -> int:
    """The index of the output device `spec` names (an index, or part of a name; None: the default).

    Errors list the output devices and how to pick one, or say that there are none."""
    outs = output_devices(devices)
    if not outs:
        raise SensorError(f"no audio output device found (PortAudio lists {len(devices)} devices, none can play): "
                          "connect speakers or headphones, start PulseAudio/PipeWire, "
                          "or use --wav-dir DIR to write the sounds as wav files instead")
    how = f"output devices:\n{_listing(outs)}\nchoose one with --speaker INDEX or --speaker NAME"
    if spec is None or spec == "":
        if default is not None and any(i == default for i, _ in outs):
            return default
        return outs[0][0]
    if spec.strip().lstrip("-").isdecimal():
        index = int(spec)
        if any(i == index for i, _ in outs):
            return index
        raise SensorError(f"--speaker {spec}: no output device has that index\n{how}")
    exact = [i for i, name in outs if name.lower() == spec.lower()]
    found = exact or [i for i, name in outs if spec.lower() in name.lower()]
    if len(found) == 1:
        return found[0]
    if not found:
        raise SensorError(f"--speaker {spec!r}: no output device has that in its name\n{how}")
    raise SensorError(f"--speaker {spec!r} matches several output devices "
                      f"({', '.join(str(i) for i in found)}); give more of the name or the index\n{how}")


# ---------------------------------------------------------------------- sinks
class WavSink:
    """Writes each utterance as a 16-bit 8 kHz wav file; never busy."""

    def __init__(self, folder: Path | str):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.written: list[Path] = []

    def play(self, wave: np.ndarray, name: str) -> None:
        from scipy.io import wavfile  # here, not at the top: every `cdz` process builds the parser that imports this

        path = self.folder / f"{name}.wav"
        pcm = np.round(np.clip(wave, -1.0, 1.0) * 32767.0).astype(np.int16)
        wavfile.write(str(path), SAMPLE_RATE, pcm)
        self.written.append(path)

    def busy(self) -> bool:
        return False

    def close(self) -> None:
        pass


class DeviceSink:
    """An always-open PortAudio output stream fed from a callback; `play` swaps in a new sound."""

    def __init__(self, sd: Any, device: int):
        self.sd = sd
        info = sd.query_devices(device)
        self.rate = SAMPLE_RATE
        try:
            sd.check_output_settings(device=device, channels=1, dtype="float32", samplerate=SAMPLE_RATE)
        except Exception:  # the device cannot do 8 kHz: resample to its own rate
            self.rate = int(info["default_samplerate"])
        self._lock = threading.Lock()
        self._buf = np.zeros(0, np.float32)
        self._pos = 0
        self.underflows = 0
        try:
            # an explicit 100 ms: PortAudio's "low"/"high" presets underran thousands of times a second
            # through the ALSA pulse plugin; speech does not need less
            self.stream = sd.OutputStream(samplerate=self.rate, device=device, channels=1, dtype="float32",
                                          latency=0.1, blocksize=self.rate // 20, callback=self._callback)
            self.stream.start()
        except Exception as e:  # sounddevice.PortAudioError and friends
            raise SensorError(f"cannot open output device {device} ({info['name']}): {e}") from None
        self.name = str(info["name"])

    def _callback(self, outdata: np.ndarray, frames: int, _time: Any, status: Any) -> None:
        if status.output_underflow:
            self.underflows += 1
        with self._lock:
            n = min(frames, len(self._buf) - self._pos)
            outdata[:n, 0] = self._buf[self._pos:self._pos + n]
            outdata[n:] = 0.0
            self._pos += n

    def play(self, wave: np.ndarray, name: str) -> None:
        if self.rate != SAMPLE_RATE:
            from scipy.signal import resample_poly

            wave = resample_poly(wave, self.rate, SAMPLE_RATE).astype(np.float32)
        with self._lock:
            self._buf, self._pos = np.ascontiguousarray(wave, np.float32), 0

    def busy(self) -> bool:
        with self._lock:
            return self._pos < len(self._buf)

    def close(self) -> None:
        self.stream.stop()
        self.stream.close()


def open_device(spec: str | None) -> DeviceSink:
    """The output device `spec` names (None: the default), ready to play."""
    sd = load_sounddevice()
    try:
        devices = sd.query_devices()
        default = sd.default.device[1]
    except Exception as e:
        raise SensorError(f"cannot list sound devices ({e}); use --wav-dir DIR to write wav files instead") from None
    return DeviceSink(sd, pick_output_device(spec, list(devices), default if isinstance(default, int) else None))


# ---------------------------------------------------------------------- the process
class Speaker(Service):
    """Plays (or writes) recalled spectrograms, at most one per `every_s`, never over each other."""

    def __init__(self, bus: BusClient, sinks: list, every_s: float = 1.2, stale_s: float = 3.0, n_iter: int = 32):
        super().__init__(bus)
        if not sinks:
            raise SensorError("the speaker needs somewhere to put sound: an output device or --wav-dir DIR")
        self.sinks = sinks
        self.every_s = every_s
        self.stale_s = stale_s
        self.n_iter = n_iter
        self.pending: tuple[Reconstruction, float] | None = None
        self.played = 0
        self.skipped = 0
        self.bad = 0
        self._synth_s = 0.0
        self._last_start = -1e9
        self.latency = Latency()  # cue capture -> sound start, ms
        spectrogram_to_audio(np.zeros((N_MELS, N_FRAMES), np.float32), n_iter=1)  # build the filter caches now

    def rewind(self, gen: int) -> None:
        """Only follow the generation: a listener has no checkpoint and is not awaited by the launcher."""
        self.gen = gen
        if self.pending is not None:
            self.pending = None
            self.skipped += 1

    def handle(self, msg: Message) -> None:
        if not isinstance(msg, Reconstruction) or msg.modality != "audio":
            return
        if msg.data.shape != (N_MELS, N_FRAMES):
            self.bad += 1
            return
        if self.pending is not None:
            self.skipped += 1  # replaced by a newer recall before its turn
        self.pending = (msg, time.monotonic())

    def _busy(self) -> bool:
        return any(s.busy() for s in self.sinks)

    def tick(self) -> None:
        if self.pending is None:
            return
        now = time.monotonic()
        msg, arrived = self.pending
        if now - arrived > self.stale_s:
            self.pending = None
            self.skipped += 1
            return
        if now - self._last_start < self.every_s or self._busy():
            return
        self.pending = None
        self._say(msg)

    def _say(self, msg: Reconstruction) -> None:
        t = time.perf_counter()
        wave = spectrogram_to_audio(msg.data, n_iter=self.n_iter)
        self._synth_s += time.perf_counter() - t
        name = f"recall-{self.played:05d}-cluster{msg.cluster_id}-from-{msg.cue_modality}"
        for sink in self.sinks:
            try:
                sink.play(wave, name)
            except OSError as e:
                log.warning("%s: could not play or write %s (%s)", self.name, name, e)
        self.played += 1
        self._last_start = time.monotonic()
        self.latency.add((self.bus_ns() - msg.t_ns) / 1e6)

    def close(self) -> None:
        for sink in self.sinks:
            sink.close()

    def stats(self) -> dict:
        return {"played": self.played, "skipped": self.skipped, "bad_shape": self.bad,
                "synth_ms": 1000.0 * self._synth_s / max(1, self.played),
                "latency_p50_ms": self.latency.percentile(50),
                "underflows": sum(getattr(s, "underflows", 0) for s in self.sinks)}
