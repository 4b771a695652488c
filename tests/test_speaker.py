"""The speaker: rate-limited recalls become wav files or sound, and device errors say what to do."""

from __future__ import annotations

import argparse
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from agent.runtime.bus import BusClient
from agent.core.messages import Control, Reconstruction
from sensors.file_reading import read_wav_file
from sensors.sound_features import SAMPLE_RATE, audio_to_stimulus
from tests.processes import stop_process, wait_for
from tests.pulse import SOURCE, pulse_sink  # noqa: F401  (a fixture, requested by name)
from sensors.speaker import SensorError, Speaker, WavSink, load_sounddevice, open_device, pick_output_device
from tools.processes.speaker import PROCESS, run

pytestmark = pytest.mark.timeout(120)

DEVICES = [{"name": "HDA Intel PCH: ALC3246 Analog (hw:0,0)", "max_input_channels": 2, "max_output_channels": 2},
           {"name": "USB Microphone", "max_input_channels": 1, "max_output_channels": 0},
           {"name": "pulse", "max_input_channels": 32, "max_output_channels": 32},
           {"name": "default", "max_input_channels": 32, "max_output_channels": 32}]


def _spec(hz: float = 440.0) -> np.ndarray:
    t = np.arange(SAMPLE_RATE) / SAMPLE_RATE
    return audio_to_stimulus(np.sin(2 * np.pi * hz * t) * np.hanning(SAMPLE_RATE), SAMPLE_RATE)


def _recon(seq: int, cluster: int = 4) -> Reconstruction:
    return Reconstruction(modality="audio", t_ns=time.time_ns(), seq=seq, cluster_id=cluster, cue_modality="visual",
                          data=_spec(300.0 + 50 * cluster))


class _NoBus:
    name = "speaker"


# ---------------------------------------------------------------------- device choice
def test_pick_by_index_name_or_default():
    assert pick_output_device(None, DEVICES, default=3) == 3
    assert pick_output_device(None, DEVICES, default=1) == 0  # the default cannot play: the first that can
    assert pick_output_device("2", DEVICES) == 2
    assert pick_output_device("alc3246", DEVICES) == 0
    assert pick_output_device("pulse", DEVICES) == 2


@pytest.mark.parametrize("spec, why", [("no-such-speaker", "no output device has that in its name"),
                                       ("1", "no output device has that index"),
                                       ("7", "no output device has that index")])
def test_a_bad_choice_lists_the_output_devices(spec, why):
    with pytest.raises(SensorError) as err:
        pick_output_device(spec, DEVICES)
    text = str(err.value)
    assert why in text and "--speaker INDEX" in text
    assert "0: HDA Intel" in text and "2: pulse" in text and "USB Microphone" not in text


def test_no_output_device_says_so():
    with pytest.raises(SensorError, match="no audio output device.*--wav-dir DIR"):
        pick_output_device("pulse", DEVICES[1:2])


def test_a_bad_name_on_this_machine_gives_a_clear_error():
    """Whatever this machine has: no PortAudio, no output device, or a list to choose from."""
    with pytest.raises(SensorError) as err:
        open_device("no-such-speaker-anywhere")
    text = str(err.value)
    assert ("apt-get install libportaudio2" in text or "no audio output device" in text
            or ("output devices:" in text and "--speaker" in text)), text


class _NoPortAudio:
    """An import hook that makes `import sounddevice` fail as it does without libportaudio."""

    def find_spec(self, name, path=None, target=None):
        if name == "sounddevice":
            import importlib.machinery

            return importlib.machinery.ModuleSpec(name, self)
        return None

    def create_module(self, spec):
        raise OSError("PortAudio library not found")

    def exec_module(self, module):  # pragma: no cover - create_module already failed
        pass


def test_missing_portaudio_names_the_package(monkeypatch):
    monkeypatch.delitem(sys.modules, "sounddevice", raising=False)
    monkeypatch.setattr(sys, "meta_path", [_NoPortAudio(), *sys.meta_path])
    with pytest.raises(SensorError, match="apt-get install libportaudio2"):
        load_sounddevice()


