"""`cdz lsl out` and `cdz lsl in` as real processes, with real pylsl outlets and inlets on loopback.

A bus forwarder runs in a thread, and a stand-in hub in another thread answers the
processes' questions for the time (the hub's clock is the test's own `time.time_ns`).
Each LSL process runs with its wall clock skewed by CDZ_CLOCK_SKEW_MS, so an event
time can only come out right through the clock exchange with the hub and the mapping
between the bus clock and LSL's `local_clock()`; every event time is checked within 5 ms.

liblsl reads `lsl_api.cfg` from $LSLAPICFG (set for this module and its children):
discovery stays on this machine (ResolveScope = machine, KnownPeers = 127.0.0.1, no
IPv6), so the tests neither depend on multicast nor see a lab's streams. Stream names
and source ids carry a random suffix: two test runs on one machine do not meet.
"""

from __future__ import annotations

import threading
import time
import uuid
from pathlib import Path

import numpy as np
import pytest

from agent.core.messages import Control, Excitation, Recall, Reconstruction, Stats, Stimulus
from agent.runtime.bus import BusClient
from agent.runtime.launcher import Child
from agent.runtime.service import Service

pylsl = pytest.importorskip("pylsl")

pytestmark = pytest.mark.timeout(120)
TOLERANCE_S = 0.005
SKEW = "lsl_out=700,lsl_in=-400"  # both LSL processes' clocks are off; the hub's clock is the bus's
LSL_CONFIG = """[ports]
IPv6 = disable

[lab]
KnownPeers = {127.0.0.1}
ResolveScope = machine

[log]
level = -2
"""


@pytest.fixture(scope="module", autouse=True)
def lsl_on_this_machine(tmp_path_factory):
    """LSLAPICFG for this process (before liblsl first reads it) and the children."""
    cfg = tmp_path_factory.mktemp("lsl") / "lsl_api.cfg"
    cfg.write_text(LSL_CONFIG)
    mp = pytest.MonkeyPatch()
    mp.setenv("LSLAPICFG", str(cfg))
    mp.setenv("CDZ_CLOCK_SKEW_MS", SKEW)
    yield cfg
    mp.undo()


class ClockHub(Service):
    """Tells the time like the hub, from the test's own clock; hears control only."""

    tells_time = True


@pytest.fixture
def bus(thread_bus):
    """(address, a client that hears stimuli, stats and control); a stand-in hub tells the time meanwhile."""
    stop = threading.Event()

    def tell_time() -> None:
        hub = ClockHub(BusClient(thread_bus, "hub", []))
        hub.bus.handshake(timeout_s=20)
        while not stop.is_set():
            msg = hub.bus.recv(20)
            if isinstance(msg, Control):
                hub._dispatch(msg)
        hub.bus.close()

    teller = threading.Thread(target=tell_time, daemon=True)
    teller.start()
    client = BusClient(thread_bus, "tester", [b"stimulus.", b"stats"])
    try:
        client.handshake(timeout_s=20)
        yield thread_bus, client
    finally:
        client.close()
        stop.set()
        teller.join(5)


def start(tmp_path: Path, name: str, *argv: str) -> Child:
    child = Child(name, list(argv), tmp_path / f"{name}.log")
    child.start()
    return child


def log_of(child: Child) -> str:
    return child.log_path.read_text(errors="replace")[-3000:] if child.log_path.exists() else "(no log)"


def await_ready(client: BusClient, child: Child, name: str, timeout_s: float = 60.0) -> None:
    await_all_ready(client, {name: child}, timeout_s)


def await_all_ready(client: BusClient, children: dict[str, Child], timeout_s: float = 60.0) -> None:
    """Until every named process has said ready; fail with its log if one exits first."""
    waiting = dict(children)
    deadline = time.monotonic() + timeout_s
    while waiting and time.monotonic() < deadline:
        for name, child in waiting.items():
            assert child.alive(), f"{name} exited with {child.proc.returncode}:\n{log_of(child)}"
        msg = client.recv(100)
        if isinstance(msg, Control) and msg.command == "ready":
            waiting.pop(msg.source, None)
    assert not waiting, "never said ready: " + "\n".join(f"{n}:\n{log_of(c)}" for n, c in waiting.items())


