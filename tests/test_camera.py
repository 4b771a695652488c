"""sensors.camera and sensors.card: digit cards filmed by a camera become MNIST-like stimuli on the bus.

The "camera" is a video written by tools.material.card_video (printed MNIST test digits on
cards, uneven light, blur, hand jitter) and read back through real OpenCV capture,
so the ground truth of which card is in view in which frame is known.
"""

from __future__ import annotations

import argparse
import logging
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from agent.runtime.bus import BusClient, free_tcp_bus
from agent.core.messages import Frame, Stats, Stimulus
from sensors import camera as C
from sensors import card as K
from sensors.errors import FeatureError
from sensors.image_features import ink_to_mnist
from tools.material.card_video import make_card_video
from tools.cli import main as cdz
from tools.processes import camera as camera_process

from tests.processes import bind_forwarder, wait_for

pytestmark = pytest.mark.timeout(300)

N_CARDS = 50
SEED = 3
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def mnist(data_dir):
    mp = pytest.MonkeyPatch()
    mp.setenv("CDZ_DATA_DIR", str(data_dir))
    from replay.data.datasets import load_mnist

    yield load_mnist
    mp.undo()


@pytest.fixture(scope="module")
def card_video(mnist, tmp_path_factory):
    """(path, ground truth, the printed digits) of a 50-card video."""
    test = mnist("test", per_class=50)
    pick = np.random.default_rng(SEED).choice(len(test.y), N_CARDS, replace=False)
    path = tmp_path_factory.mktemp("camera") / "cards.avi"
    truth = make_card_video(path, test.x[pick], test.y[pick], seed=SEED)
    return path, truth, test.x[pick]


@pytest.fixture(scope="module")
def once_per_card(card_video):
    """extract_stimuli with one stimulus per card appearance, and the seconds it took."""
    start = time.monotonic()
    out = C.extract_stimuli(str(card_video[0]), max_rate=0.0)
    return out, time.monotonic() - start


def _card_of(truth: list[dict]) -> dict[int, int]:
    return {i: t["card"] for t in truth for i in range(t["first"], t["last"] + 1)}


def _per_card(out, truth) -> tuple[np.ndarray, int]:
    """Stimuli per card, and stimuli emitted while no card was in view."""
    card_of, counts, stray = _card_of(truth), np.zeros(len(truth), int), 0
    for _, index, _ in out:
        if index in card_of:
            counts[card_of[index]] += 1
        else:
            stray += 1
    return counts, stray


def _small_video(path, mnist, n: int, seed: int = 1) -> list[dict]:
    test = mnist("test", per_class=2)
    return make_card_video(path, test.x[:n], test.y[:n], seed=seed, show_s=1.0, gap_s=0.5)


# ---------------------------------------------------------------------- (a) one stimulus per card
@pytest.mark.slow
def test_one_stimulus_per_card(card_video, once_per_card):
    _, truth, _ = card_video
    out, took = once_per_card
    counts, stray = _per_card(out, truth)
    share = float(np.mean(counts == 1))
    print(f"\none stimulus per card: {share:.3f} of {len(truth)} cards (counts {np.bincount(counts).tolist()}, "
          f"{stray} without a card), {truth[-1]['last'] + 1} frames in {took:.1f} s")
    assert share >= 0.95
    assert stray == 0
    assert [t_ns for t_ns, _, _ in out] == sorted(t_ns for t_ns, _, _ in out)
    for _, _, stim in out:
        assert stim.shape == (28, 28) and stim.dtype == np.float32 and 0.0 <= stim.min() and stim.max() <= 1.0


@pytest.mark.slow
def test_max_rate_limits_repeats(card_video):
    """With the default 2 per second, a card in view for 1.5 s gives 2 to 4 stimuli, never more."""
    path, truth, _ = card_video
    out = C.extract_stimuli(str(path), max_rate=2.0)
    counts, stray = _per_card(out, truth)
    assert stray == 0
    assert counts.max() <= 4 and np.mean((counts >= 2) & (counts <= 4)) >= 0.95, np.bincount(counts)