def test_run_fails_before_connecting_when_the_device_is_wrong(tmp_path):
    args = argparse.Namespace(bus="tcp://127.0.0.1:1", keys=None, quiet=True, speaker="no-such-speaker-anywhere",
                              wav_dir=None, every=1.2)
    with pytest.raises(SensorError):
        run(args)


# ---------------------------------------------------------------------- rate limiting
def test_rate_limit_plays_the_newest_and_counts_the_rest(tmp_path):
    sink = WavSink(tmp_path)
    speaker = Speaker(_NoBus(), [sink], every_s=0.3)  # type: ignore[arg-type]
    for i in range(3):  # a burst: only the newest is said
        speaker.handle(_recon(i, cluster=i))
    speaker.tick()
    assert speaker.played == 1 and speaker.skipped == 2 and "cluster2" in sink.written[0].name
    speaker.handle(_recon(3))
    speaker.tick()  # too soon: it waits
    assert speaker.played == 1 and speaker.pending is not None
    time.sleep(0.35)
    speaker.tick()
    assert speaker.played == 2 and speaker.skipped == 2 and len(sink.written) == 2
    speaker.handle(Reconstruction(modality="audio", t_ns=0, seq=9, cluster_id=1, cue_modality="visual",
                                  data=np.zeros((10, 10), np.float32)))  # wrong shape: ignored
    assert speaker.pending is None and speaker.stats()["bad_shape"] == 1
    assert speaker.stats()["synth_ms"] > 0


# ---------------------------------------------------------------------- on a real bus
@pytest.mark.slow
def test_speaker_on_a_bus_writes_one_wav_per_utterance(tmp_path, thread_bus):
    address = thread_bus
    client = BusClient(address, "speaker", PROCESS.topics())
    feeder = BusClient(address, "feeder")
    speaker = None
    try:
        client.handshake(timeout_s=10)
        feeder.handshake(timeout_s=10)
        speaker = Speaker(client, [WavSink(tmp_path)], every_s=0.3)
        errors: list[BaseException] = []
        stop_sent: list[float] = []

        def feed() -> None:
            try:
                for i in range(3):  # spaced: each one is said before the next comes
                    feeder.send(_recon(i, cluster=i))
                    wait_for(lambda: speaker.played == i + 1, 10, f"recall {i} to be said")
                for i in range(3, 8):  # a burst: most are skipped
                    feeder.send(_recon(i, cluster=i))
                wait_for(lambda: speaker.played + speaker.skipped == 8, 10, "the burst to be said or skipped")
            except BaseException as e:  # noqa: BLE001 - reported by the test thread below
                errors.append(e)
            finally:
                stop_sent.append(time.monotonic())
                feeder.send(Control(command="stop", source="feeder"))

        threading.Thread(target=feed, daemon=True).start()
        fired = threading.Event()  # a last resort, so that a speaker that ignores stop fails instead of hanging

        def end_it() -> None:
            fired.set()
            speaker.running = False

        watchdog = threading.Timer(30, end_it)
        watchdog.start()
        speaker.run()
        stopped = time.monotonic()
        watchdog.cancel()
    finally:
        if speaker is not None:
            speaker.close()
        client.close()
        feeder.close()

    assert not errors, errors[0]
    assert not fired.is_set(), "the speaker ignored stop: the watchdog ended it"
    assert stopped - stop_sent[0] < 5, f"the speaker took {stopped - stop_sent[0]:.1f} s to obey stop"
    wavs = sorted(tmp_path.glob("*.wav"))
    assert speaker.played == len(wavs) and speaker.played + speaker.skipped == 8
    assert speaker.played >= 4 and speaker.skipped >= 3
    for path in wavs:
        wave, rate = read_wav_file(path)
        assert rate == SAMPLE_RATE and len(wave) == SAMPLE_RATE
        assert float(np.sqrt(np.mean(wave ** 2))) > 0.01