def await_stats(client: BusClient, name: str, check, timeout_s: float = 15.0) -> dict:
    deadline, last = time.monotonic() + timeout_s, None
    while time.monotonic() < deadline:
        msg = client.recv(100)
        if isinstance(msg, Stats) and msg.source == name:
            last = msg.values
            if check(last):
                return last
    pytest.fail(f"no passing stats from {name} within {timeout_s:g} s; last {last}")


SKEWS_MS = {"lsl_out": 700.0, "lsl_in": -400.0}  # as SKEW says


def await_clock(client: BusClient, name: str) -> float:
    """Until `name`'s offset to the hub's clock is the skew it was given, within 1 ms; the seconds that took.

    Its first exchange with the hub, made while processes start on two busy cores, can be tens of ms
    off (at most half its round trip), and `ClockSync` takes a later correction of more than 5 ms as a
    jump: confirmed over 3 exchanges (a second apart), then phased in over 2 s. The tests check the
    bridge's mapping once the clock is settled; how long settling takes is printed."""
    skew = SKEWS_MS[name.partition("-")[0]]
    began = time.monotonic()
    await_stats(client, name, lambda v: v.get("clock_known") and abs(v.get("clock_offset_ms", 1e9) - skew) < 1.0,
                timeout_s=30.0)
    return time.monotonic() - began


def bus_minus_lsl_ns() -> float:
    """The test's (the hub's) clock minus LSL's local_clock, read side by side."""
    a = pylsl.local_clock()
    b = time.time_ns()
    c = pylsl.local_clock()
    return b - (a + c) * 0.5e9


def suffix() -> str:
    return uuid.uuid4().hex[:8]


# --------------------------------------------------------------------------- the library
def test_the_clock_bridge_maps_both_ways_through_the_narrowest_bracket():
    """Bus clock 5 s ahead of the LSL clock; one reading slowed by 3 ms between its LSL reads is passed over."""
    from sensors.lsl import ClockBridge

    lsl_reads = iter([10.0, 10.003, 10.004, 10.004001, 10.005, 10.005001] * 4)
    bus_reads = iter([15_001_000_000, 15_004_000_500, 15_005_000_500] * 4)
    bridge = ClockBridge(lambda: next(bus_reads), lambda: next(lsl_reads))
    assert bridge.offset_ns() == pytest.approx(5e9, abs=1e3)
    assert bridge.to_lsl(20_000_000_000) == pytest.approx(15.0, abs=1e-6)
    assert bridge.to_bus(12.5) == pytest.approx(17_500_000_000, abs=1e3)


def test_sample_stamps_keep_each_samples_own_stamp_and_extrapolate_past_what_is_kept():
    from sensors.lsl import SampleStamps

    stamps = SampleStamps(rate=100.0, keep=20)
    with pytest.raises(ValueError):
        stamps.at(0)
    stamps.add(np.array([1.0, 1.01, 1.02]))
    stamps.add(np.array([5.0, 5.01]))  # a gap: the sender's stamps, not the rate, say when
    assert (stamps.at(1), stamps.at(3), stamps.at(6)) == (1.01, 5.0, pytest.approx(5.03))
    for k in range(3):
        stamps.add(np.arange(10) * 0.01 + 6.0 + k)
    assert stamps.at(15) == 7.0  # the oldest kept: the chunks before it are dropped
    assert stamps.at(0) == pytest.approx(7.0 - 15 / 100.0)  # older than kept: back from there at the rate
    assert stamps.at(34) == pytest.approx(8.09)