# ---------------------------------------------------------------------- (b) stimuli look like MNIST
@pytest.mark.slow
def test_stimuli_look_like_mnist(card_video, once_per_card, mnist):
    _, truth, printed = card_video
    train = mnist("train", per_class=1000)
    flat = train.x.reshape(len(train.x), -1).astype(np.float32)
    sq = (flat ** 2).sum(axis=1)

    def nearest(img: np.ndarray) -> int:
        v = img.reshape(-1).astype(np.float32)
        return int(train.y[np.argmin(sq - 2.0 * flat @ v)])

    card_of = _card_of(truth)
    out = once_per_card[0]
    agree = np.mean([nearest(stim) == truth[card_of[index]]["label"] for _, index, stim in out])
    reference = np.mean([nearest(x) == t["label"] for x, t in zip(printed, truth)])
    print(f"\n1-NN (10000 MNIST train digits) label agreement: camera stimuli {agree:.3f}, "
          f"the printed digits themselves {reference:.3f}")
    assert agree >= 0.85


# ---------------------------------------------------------------------- (c) the process on a real bus
@pytest.mark.slow
def test_camera_process_publishes_stimuli_and_frames(mnist, tmp_path):
    path = tmp_path / "short.avi"
    truth = _small_video(path, mnist, 3)
    fwd, address = bind_forwarder()
    threading.Thread(target=fwd.run, daemon=True).start()
    viewer = BusClient(address, "viewer", [b"stimulus.visual", b"frame.visual", b"stats.camera"])
    got: list = []
    stop = threading.Event()
    try:
        viewer.handshake(timeout_s=10)

        def listen() -> None:
            while not stop.is_set():
                msg = viewer.recv(timeout_ms=50)
                if msg is not None:
                    got.append(msg)

        listener = threading.Thread(target=listen, daemon=True)
        listener.start()
        args = argparse.Namespace(camera=str(path), max_rate=0.0, steady_frames=3, no_realtime=False, stall=2.0,
                                  bus=address, keys=None, quiet=True, connect_timeout=10.0)
        start = time.monotonic()
        assert camera_process.run(args) == 0  # realtime: paced at the file's 15 fps, ends by itself at the end
        took = time.monotonic() - start
        wait_for(lambda: sum(isinstance(m, Stimulus) for m in got) >= len(truth), 5.0, "every stimulus to arrive")
        stop.set()
        listener.join(timeout=2)
    finally:
        viewer.close()
        fwd.close()
    stims = [m for m in got if isinstance(m, Stimulus)]
    frames = [m for m in got if isinstance(m, Frame)]
    stats = [m.values for m in got if isinstance(m, Stats) and m.source == "camera"]
    cap = cv2.VideoCapture(str(path))
    duration = cap.get(cv2.CAP_PROP_FRAME_COUNT) / cap.get(cv2.CAP_PROP_FPS)
    cap.release()
    print(f"\ncamera process: {len(stims)} stimuli, {len(frames)} previews, {took:.1f} s for a {duration:.1f} s video; "
          f"last stats {stats[-1] if stats else None}")
    assert len(stims) == len(truth)
    assert [s.seq for s in stims] == list(range(len(stims))) and [s.mseq for s in stims] == [s.seq for s in stims]
    assert all(s.modality == "visual" and s.source == "camera" and s.data.shape == (28, 28) for s in stims)
    assert all(0 < s.t_ns <= time.time_ns() for s in stims)
    assert took >= 0.8 * duration  # paced like a camera, not read as fast as possible
    assert 0.5 * duration * 5 <= len(frames) <= duration * 5 + 3  # ~5 previews a second
    assert all(f.data.dtype == np.uint8 and f.data.shape[1] == 160 and f.data.shape[2] == 3 for f in frames)
    assert stats and stats[-1]["cards"] == len(truth) and stats[-1]["emitted"] == len(truth)
    assert 8.0 <= max(s["fps"] for s in stats) <= 20.0
    assert 0.0 < stats[-1]["latency_ms_mean"] < 500.0


@pytest.mark.slow
def test_camera_subprocess_stops_cleanly_on_sigterm(mnist, tmp_path):
    """`cdz camera` on its own: publishes, and SIGTERM ends it at once with exit code 0."""
    path = tmp_path / "long.avi"
    _small_video(path, mnist, 6)  # ~9 s at its own pace: still running when stopped
    fwd, address = bind_forwarder()
    threading.Thread(target=fwd.run, daemon=True).start()
    viewer = BusClient(address, "viewer", [b"stimulus.visual"])
    proc = None
    try:
        viewer.handshake(timeout_s=10)
        proc = subprocess.Popen([sys.executable, "-m", "tools.cli", "camera", "--camera", str(path), "--bus", address,
                                 "--quiet"], cwd=REPO, stderr=subprocess.PIPE, text=True)
        deadline, first = time.monotonic() + 30, None
        while first is None and time.monotonic() < deadline and proc.poll() is None:
            msg = viewer.recv(timeout_ms=100)
            first = msg if isinstance(msg, Stimulus) else None
        assert first is not None, "no stimulus from the camera process"
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(timeout=10)
        err = proc.stderr.read()
        assert rc == 0, err
        assert "Traceback" not in err
    finally:
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()
        viewer.close()
        fwd.close()


