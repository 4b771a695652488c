"""The microphone: device choice, the ring buffer, the segmenter, and real PortAudio input.

The live tests record the monitor of a PulseAudio null sink (tests/pulse.py) while FSDD
utterances are played into it, so the whole path (PortAudio callback, ring, segmenter,
features, bus) runs as it does with a real microphone, without a sound card.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import zmq

from agent.runtime.bus import BusClient
from agent.runtime.launcher import start_bus
from agent.core.messages import Control, Stats, Stimulus
from sensors.file_reading import read_audio_file
from sensors.microphone import Microphone, RingBuffer, SensorError, choose_input, pick_input
from sensors.words import UtteranceSegmenter, segment_wave
try:  # one module object for the whole session, whichever way pytest put tests/ on the path
    from tests.pulse import play_wav_into_sink, pulse_sink  # noqa: F401  (pulse_sink is a fixture)
except ImportError:
    from pulse import play_wav_into_sink, pulse_sink  # noqa: F401
from tools.material.utterance_audio import align_and_score, build_recording, pick_utterances, score_segments, write_wav

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

REPO = Path(__file__).resolve().parents[1]
NO_STATUS = SimpleNamespace(input_overflow=False)


class FakeBus:
    """Collects what a service sends (the BusClient surface a Microphone uses)."""

    name = "microphone"
    dropped = 0

    def __init__(self) -> None:
        self.sent: list = []

    def send(self, msg) -> None:
        self.sent.append(msg)

    def recv(self, timeout_ms: int = 100):
        return None

    def recv_ready(self):
        return None


def check_stimuli(stimuli: list) -> None:
    for i, s in enumerate(stimuli):
        assert isinstance(s, Stimulus) and s.modality == "audio" and s.source == "microphone"
        assert s.seq == s.mseq == i
        assert s.data.shape == (64, 64) and s.data.dtype == np.float32
        assert float(s.data.min()) >= 0.0 and float(s.data.max()) <= 1.0
    starts = [s.t_ns for s in stimuli]
    assert starts == sorted(starts)
    if starts:
        assert abs(starts[-1] - time.time_ns()) < 120e9  # wall-clock capture times


# --------------------------------------------------------------------------- devices
DEVICES = [{"index": 0, "name": "HDA Intel PCH: ALC3246 Analog (hw:0,0)", "channels": 2, "rate": 44100,
            "default": False},
           {"index": 3, "name": "USB Audio Mic", "channels": 1, "rate": 48000, "default": True},
           {"index": 4, "name": "USB Audio Headset", "channels": 1, "rate": 48000, "default": False}]


def test_pick_input_by_index_name_and_default():
    assert pick_input(DEVICES, None) == 3
    assert pick_input(DEVICES, "4") == 4 and pick_input(DEVICES, 0) == 0
    assert pick_input(DEVICES, "alc3246") == 0
    assert pick_input(DEVICES, "usb audio mic") == 3
    with pytest.raises(SensorError, match="several"):
        pick_input(DEVICES, "usb")
    with pytest.raises(SensorError, match="no input device has that index"):
        pick_input(DEVICES, "7")
    with pytest.raises(SensorError, match="no audio input device") as e:
        pick_input([], None)
    assert "--mic" in str(e.value)


def test_missing_portaudio_says_what_to_install(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_portaudio(name, *args, **kwargs):
        if name == "sounddevice":
            raise OSError("PortAudio library not found")
        return real_import(name, *args, **kwargs)

    monkeypatch.delitem(sys.modules, "sounddevice", raising=False)
    monkeypatch.setattr(builtins, "__import__", no_portaudio)
    with pytest.raises(SensorError, match="apt-get install libportaudio2"):
        choose_input(None)


def test_choose_unknown_input_lists_devices(pulse_sink):
    with pytest.raises(SensorError) as e:
        choose_input("no-such-device")
    text = str(e.value)
    assert "no-such-device" in text and "--mic NAME" in text and "--mic INDEX" in text
    assert "pulse (" in text and " Hz)" in text  # index: name (channels, rate)
    assert isinstance(choose_input("pulse"), int)


# --------------------------------------------------------------------------- ring buffer
def test_ring_buffer_counts_overflows_and_never_raises():
    ring = RingBuffer(1000, 8000)
    block = np.arange(256, dtype=np.float32)[:, None]
    for _ in range(10):  # nobody reads: 2560 samples into 1000
        ring.callback(block, 256, None, NO_STATUS)
    assert ring.written == 1000 and ring.overflows == 7 and ring.dropped == 1560
    ring.callback(block, 256, None, SimpleNamespace(input_overflow=True))
    assert ring.input_overflows == 1
    ring.callback(None, 256, None, NO_STATUS)  # garbage from the driver: counted, not raised
    assert ring.errors == 1
    out = ring.read()
    assert out.shape == (1000,) and np.array_equal(out[:256], block[:, 0]) and ring.available() == 0
    ring.callback(block, 256, None, NO_STATUS)  # room again, and wrapping around the end
    ring.callback(block, 256, None, NO_STATUS)
    assert np.array_equal(ring.read(), np.concatenate([block[:, 0]] * 2))


def test_ring_buffer_slow_reader_against_a_fast_writer_thread():
    ring = RingBuffer(800, 8000)
    stop = threading.Event()

    def produce() -> None:
        k = 0
        while not stop.is_set():
            ring.callback(np.arange(k, k + 80, dtype=np.float32)[:, None], 80, None, NO_STATUS)
            k += 80
            time.sleep(0.001)

    thread = threading.Thread(target=produce, daemon=True)
    thread.start()
    got = []
    for _ in range(5):
        time.sleep(0.1)  # far slower than the writer
        got.append(ring.read())
    stop.set()
    thread.join(5)
    assert ring.overflows > 0 and ring.errors == 0
    data = np.concatenate(got)
    # what was stored came through whole and in order; drops only ever lose the newest samples
    assert np.all(np.diff(data) > 0) and len(data) + ring.available() == ring.written


def test_real_stream_overflows_are_counted(pulse_sink):
    mic = Microphone(FakeBus(), choose_input(pulse_sink.device), ring_s=0.05)
    mic.start()
    try:
        assert mic.wait_for_audio(5.0)
        time.sleep(0.5)  # 10x the ring: nobody reads
    finally:
        mic.close()
    assert mic.ring.overflows > 0 and mic.ring.errors == 0
    assert mic.stats()["overflows"] > 0


# --------------------------------------------------------------------------- segmentation
def test_segment_wave_finds_one_segment_per_utterance(data_dir):
    paths = pick_utterances(data_dir / "fsdd", 30, seed=2)
    for rate in (8000, 44100):
        wave, truth = build_recording(paths, rate=rate, noise_db=-55.0, jitter_db=6.0, seed=2)
        score = score_segments(segment_wave(wave, rate), truth)
        print(f"segment_wave at {rate} Hz: {score.share:.1%} of {len(truth)} utterances -> one segment, "
              f"{score.spurious} spurious")
        assert score.share >= 0.95 and score.spurious == 0


def test_segmenter_cuts_long_sounds_drops_clicks_and_adapts_to_noise():
    rate = 8000
    rng = np.random.default_rng(0)
    quiet = rng.normal(0, 10 ** (-60 / 20), 2 * rate).astype(np.float32)
    click = quiet[: rate // 2].copy()
    click[100:300] += 0.5  # 25 ms
    hum = rng.normal(0, 10 ** (-20 / 20), 6 * rate).astype(np.float32)  # a fan switched on, 40 dB up
    word = np.sin(np.arange(int(0.4 * rate)) * 2 * np.pi * 300 / rate).astype(np.float32)
    fan_on, first_word = 4.5, 4.5 + 1.7
    wave = np.concatenate([quiet, click, quiet, hum[: int(1.7 * rate)], hum[: len(word)] + 2 * word, hum[:rate],
                           hum[: len(word)] + 2 * word, hum[:rate]])
    seg = UtteranceSegmenter(rate)
    found = seg.push(wave) + seg.flush()
    assert seg.rejected == 1  # the click
    assert seg.cut == 1 and found[0].cut and found[0].end - found[0].onset == rate  # the fan: cut at 1 s...
    assert abs(found[0].onset / rate - fan_on) < 0.05
    assert seg.floor_db > -30  # ...then learned as the new floor,
    assert len(found) == 3 and not found[1].cut and not found[2].cut  # at once: a word 0.7 s later is heard
    assert abs(found[1].onset / rate - first_word) < 0.05 and abs(found[2].onset / rate - (first_word + 1.4)) < 0.05
    assert found[1].onset - found[1].start == int(0.1 * rate)  # pre-roll


# --------------------------------------------------------------------------- live input
@pytest.fixture(scope="module")
def recording(data_dir, tmp_path_factory):
    """20 test utterances (10 digits, 6 speakers) with 0.6-1 s pauses, as a wav to play."""
    wave, truth = build_recording(pick_utterances(data_dir / "fsdd", 20, seed=0), gap_s=(0.6, 1.0), lead_s=0.3)
    return write_wav(tmp_path_factory.mktemp("mic") / "utterances.wav", wave), truth


def hear_through_the_sink(pulse_sink, path: Path) -> tuple[Microphone, FakeBus]:
    """Play a wav into the null sink while a real Microphone records its monitor; the closed
    microphone (its segments and stats) and what it sent."""
    bus = FakeBus()
    mic = Microphone(bus, choose_input(pulse_sink.device))
    mic.start()
    try:
        assert mic.wait_for_audio(5.0), "the null sink's monitor delivered no audio"
        player = play_wav_into_sink(path, wait=False)
        end = None
        while end is None or time.monotonic() < end:
            mic.tick()
            time.sleep(0.01)
            if end is None and player.poll() is not None:
                end = time.monotonic() + 1.0  # the last utterance ends after the hangover
        assert player.returncode == 0, player.stderr.read()
    finally:
        mic.close()
    return mic, bus


def test_live_microphone_hears_each_utterance_once(pulse_sink, recording, data_dir):
    path, truth = recording
    mic, bus = hear_through_the_sink(pulse_sink, path)
    score = align_and_score(list(mic.segments), truth)
    stats = mic.stats()
    print(f"live microphone at {mic.rate} Hz: {score.share:.1%} of {len(truth)} utterances -> exactly one "
          f"segment; {score.spurious} spurious; stats {stats}")
    assert score.share >= 0.95 and score.spurious <= 1
    check_stimuli(bus.sent)
    assert len(bus.sent) == len(mic.segments)
    assert stats["overflows"] == 0 and stats["callback_errors"] == 0 and stats["utterances"] == len(bus.sent)
    assert 0 < stats["latency_p50_ms"] < 1000  # utterance end -> published: the hangover and a bit
    # what the agent hears through the microphone looks like what it learned from the files
    same = []
    for (a, b), stim in zip(mic.segments, bus.sent):
        u = max(truth, key=lambda u: min(b, u.end_s + score.offset_s) - max(a, u.start_s + score.offset_s))
        offline = read_audio_file(Path(data_dir) / "fsdd" / u.name)
        same.append(float(np.corrcoef(offline.ravel(), stim.data.ravel())[0, 1]))
    print(f"correlation of live and file spectrograms: median {np.median(same):.3f}, min {min(same):.3f}")
    assert np.median(same) > 0.95


def _stop(proc: subprocess.Popen) -> str:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
    return proc.stderr.read().decode(errors="replace") if proc.stderr else ""


def test_live_microphone_cuts_each_word_once_in_a_hissing_room(pulse_sink, data_dir, tmp_path):
    """Words with gaps under steady white noise (-50 dBFS), through PortAudio: each is cut once and gated."""
    paths = pick_utterances(data_dir / "fsdd", 12, seed=3)
    wave, truth = build_recording(paths, gap_s=(0.6, 1.0), lead_s=0.5, noise_db=-50.0, jitter_db=6.0, seed=3)
    path = write_wav(tmp_path / "hiss.wav", wave)
    mic, bus = hear_through_the_sink(pulse_sink, path)
    score = align_and_score(list(mic.segments), truth)
    print(f"hissing room: {score.share:.1%} of {len(truth)} words -> exactly one segment; {score.spurious} spurious")
    print("segments per word:", dict(zip((u.name for u in truth), score.counts)), "segments:",
          [(round(a - score.offset_s, 2), round(b - score.offset_s, 2)) for a, b in mic.segments],
          "words:", [(round(u.start_s, 2), round(u.end_s, 2)) for u in truth], "stats:", mic.stats())
    assert score.share == 1.0 and score.spurious == 0
    check_stimuli(bus.sent)
    same = []  # the gate takes the hiss out: what is heard looks like the clean file
    for (a, b), stim in zip(mic.segments, bus.sent):
        u = max(truth, key=lambda u: min(b, u.end_s + score.offset_s) - max(a, u.start_s + score.offset_s))
        same.append(float(np.corrcoef(read_audio_file(Path(data_dir) / "fsdd" / u.name).ravel(),
                                      stim.data.ravel())[0, 1]))
    print(f"correlation of heard and file spectrograms: median {np.median(same):.3f}, min {min(same):.3f}")
    assert np.median(same) > 0.9


def test_microphone_process_publishes_on_the_bus(pulse_sink, recording, data_dir, tmp_path):
    wave, truth = build_recording(pick_utterances(data_dir / "fsdd", 5, seed=5), lead_s=0.3)
    path = write_wav(tmp_path / "five.wav", wave)
    bus, addr = start_bus(tmp_path / "bus.log")  # on ports it binds itself
    py = [sys.executable, "-m"]
    mic = None
    ctx = zmq.Context()
    client = BusClient(addr, "listener", [b"stimulus.audio", b"stats.microphone"], ctx=ctx)
    try:
        client.handshake(timeout_s=20)
        mic = subprocess.Popen([*py, "tools.cli", "mic", "--bus", addr, "--mic", pulse_sink.device, "--quiet"],
                               cwd=REPO, stderr=subprocess.PIPE, env=os.environ.copy())
        deadline = time.monotonic() + 60
        ready = None
        while ready is None and time.monotonic() < deadline and mic.poll() is None:
            msg = client.recv(100)
            if isinstance(msg, Control) and msg.command == "ready" and msg.source == "microphone":
                ready = msg
        assert ready is not None, f"the microphone never said ready: {_stop(mic)}"
        play_wav_into_sink(path)
        stimuli, stats = [], None
        end = time.monotonic() + 3.0
        while time.monotonic() < end:
            msg = client.recv(100)
            if isinstance(msg, Stimulus):
                stimuli.append(msg)
            elif isinstance(msg, Stats) and msg.source == "microphone":
                stats = msg.values
        print(f"cdz mic over the bus: {len(stimuli)} stimuli for {len(truth)} utterances; stats {stats}")
        assert len(stimuli) == len(truth)
        check_stimuli(stimuli)
        assert stats is not None and stats["utterances"] >= 1 and stats["device"] == "pulse"
        err = _stop(mic)
        assert mic.returncode == 0, err
    finally:
        client.close()
        ctx.term()
        if mic is not None:
            _stop(mic)
        bus.stop()