def test_frames_come_as_declared_and_shapes_as_written():
    from sensors.lsl import frame_of, parse_shape

    assert parse_shape("28x28") == (28, 28, 1) and parse_shape(" 480X640x3 ") == (480, 640, 3)
    for bad in ("28", "0x5", "4x4x2", "axb", "4x4x3x1"):
        with pytest.raises(ValueError, match="HEIGHTxWIDTH"):
            parse_shape(bad)
    rgb = np.zeros((2, 3, 3), np.float32)
    rgb[..., 0] = 1.0  # red
    bgr = frame_of(rgb.ravel(), (2, 3, 3))
    assert bgr.dtype == np.uint8 and bgr.shape == (2, 3, 3) and (bgr[..., 2] == 255).all() and (bgr[..., 0] == 0).all()
    grey = frame_of(np.array([0, 128, 300, -5], np.int16), (2, 2, 1))
    assert grey.tolist() == [[0, 128], [255, 0]]


# --------------------------------------------------------------------------- cdz lsl out
def inlet_for(source_id: str, timeout_s: float = 10.0) -> pylsl.StreamInlet:
    found = pylsl.resolve_byprop("source_id", source_id, timeout=timeout_s)
    assert found, f"no LSL stream with source_id {source_id!r}"
    inlet = pylsl.StreamInlet(found[0])
    inlet.open_stream(timeout=5)
    return inlet


def pull(inlet: pylsl.StreamInlet, n: int, timeout_s: float = 10.0) -> tuple[list, list]:
    samples, stamps = [], []
    deadline = time.monotonic() + timeout_s
    while len(samples) < n and time.monotonic() < deadline:
        x, t = inlet.pull_chunk(timeout=0.2)
        samples += x
        stamps += t
    assert len(samples) == n, f"{len(samples)} samples of {n} from {inlet.info().name()}"
    return samples, stamps


def test_lsl_out_streams_carry_event_times_and_their_meaning(bus, tmp_path):
    """Excitations, recalls and a reconstruction published on the bus arrive as samples of streams named,
    typed and described for LabRecorder, each stamped with its message's event time on the LSL clock."""
    address, client = bus
    prefix = f"cdz-test-{suffix()}"
    out = start(tmp_path, "lsl_out", "lsl", "out", "--bus", address, "--source-id", prefix, "--senses", "visual,audio")
    try:
        await_ready(client, out, "lsl_out")
        await_clock(client, "lsl_out")  # its skewed clock is matched to the hub's
        excite, recall = inlet_for(f"{prefix}/excitation/audio"), inlet_for(f"{prefix}/recall/visual")
        info = excite.info(timeout=5)
        assert (info.name(), info.type(), info.channel_count()) == ("cdz-excitation-audio", "cdz.excitation", 4)
        assert info.channel_format() == pylsl.cf_double64 and info.nominal_srate() == pylsl.IRREGULAR_RATE
        channels = info.desc().child("channels").first_child()
        labels = []
        while not channels.empty():
            labels.append((channels.child_value("label"), channels.child_value("unit")))
            channels = channels.next_sibling()
        assert labels == [("cluster", "id"), ("node", "id"), ("strength", "similarity"), ("internal", "bool")]
        from agent import __version__

        assert info.desc().child("cdz").child_value("version") == __version__
        rinfo = recall.info(timeout=5)
        senses = rinfo.desc().child("cdz").child("senses")
        assert [senses.child("sense").child_value(), senses.last_child().child_value()] == ["visual", "audio"]

        now = time.time_ns()
        times = [now - 900_000_000 + k * 137_000_000 for k in range(5)]  # event times in the past, unevenly spaced
        publisher = BusClient(address, "worker-audio", [])
        publisher.handshake(timeout_s=20)
        try:
            for k, t in enumerate(times):
                publisher.send(Excitation(modality="audio", t_ns=t, seq=k, cluster_id=10 + k, node_id=100 + k,
                                          strength=0.5 + k / 10, internal=k == 4, source="worker-audio"))
                publisher.send(Recall(modality="visual", t_ns=t, seq=k, cluster_id=20 + k, cue_modality="audio",
                                      cue_cluster=10 + k, source="hub"))
            picture = np.linspace(0, 1, 28 * 28, dtype=np.float32).reshape(28, 28)
            publisher.send(Reconstruction(modality="visual", t_ns=times[0], seq=0, cluster_id=20,
                                          cue_modality="audio", data=picture, source="worker-visual"))
            samples, stamps = pull(excite, 5)
            offset = bus_minus_lsl_ns()
            assert samples == [pytest.approx([10 + k, 100 + k, 0.5 + k / 10, float(k == 4)]) for k in range(5)]
            rsamples, rstamps = pull(recall, 5)
            assert [x[:3] for x in rsamples] == [[20 + k, 1, 10 + k] for k in range(5)]  # cue_sense 1: audio
            # each stamp back on the hub's clock, against the event time it stands for
            errors = [((s + inlet.time_correction()) * 1e9 + offset - t) / 1e6
                      for inlet, got in ((excite, stamps), (recall, rstamps)) for s, t in zip(got, times)]
            assert max(map(abs, errors)) < TOLERANCE_S * 1e3, errors
            recon = inlet_for(f"{prefix}/reconstruction/visual")
            rinfo = recon.info(timeout=5)
            shape = rinfo.desc().child("cdz").child("shape")
            assert (rinfo.channel_count(), shape.child_value("height"), shape.child_value("width")) == (784, "28", "28")
            print(f"lsl out: stamps minus event times {min(errors):+.3f} to {max(errors):+.3f} ms "
                  f"(clocks skewed {SKEW})")
            for inlet in (excite, recall, recon):
                inlet.close_stream()
        finally:
            publisher.close()
        stats = await_stats(client, "lsl_out", lambda v: v.get("excitations") == 5 and v.get("recalls") == 5)
        assert stats["reconstructions"] == 1 and stats["streams"] == 5
    finally:
        out.stop()
    assert out.proc.returncode == 0, log_of(out)