# ---------------------------------------------------------------------- (d) a missing source
@pytest.mark.parametrize("source", ["7", "/no/such/cards.avi"])
def test_missing_source_is_a_clear_error(source):
    with pytest.raises(C.SensorError) as err:
        C.open_source(source)
    text = str(err.value)
    assert source.strip("/").split("/")[-1] in text and "--camera INDEX|FILE|URL" in text
    assert isinstance(err.value, RuntimeError)


def test_missing_camera_gives_one_line_not_a_traceback(capfd):
    rc = cdz(["camera", "--camera", "7", "--bus", free_tcp_bus(), "--quiet"])
    err = capfd.readouterr().err
    assert rc == 2
    assert "cannot open camera 7" in err and "--camera" in err and "Traceback" not in err
    assert "WARN" not in err  # OpenCV's own log lines are kept quiet


# ---------------------------------------------------------------------- (e) a source that stops sending
class StoppingCapture:
    """A camera that sends `n` frames, then nothing (reads fail), until `resume` is set."""

    def __init__(self, n: int):
        self.n = n
        self.resume = threading.Event()
        self.released = False

    def read(self):
        if self.n > 0 or self.resume.is_set():
            self.n -= 1
            time.sleep(0.01)
            return True, np.full((48, 64, 3), 200, np.uint8)
        time.sleep(0.01)
        return False, None

    def get(self, prop):
        return 0.0

    def release(self):
        self.released = True


def test_stalled_camera_is_reported_not_fatal(caplog):
    caplog.set_level(logging.WARNING, logger="sensors.camera")
    cap = StoppingCapture(5)
    grabber = C.FrameGrabber(cap, is_file=False, stall_s=0.3).start()
    try:
        assert grabber.latest(timeout_s=2.0) is not None
        time.sleep(0.6)
        grabber.latest()
        s = grabber.stats()
        assert s["stalled"] and s["stalls"] == 1 and s["frames"] == 5 and s["read_failures"] > 0
        for _ in range(10):
            time.sleep(0.03)
            grabber.latest()
        assert grabber.stats()["stalls"] == 1  # one stall, counted once ...
        assert sum("no new frame" in r.getMessage() for r in caplog.records) == 1  # ... and logged once
        cap.resume.set()
        assert grabber.latest(timeout_s=2.0) is not None
        assert not grabber.stats()["stalled"]
    finally:
        grabber.stop()
    assert cap.released


class FakeBus:
    name = "camera"
    dropped = 0

    def __init__(self):
        self.sent: list = []

    def send(self, msg) -> None:
        self.sent.append(msg)


@pytest.mark.slow
def test_file_that_ends_without_exit_is_a_stall(mnist, tmp_path):
    path = tmp_path / "one.avi"
    _small_video(path, mnist, 1)
    bus = FakeBus()
    cam = C.Camera(bus, str(path), realtime=False, exit_at_end=False, stall_s=0.3, max_rate=0.0)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not (cam.grabber.finished and cam.stats()["stalled"]):
            cam.tick()
        s = cam.stats()
    finally:
        cam.close()
    assert cam.running and s["eof"] and s["stalled"] and s["stalls"] == 1
    assert s["emitted"] == 1 and sum(isinstance(m, Stimulus) for m in bus.sent) == 1


# ---------------------------------------------------------------------- (f) ink_to_mnist
def _mass_centre(img: np.ndarray) -> tuple[float, float]:
    ys, xs = np.indices(img.shape)
    return float((ys * img).sum() / img.sum()), float((xs * img).sum() / img.sum())


@pytest.mark.parametrize("shape,box", [((90, 50), (10, 60, 5, 40)), ((300, 400), (40, 250, 20, 380)),
                                       ((7, 5), (1, 6, 1, 4))])