# ---------------------------------------------------------------------- a real device
class _Monitor:
    """`parec` on the null sink's monitor: everything played into the sink, as float32 mono samples."""

    def __init__(self, server: str, source: str, rate: int = SAMPLE_RATE):
        self.rate = rate
        self.chunks: list[bytes] = []
        self.proc = subprocess.Popen(["parec", f"--server={server}", f"--device={source}", "--raw",
                                      "--format=float32le", f"--rate={rate}", "--channels=1", "--latency-msec=20"],
                                     stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        while chunk := self.proc.stdout.read1(4096):
            self.chunks.append(chunk)

    def samples(self) -> np.ndarray:
        data = b"".join(list(self.chunks))
        return np.frombuffer(data[: len(data) // 4 * 4], np.float32)

    def loudest_rms(self, window_s: float = 0.05) -> float:
        """The RMS of the loudest `window_s` stretch recorded so far."""
        x = self.samples()
        n = int(self.rate * window_s)
        if len(x) < n:
            return 0.0
        windows = x[: len(x) // n * n].reshape(-1, n)
        return float(np.sqrt((windows.astype(np.float64) ** 2).mean(axis=1)).max())

    def close(self) -> str:
        """Stop recording; what parec said on stderr."""
        stop_process(self.proc)
        self.reader.join(5)
        err = self.proc.stderr.read().decode(errors="replace")
        self.proc.stdout.close()
        self.proc.stderr.close()
        return err


def test_play_a_short_sound_through_a_real_device(pulse_sink):
    """A beep played through PortAudio's "pulse" device into a PulseAudio null sink (tests/pulse.py: the
    test skips without PulseAudio and fails under CDZ_REQUIRE_PULSE=1) arrives there as sound: the sink's
    monitor, recorded with parec, carries a 440 Hz tone with the beep's energy. A machine's own
    loudspeaker cannot be listened to, so the sink is always the null one."""
    monitor = _Monitor(pulse_sink.server, SOURCE)
    sink = None
    try:
        # a null sink's monitor starts slowly (see tests/pulse.py): record before playing
        wait_for(lambda: len(monitor.samples()) > 0 or monitor.proc.poll() is not None, 10,
                 "the first samples from the null sink's monitor")
        assert monitor.proc.poll() is None, "parec exited at once"
        quiet = monitor.loudest_rms()
        sink = open_device(pulse_sink.device)
        beep = np.sin(2 * np.pi * 440 * np.arange(SAMPLE_RATE // 2) / SAMPLE_RATE).astype(np.float32) * 0.5
        sink.play(beep, "beep")
        assert sink.busy()
        wait_for(lambda: not sink.busy(), 8, "the beep to finish playing")
        # the monitor may lag by a block of up to 2 s
        wait_for(lambda: monitor.loudest_rms() > 0.2, 8, "the beep's energy at the null sink's monitor")
    finally:
        if sink is not None:
            sink.close()
        err = monitor.close()
    wave = monitor.samples()
    n = int(0.05 * SAMPLE_RATE)
    windows = wave[: len(wave) // n * n].reshape(-1, n)
    loud = windows[np.sqrt((windows.astype(np.float64) ** 2).mean(axis=1)) > 0.2].ravel()
    rms = float(np.sqrt(np.mean(loud.astype(np.float64) ** 2)))
    peak_hz = float(np.argmax(np.abs(np.fft.rfft(loud))) * SAMPLE_RATE / len(loud))
    print(f"monitor: silence before {quiet:.4f} RMS; {len(loud) / SAMPLE_RATE:.2f} s loud at {rms:.3f} RMS, "
          f"peak {peak_hz:.0f} Hz (sent 0.50 s at {0.5 / np.sqrt(2):.3f} RMS, 440 Hz); parec: {err.strip()!r}")
    assert quiet < 0.01, "the null sink was not silent before the beep"
    assert 0.25 < rms < 0.45 and abs(peak_hz - 440) < 10
    assert 0.25 <= len(loud) / SAMPLE_RATE <= 0.75, "the beep should arrive once, about 0.5 s long"