# --------------------------------------------------------------------------- cdz lsl in
def audio_outlet(name: str, channels: int = 1, rate: int = 8000) -> pylsl.StreamOutlet:
    info = pylsl.StreamInfo(name, "Audio", channels, rate, pylsl.cf_float32, f"{name}-src")
    return pylsl.StreamOutlet(info, chunk_size=160)


def push_wave(outlet: pylsl.StreamOutlet, wave: np.ndarray, rate: int, t0: float, chunk: int = 160) -> None:
    """The wave in chunks of 20 ms, sample i stamped t0 + i / rate (a chunk's stamp is its last sample's),
    pushed as fast as LSL takes them: the stamps, not the pace, say when each sample was captured."""
    for i in range(0, len(wave), chunk):
        part = wave[i:i + chunk]
        outlet.push_chunk(part.reshape(-1, 1), timestamp=t0 + (i + len(part) - 1) / rate)


def collect(client: BusClient, n: int, source: str, timeout_s: float = 20.0) -> list[Stimulus]:
    got: list[Stimulus] = []
    deadline = time.monotonic() + timeout_s
    while len(got) < n and time.monotonic() < deadline:
        msg = client.recv(100)
        if isinstance(msg, Stimulus) and msg.source == source:
            got.append(msg)
    return got