def test_ink_to_mnist_centres_mass_and_fits_20x20(shape, box):
    crop = np.zeros(shape, np.float32)
    y0, y1, x0, x1 = box
    crop[y0:y1, x0:x0 + max(1, (x1 - x0) // 4)] = 0.8  # an L: mass far from the box centre
    crop[y1 - max(1, (y1 - y0) // 5):y1, x0:x1] = 0.8
    out = ink_to_mnist(crop)
    assert out.shape == (28, 28) and out.dtype == np.float32
    assert abs(out.max() - 1.0) < 1e-5 and out.min() >= 0.0
    cy, cx = _mass_centre(out)
    assert abs(cy - 14) <= 1.0 and abs(cx - 14) <= 1.0
    rows, cols = np.flatnonzero(out.any(axis=1)), np.flatnonzero(out.any(axis=0))
    assert rows[-1] - rows[0] + 1 <= 20 and cols[-1] - cols[0] + 1 <= 20
    assert max(rows[-1] - rows[0], cols[-1] - cols[0]) + 1 == 20  # the longer side fills the box


def test_ink_to_mnist_leaves_mnist_digits_as_they_are(mnist):
    x = mnist("test", per_class=10).x
    diff = np.mean([np.abs(ink_to_mnist(d) - d).mean() for d in x])
    assert diff < 0.01


@pytest.mark.parametrize("bad", [np.zeros((30, 30)), np.zeros((0, 5)), np.full((4, 4), np.nan), np.zeros((3, 3, 3))])
def test_ink_to_mnist_rejects_blank_or_bad_input(bad):
    with pytest.raises(FeatureError):
        ink_to_mnist(bad)


# ---------------------------------------------------------------------- finder and tracker
def test_find_card_sees_nothing_in_an_empty_scene():
    rng = np.random.default_rng(0)
    ramp = np.linspace(120, 220, 640)[None, :, None] + rng.normal(0, 3, (480, 640, 3))
    assert K.find_card(np.clip(ramp, 0, 255).astype(np.uint8)) is None
    assert K.find_card(np.zeros((480, 640, 3), np.uint8)) is None


@pytest.mark.parametrize("angle", [-12.0, 9.0])
def test_find_card_turns_a_tilted_card_upright(angle):
    """A card held at a slant: its straight edges say how to turn the digit (a bar here) upright."""
    card = np.full((220, 170), 240, np.float32)
    card[40:180, 75:95] = 40  # a "1" printed upright on the card
    big = np.zeros((480, 640), np.float32)
    cover = np.zeros_like(big)
    big[130:350, 235:405], cover[130:350, 235:405] = card, 1.0
    turn = cv2.getRotationMatrix2D((320, 240), angle, 1.0)
    big, cover = cv2.warpAffine(big, turn, (640, 480)), cv2.warpAffine(cover, turn, (640, 480))
    wall = np.linspace(150, 190, 640, dtype=np.float32)[None, :].repeat(480, axis=0)
    frame = np.clip(wall * (1 - cover) + big * cover, 0, 255).astype(np.uint8)
    upright, box = K.find_card(frame)
    slanted, _ = K.find_card(frame, upright=False)
    width = lambda crop: int((crop.max(axis=0) > 0.5).sum())  # noqa: E731
    assert width(upright) <= 13 < width(slanted)  # the bar is 10 px wide at the 320 px working size
    x, y, w, h = box
    assert abs(x + w / 2 - 320) < 10 and abs(y + h / 2 - 240) < 10


def test_tracker_emits_once_per_steady_card_and_sees_swaps():
    a = np.zeros((28, 28), np.float32)
    a[4:24, 12:16] = 1.0  # a "1"
    b = np.zeros((28, 28), np.float32)
    b[6:22, 6:22] = 1.0
    b[9:19, 9:19] = 0.0  # a "0"
    tr = K.CardTracker(steady_frames=3, max_rate=0.0)
    seq = [None] * 3 + [a] * 6 + [None] * 5 + [a] * 6 + [b] * 6 + [None, a, None] + [a] * 2
    emits = [i for i, s in enumerate(seq) if tr.update(s, i / 15.0)]
    assert emits == [5, 16, 22]  # third steady frame of each card; a one-frame flash never counts
    assert tr.cards == 3 and tr.emitted == 3 and tr.no_card == 10

    tr = K.CardTracker(steady_frames=3, max_rate=0.0)
    glitches = [a] * 5 + [b] + [a] * 5 + [b, None, b] + [a] * 5  # smeared frames in between, same card
    assert sum(tr.update(s, i / 15.0) for i, s in enumerate(glitches)) == 1 and tr.cards == 1

    tr = K.CardTracker(steady_frames=1, max_rate=2.0)
    emits = [i for i in range(60) if tr.update(a, i / 30.0)]
    assert emits == [0, 15, 30, 45]
