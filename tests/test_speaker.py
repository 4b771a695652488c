"""The speaker: rate-limited recalls become wav files or sound, and device errors say what to do."""

from __future__ import annotations

import argparse
import sys
import threading
import time

import numpy as np
import pytest

from agent.bus import BusClient
from agent.wire import Control, Recon
from sensors.features import SAMPLE_RATE, audio_to_stimulus, read_wav_file
from tests.pulse import pulse_sink  # noqa: F401  (a fixture, requested by name)
from sensors.speaker import TOPICS, SensorError, Speaker, WavSink, load_sounddevice, open_device, \
    pick_output_device, run

pytestmark = pytest.mark.timeout(120)

DEVICES = [{"name": "HDA Intel PCH: ALC3246 Analog (hw:0,0)", "max_input_channels": 2, "max_output_channels": 2},
           {"name": "USB Microphone", "max_input_channels": 1, "max_output_channels": 0},
           {"name": "pulse", "max_input_channels": 32, "max_output_channels": 32},
           {"name": "default", "max_input_channels": 32, "max_output_channels": 32}]


def _spec(hz: float = 440.0) -> np.ndarray:
    t = np.arange(SAMPLE_RATE) / SAMPLE_RATE
    return audio_to_stimulus(np.sin(2 * np.pi * hz * t) * np.hanning(SAMPLE_RATE), SAMPLE_RATE)


def _recon(seq: int, cluster: int = 4) -> Recon:
    return Recon("audio", time.time_ns(), seq, cluster, "visual", _spec(300.0 + 50 * cluster))


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
    speaker.handle(Recon("audio", 0, 9, 1, "visual", np.zeros((10, 10), np.float32)))  # wrong shape: ignored
    assert speaker.pending is None and speaker.stats()["bad_shape"] == 1
    assert speaker.stats()["synth_ms"] > 0


# ---------------------------------------------------------------------- on a real bus
@pytest.mark.slow
def test_speaker_on_a_bus_writes_one_wav_per_utterance(tmp_path, thread_bus):
    address = thread_bus
    client = BusClient(address, "speaker", TOPICS)
    feeder = BusClient(address, "feeder")
    speaker = None
    try:
        client.handshake(timeout_s=10)
        feeder.handshake(timeout_s=10)
        speaker = Speaker(client, [WavSink(tmp_path)], every_s=0.3)

        def feed() -> None:
            for i in range(3):  # spaced: each one is said
                feeder.send(_recon(i, cluster=i))
                time.sleep(0.5)
            for i in range(3, 8):  # a burst: most are skipped
                feeder.send(_recon(i, cluster=i))
            time.sleep(0.8)
            feeder.send(Control("stop", source="feeder"))

        threading.Thread(target=feed, daemon=True).start()
        watchdog = threading.Timer(60, lambda: setattr(speaker, "running", False))
        watchdog.start()
        speaker.run()
        watchdog.cancel()
    finally:
        if speaker is not None:
            speaker.close()
        client.close()
        feeder.close()

    wavs = sorted(tmp_path.glob("*.wav"))
    assert speaker.played == len(wavs) and speaker.played + speaker.skipped == 8
    assert speaker.played >= 4 and speaker.skipped >= 3
    for path in wavs:
        wave, rate = read_wav_file(path)
        assert rate == SAMPLE_RATE and len(wave) == SAMPLE_RATE
        assert float(np.sqrt(np.mean(wave ** 2))) > 0.01


# ---------------------------------------------------------------------- a real device
def _has_output_device() -> bool:
    try:
        sd = load_sounddevice()
        return any(d["max_output_channels"] > 0 for d in sd.query_devices())
    except Exception:  # noqa: BLE001 - no PortAudio, no server: nothing to play on
        return False


def test_play_a_short_sound_through_a_real_device(request):
    """On this machine's own output device if it has one, else into a PulseAudio null sink whose
    monitor we record (tests/pulse.py; it skips the test when PulseAudio is not installed)."""
    if _has_output_device():
        spec, listen = None, False
    else:
        spec, listen = request.getfixturevalue("pulse_sink").device, True
    sd = load_sounddevice()
    heard: list[np.ndarray] = []
    mic = None
    if listen:
        mic = sd.InputStream(device=spec, channels=1, samplerate=SAMPLE_RATE, dtype="float32",
                             callback=lambda data, frames, t, status: heard.append(data[:, 0].copy()))
        mic.start()
        deadline = time.monotonic() + 5  # a null sink's monitor starts slowly (see tests/pulse.py)
        while not heard and time.monotonic() < deadline:
            time.sleep(0.02)
    sink = open_device(spec)
    try:
        sink.play(np.sin(2 * np.pi * 440 * np.arange(SAMPLE_RATE // 2) / SAMPLE_RATE).astype(np.float32) * 0.5,
                  "beep")
        assert sink.busy()
        deadline = time.monotonic() + 8
        while sink.busy() and time.monotonic() < deadline:
            time.sleep(0.02)
        assert not sink.busy()
        deadline = time.monotonic() + (8 if listen else 0.2)  # the monitor may lag by a block of up to 2 s
        while time.monotonic() < deadline and not any(float(np.abs(h).max()) > 0.1 for h in list(heard)):
            time.sleep(0.05)
    finally:
        sink.close()
        if mic is not None:
            mic.stop()
            mic.close()
    if listen:
        wave = np.concatenate(heard) if heard else np.zeros(1, np.float32)
        assert float(np.abs(wave).max()) > 0.1, "the null sink's monitor heard nothing"