def test_lsl_in_hears_one_word_per_spoken_digit_at_its_onset(bus, tmp_path, data_dir):
    """Five FSDD digits with silence between them, pushed into an LSL outlet: `cdz lsl in` publishes one
    audio stimulus per word, its event time the onset the microphone's word finder finds, stamped by the
    outlet and mapped onto the hub's clock. A burst of NaN samples in a pause is counted, not heard."""
    from sensors.microphone import utterance_stimulus
    from sensors.words import segments_of
    from tools.material.utterance_audio import build_recording, pick_utterances

    address, client = bus
    rate = 8000
    wave, truth = build_recording(pick_utterances(data_dir / "fsdd", 5, seed=3), rate=rate, lead_s=0.5)
    wave = np.concatenate([wave, np.zeros(rate, np.float32)])  # a pause after the last word ends it
    expected = segments_of(wave, rate)  # what the microphone's segmenter finds offline
    assert len(expected) == len(truth)
    gap = int((truth[1].end_s + truth[2].start_s) / 2 * rate)
    sent = wave.copy()
    sent[gap - 200:gap + 200] = np.nan  # in the silence between the 2nd and 3rd words
    name = f"cdz-test-voice-{suffix()}"
    outlet = audio_outlet(name)
    lsl_in = start(tmp_path, "lsl_in", "lsl", "in", name, "--sense", "audio", "--bus", address)
    try:
        await_ready(client, lsl_in, "lsl_in-audio")
        await_clock(client, "lsl_in-audio")
        t0 = pylsl.local_clock() - len(wave) / rate  # as if captured over the last few seconds
        push_wave(outlet, sent, rate, t0)
        stimuli = collect(client, len(truth), "lsl_in-audio")
        offset = bus_minus_lsl_ns()
        assert len(stimuli) == len(truth), f"{len(stimuli)} stimuli for {len(truth)} words:\n{log_of(lsl_in)}"
        errors = [(s.t_ns - ((t0 + seg.onset / rate) * 1e9 + offset)) / 1e6 for s, seg in zip(stimuli, expected)]
        assert max(map(abs, errors)) < TOLERANCE_S * 1e3, errors
        for s, seg, word in zip(stimuli, expected, truth):
            assert (s.modality, s.data.shape) == ("audio", (64, 64))
            assert abs(seg.onset / rate - word.start_s) < 0.15  # the onset is the word's, not a stray sound's
            assert np.abs(s.data - utterance_stimulus(seg, rate)).max() < 1e-5  # featurised as the microphone does
        print(f"lsl in (audio): {len(stimuli)} words, event times minus the outlet's stamps "
              f"{min(errors):+.3f} to {max(errors):+.3f} ms (clocks skewed {SKEW})")
        stats = await_stats(client, "lsl_in-audio", lambda v: v.get("samples") == len(wave))
        assert (stats["nan_samples"], stats["stimuli"], stats["stalled"]) == (400, len(truth), False)
    finally:
        lsl_in.stop()
    assert lsl_in.proc.returncode == 0, log_of(lsl_in)


def frame_outlet(name: str, shape: tuple[int, int, int], fmt: int = pylsl.cf_float32,
                 rate: float = 15.0) -> pylsl.StreamOutlet:
    info = pylsl.StreamInfo(name, "Video", int(np.prod(shape)), rate, fmt, f"{name}-src")
    dims = info.desc().append_child("shape")
    for key, n in zip(("height", "width", "depth"), shape):
        dims.append_child_value(key, str(n))
    return pylsl.StreamOutlet(info)


def test_lsl_in_sees_pictures_and_leaves_out_broken_frames(bus, tmp_path, data_dir):
    """MNIST digits as frames of a stream that declares its shape, with `--pictures`: one visual
    stimulus per frame, made as `cdz recall` makes one of a picture, at the frame's stamp; a frame
    holding a NaN is counted and left out."""
    from replay.data.datasets import load_mnist
    from sensors.files import picture

    address, client = bus
    digits = load_mnist("test", per_class=1).x[:6]
    name = f"cdz-test-digits-{suffix()}"
    outlet = frame_outlet(name, (28, 28, 1))
    lsl_in = start(tmp_path, "lsl_in", "lsl", "in", name, "--sense", "visual", "--pictures", "--bus", address)
    try:
        await_ready(client, lsl_in, "lsl_in-visual")
        await_clock(client, "lsl_in-visual")
        t0 = pylsl.local_clock() - 2.0
        stamps = [t0 + 0.31 * k for k in range(len(digits))]
        for k, (digit, stamp) in enumerate(zip(digits, stamps)):
            outlet.push_sample(digit.ravel(), stamp)  # float32 in [0, 1]
            if k == 2:
                broken = np.full(28 * 28, 0.5, np.float32)
                broken[17] = np.nan
                outlet.push_sample(broken, stamp + 0.1)
        stimuli = collect(client, len(digits), "lsl_in-visual")
        offset = bus_minus_lsl_ns()
        assert len(stimuli) == len(digits), log_of(lsl_in)
        errors = [(s.t_ns - (t * 1e9 + offset)) / 1e6 for s, t in zip(stimuli, stamps)]
        assert max(map(abs, errors)) < TOLERANCE_S * 1e3, errors
        for s, digit in zip(stimuli, digits):
            assert s.data.shape == (28, 28)
            assert np.abs(s.data - picture(digit).x).max() < 0.05  # seen as the same picture given as a file
        stats = await_stats(client, "lsl_in-visual", lambda v: v.get("samples") == len(digits) + 1)
        assert (stats["bad_frames"], stats["stimuli"]) == (1, len(digits))
        print(f"lsl in (pictures): {len(stimuli)} stimuli, event times minus stamps "
              f"{min(errors):+.3f} to {max(errors):+.3f} ms")
    finally:
        lsl_in.stop()
    assert lsl_in.proc.returncode == 0, log_of(lsl_in)


def test_lsl_in_sees_cards_held_up_as_the_camera_does(bus, tmp_path, data_dir):
    """A filmed card video (RGB frames sent as 8-bit pixels, shape given with --shape): the stimuli
    and the frames they come from are those of the camera's own pipeline over the same video."""
    import cv2

    from replay.data.datasets import load_mnist
    from sensors.camera import extract_stimuli
    from tools.material.card_video import make_card_video

    address, client = bus
    mnist = load_mnist("test", per_class=1)
    video = tmp_path / "cards.avi"
    make_card_video(video, mnist.x[:3], mnist.y[:3], seed=1, fps=15, size=(320, 240))
    expected = extract_stimuli(str(video))  # (capture ns, frame index, stimulus) per emission
    cap = cv2.VideoCapture(str(video))
    frames = []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        frames.append(frame)
    cap.release()
    assert len(expected) >= 3 and frames
    name = f"cdz-test-cards-{suffix()}"
    outlet = frame_outlet(name, (240, 320, 3), pylsl.cf_int8, rate=15.0)
    lsl_in = start(tmp_path, "lsl_in", "lsl", "in", name, "--sense", "visual", "--shape", "240x320x3",
                   "--bus", address)
    try:
        await_ready(client, lsl_in, "lsl_in-visual")
        await_clock(client, "lsl_in-visual")
        t0 = pylsl.local_clock() - len(frames) / 15.0
        for k, frame in enumerate(frames):  # RGB, 8-bit pixels as LSL's int8
            outlet.push_sample(np.ascontiguousarray(frame[..., ::-1]).ravel().view(np.int8), t0 + k / 15.0)
        stimuli = collect(client, len(expected), "lsl_in-visual")
        offset = bus_minus_lsl_ns()
        assert len(stimuli) == len(expected), log_of(lsl_in)
        errors = [(s.t_ns - ((t0 + index / 15.0) * 1e9 + offset)) / 1e6 for s, (_, index, _) in zip(stimuli, expected)]
        assert max(map(abs, errors)) < TOLERANCE_S * 1e3, errors
        for s, (_, _, stim) in zip(stimuli, expected):
            assert np.abs(s.data - stim).max() < 1e-5
        print(f"lsl in (cards): {len(stimuli)} stimuli from {len(frames)} frames, event times minus stamps "
              f"{min(errors):+.3f} to {max(errors):+.3f} ms")
    finally:
        lsl_in.stop()
    assert lsl_in.proc.returncode == 0, log_of(lsl_in)


def test_a_stream_that_stops_is_reported_and_taken_up_again(bus, tmp_path):
    """The sender goes away: `cdz lsl in` says the stream stalled (log and stats) and keeps running; a
    sender with the same name and source id comes back and its words are heard again."""
    address, client = bus
    name, rate = f"cdz-test-lost-{suffix()}", 8000
    tone = (0.3 * np.sin(np.arange(int(0.4 * rate)) * 2 * np.pi * 300 / rate)).astype(np.float32)
    word = np.concatenate([np.zeros(rate // 2, np.float32), tone, np.zeros(rate, np.float32)])
    outlet = audio_outlet(name)
    lsl_in = start(tmp_path, "lsl_in", "lsl", "in", name, "--sense", "audio", "--stall", "0.5", "--bus", address)
    try:
        await_ready(client, lsl_in, "lsl_in-audio")
        push_wave(outlet, word, rate, pylsl.local_clock() - len(word) / rate)
        assert len(collect(client, 1, "lsl_in-audio")) == 1
        del outlet  # the sender is gone
        await_stats(client, "lsl_in-audio", lambda v: v.get("stalled") and v.get("stalls") == 1)
        assert "no samples from LSL stream" in log_of(lsl_in)
        outlet = audio_outlet(name)  # back, with the same source id: liblsl reconnects the inlet
        deadline = time.monotonic() + 20
        heard: list[Stimulus] = []
        while not heard and time.monotonic() < deadline:
            push_wave(outlet, word, rate, pylsl.local_clock() - len(word) / rate)
            heard = collect(client, 1, "lsl_in-audio", timeout_s=2.0)
        assert heard, log_of(lsl_in)
        await_stats(client, "lsl_in-audio", lambda v: v.get("stimuli", 0) >= 2 and v.get("lost") == 0)
        assert lsl_in.alive() and "is back after" in log_of(lsl_in)  # (it stalls again: this sender sends bursts)
    finally:
        lsl_in.stop()
    assert lsl_in.proc.returncode == 0, log_of(lsl_in)


def cdz(*argv: str, timeout_s: float = 60.0):
    import subprocess
    import sys

    from tests.conftest import REPO

    return subprocess.run([sys.executable, "-m", "tools.cli", *argv], cwd=REPO, capture_output=True, text=True,
                          timeout=timeout_s)


def test_a_stream_the_sense_cannot_take_is_one_line_and_exit_2(bus):
    """A 2-channel sound, frames whose shape does not match the channels, a stream nobody sends: each is
    a one-line error naming the stream and what is wrong (exit 2), before anything joins the bus."""
    address, _ = bus
    stereo = audio_outlet(f"cdz-test-stereo-{suffix()}", channels=2)
    odd = frame_outlet(f"cdz-test-odd-{suffix()}", (28, 28, 1))
    cases = [((stereo.get_info().name(), "--sense", "audio"), "has 2 channels; --sense audio takes a 1-channel"),
             ((odd.get_info().name(), "--sense", "visual", "--shape", "20x20"), "has 784 channels, but frames of "
                                                                                "shape 20x20x1 need 400"),
             (("cdz-test-nobody", "--sense", "audio", "--resolve-timeout", "1"), "no LSL stream named "
                                                                                 "'cdz-test-nobody' answered")]
    for args, said in cases:
        done = cdz("lsl", "in", *args, "--bus", address)
        assert done.returncode == 2 and said in done.stderr, (args, done.returncode, done.stderr[-2000:])
        assert "Traceback" not in done.stderr


# --------------------------------------------------------------------------- a round trip
TINY = ["data.digits=[0,1]", 'data.speakers=["jackson"]', "data.per_class=40", "data.test_per_class=10",
        "teacher.epochs=6", "cortex.initial_nodes=20", "senses.audio.encoder.arch=linear",
        "senses.visual.encoder.epochs=2", "senses.visual.encoder.batch_size=16", "refine.teach_min_steps=40"]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, data_dir) -> Path:
    from tests.runs import train_run

    return train_run(tmp_path_factory, data_dir, TINY, name="lsl")


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_spoken_digits_in_through_lsl_come_back_as_recalls_stamped_with_their_onsets(thread_bus, tmp_path,
                                                                                      tiny_run, data_dir):
    """LSL -> bus -> the live agent -> bus -> LSL: spoken digits pushed into an outlet go in through
    `cdz lsl in`, a live hub and workers hear them and recall the other sense, and `cdz lsl out` gives
    every excitation and recall back on LSL stamped with the onset of the word that caused it, on the
    sending outlet's own clock (through two skewed process clocks and the hub's) within 5 ms."""
    from replay.data.datasets import FSDD_INDICES
    from sensors.words import segments_of
    from tools.material.utterance_audio import build_recording

    address = thread_bus
    rate = 8000
    paths = [data_dir / "fsdd" / f"{d}_jackson_{i}.wav" for i in FSDD_INDICES["test"] for d in (0, 1)][:6]
    wave, truth = build_recording(paths, rate=rate, lead_s=0.5, seed=2)
    wave = np.concatenate([wave, np.zeros(rate, np.float32)])
    onsets = [seg.onset / rate for seg in segments_of(wave, rate)]
    assert len(onsets) == len(truth)
    name, prefix = f"cdz-test-rt-{suffix()}", f"cdz-test-rt-{suffix()}"
    outlet = audio_outlet(name)
    client = BusClient(address, "tester", [b"stats"])
    children: list[Child] = []
    try:
        client.handshake(timeout_s=20)
        common = ["--bus", address, "--run", str(tiny_run), "--live", "--quiet"]
        children += [start(tmp_path, "hub", "hub", *common),
                     *(start(tmp_path, f"worker-{m}", "worker", m, *common) for m in ("visual", "audio")),
                     start(tmp_path, "lsl_out", "lsl", "out", "--bus", address, "--source-id", prefix, "--quiet"),
                     start(tmp_path, "lsl_in", "lsl", "in", name, "--sense", "audio", "--bus", address, "--quiet")]
        names = ["hub", "worker-visual", "worker-audio", "lsl_out", "lsl_in-audio"]
        await_all_ready(client, dict(zip(names, children)), timeout_s=180)
        settled = [await_clock(client, who) for who in ("lsl_out", "lsl_in-audio")]
        print(f"round trip: clocks settled {sum(settled):.1f} s after every process said ready")
        excite, recall = inlet_for(f"{prefix}/excitation/audio"), inlet_for(f"{prefix}/recall/visual")
        t0 = pylsl.local_clock() - len(wave) / rate
        push_wave(outlet, wave, rate, t0)
        stamps = [t0 + s for s in onsets]  # the outlet's stamp of each word's first sample
        excited, excited_at = pull(excite, len(onsets), timeout_s=30)
        recalled, recalled_at = [], []
        deadline = time.monotonic() + 5.0
        while time.monotonic() < deadline:
            x, t = recall.pull_chunk(timeout=0.2)
            recalled += x
            recalled_at += t
        e_err = [(s + excite.time_correction() - want) * 1e3 for s, want in zip(excited_at, stamps)]
        r_err = [min(((s + recall.time_correction() - want) * 1e3 for want in stamps), key=abs) for s in recalled_at]
        print(f"round trip: {len(excited)} excitations, {len(recalled)} recalls of {len(onsets)} words; LSL stamps "
              f"back minus the outlet's onset stamps: excitations {min(e_err):+.3f} to {max(e_err):+.3f} ms, "
              f"recalls {min(r_err, default=0):+.3f} to {max(r_err, default=0):+.3f} ms")
        assert max(map(abs, e_err)) < TOLERANCE_S * 1e3, e_err
        assert all(x[0] >= 0 for x in excited)  # every word was classified
        assert recalled, "the hub recalled nothing"
        assert max(map(abs, r_err)) < TOLERANCE_S * 1e3, r_err
        assert all(x[1] == 1 for x in recalled)  # cued by audio (index 1 of visual,audio)
    finally:
        client.close()
        for child in children:
            child.stop()
