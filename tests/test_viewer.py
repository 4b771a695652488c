"""The dashboard: pure state and rendering, and a real Viewer on a real bus writing video and PNGs."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from agent.runtime.bus import BusClient
from agent.core.messages import Control, Excitation, Frame, Reconstruction, Stats, Stimulus, Weights
from tools.dashboard import FONT, LABEL, ViewerState, _scale, layout, render, stats_lines
from tools.processes.viewer import FOXGLOVE_ONLY, PROCESS, run
from tools.viewer import HeadlessOutput, Viewer, ViewerError, gui_available, open_output
from tests.processes import wait_for

pytestmark = pytest.mark.timeout(120)
REPO = Path(__file__).resolve().parents[1]
NOW = 1000.0


def _digit() -> np.ndarray:
    img = np.zeros((28, 28), np.uint8)
    cv2.putText(img, "7", (6, 24), cv2.FONT_HERSHEY_SIMPLEX, 0.9, 255, 2)
    return img.astype(np.float32) / 255.0


def _spec() -> np.ndarray:
    rng = np.random.default_rng(1)
    return np.clip(rng.random((64, 64)) * 0.3 + np.linspace(1, 0, 64)[:, None] * 0.6, 0, 1).astype(np.float32)


def _messages(t_ns: int = 0, seq: int = 0) -> list:
    """One message of every kind the viewer draws."""
    frame = np.zeros((120, 160, 3), np.uint8)
    cv2.circle(frame, (80, 60), 40, (255, 255, 255), 8)
    weights = np.random.default_rng(seq).random((5, 4)).astype(np.float32)
    return [Frame(modality="visual", t_ns=t_ns, seq=seq, data=frame),
            Stimulus(modality="visual", t_ns=t_ns, seq=seq, data=_digit()),
            Stimulus(modality="audio", t_ns=t_ns, seq=seq, data=_spec()),
            Excitation(modality="visual", t_ns=t_ns, seq=seq, cluster_id=3, node_id=10),
            Excitation(modality="audio", t_ns=t_ns, seq=seq, cluster_id=5, node_id=11),
            Reconstruction(modality="visual", t_ns=t_ns, seq=seq, cluster_id=3, cue_modality="audio", data=_digit()),
            Reconstruction(modality="audio", t_ns=t_ns, seq=seq, cluster_id=5, cue_modality="visual", data=_spec()),
            Weights(modality="visual", t_ns=t_ns, seq=seq, target="audio", rows=tuple(range(5)), cols=tuple(range(4)),
                    data=weights),
            Stats(values={"rate_per_s": 50.0, "clusters": 12}, source="hub", t_ns=t_ns)]


def _full_state() -> ViewerState:
    state = ViewerState()
    for m in _messages():
        assert state.update(m, now=NOW - 0.2)
    return state


def _differs(a: np.ndarray, b: np.ndarray, panel: str) -> bool:
    r = layout(a.shape[1], a.shape[0])[panel]
    return bool(np.any(r.of(a) != r.of(b)))


# ---------------------------------------------------------------------- pure parts
@pytest.mark.parametrize("size", [(960, 540), (640, 360), (1280, 720)])
def test_render_gives_bgr_of_the_asked_size(size):
    w, h = size
    for state in (ViewerState(), _full_state()):
        img = render(state, w, h, now=NOW)
        assert img.shape == (h, w, 3) and img.dtype == np.uint8


def test_full_panels_differ_from_empty_ones():
    empty, full = render(ViewerState(), now=NOW), render(_full_state(), now=NOW)
    for panel in ("sees", "hears", "fires", "recalls", "weights", "stats"):
        assert _differs(empty, full, panel), panel


def test_only_the_panels_with_data_change():
    state = ViewerState()
    state.update(Stimulus(modality="audio", t_ns=0, seq=0, data=_spec()), now=NOW)
    empty, some = render(ViewerState(), now=NOW), render(state, now=NOW)
    assert _differs(empty, some, "hears")
    for panel in ("sees", "fires", "recalls", "weights"):
        assert not _differs(empty, some, panel), panel


def test_a_third_sense_gets_its_own_recall_column_and_a_reward_is_written_out():
    """A reward's recall is one number: the recalls panel gains a column for it; the others keep theirs."""
    two = _full_state()
    three = _full_state()
    three.update(Excitation(modality="reward", t_ns=0, seq=0, cluster_id=2, node_id=1), now=NOW - 0.2)
    three.update(Reconstruction(modality="reward", t_ns=0, seq=0, cluster_id=2, cue_modality="visual",
                                data=np.full((1, 1), 2.0, np.float32)), now=NOW - 0.2)
    a, b = render(two, now=NOW), render(three, now=NOW)
    assert _differs(a, b, "recalls") and _differs(a, b, "fires")
    for panel in ("sees", "hears", "weights"):
        assert not _differs(a, b, panel), panel
    r = layout()["recalls"]
    right = r.of(b)[:, 2 * r.w // 3 + 8:]  # the third column: the reward, written in the label colour
    assert np.any(np.all(right == np.array(LABEL, np.uint8), axis=-1))


LIVE_SOURCES = ("hub", "worker-visual", "worker-audio", "camera", "microphone", "speaker", "thinker", "player")


def _busy_state(last: float = 2.0) -> ViewerState:
    """A live session's worth of stats: every process reporting every value the panel shows."""
    state = _full_state()
    for name in LIVE_SOURCES:
        values = {"rate_per_s": 50.0, "clusters": 12, "nodes": 340, "played": 1234, "latency_p50_ms": 3.2,
                  "bad_messages": last if name == "worker-visual" else 2}
        state.update(Stats(values=values, source=name), now=NOW - 0.2)
    return state


@pytest.mark.parametrize("size", [(960, 540), (1280, 720), (640, 360), (320, 180)])
def test_every_stats_line_lies_inside_its_panel(size):
    """Eight processes' stats ran off the bottom of the panel; now every line drawn is inside it."""
    w, h = size
    r = layout(w, h)["stats"]
    lines = stats_lines(_busy_state(), r, _scale(np.empty((h, w))))
    assert lines
    for line in lines:
        (tw, th), _ = cv2.getTextSize(line.text, FONT, line.scale, 1)
        assert r.y <= line.y - th and line.bottom <= r.y + r.h <= h, (line, r)
        assert r.x <= line.x and line.x + tw <= r.x + r.w <= w, (line, r)
    assert [a.y for a in lines] == sorted({a.y for a in lines})  # no two lines on one row
    if size[0] >= 960:  # room enough for every process: none is left out
        drawn = " ".join(line.text for line in lines)
        assert all(f"{name}:" in drawn for name in LIVE_SOURCES), drawn


def test_the_last_process_in_the_stats_panel_is_drawn():
    """The panel lists processes by name; the last one's values (worker-visual) must show in the picture."""
    a, b = render(_busy_state(2.0), now=NOW), render(_busy_state(7.0), now=NOW)
    assert _differs(a, b, "stats")
    for panel in ("sees", "hears", "fires", "recalls", "weights"):
        assert not _differs(a, b, panel), panel


def test_state_keeps_the_latest_of_everything():
    state = ViewerState()
    for i, c in enumerate([4, 4, -1, 9]):
        state.update(Excitation(modality="visual", t_ns=0, seq=i, cluster_id=c, node_id=i), now=NOW + i)
    for m in _messages():
        state.update(m, now=NOW)
    newer = np.full((28, 28), 0.5, np.float32)
    state.update(Stimulus(modality="visual", t_ns=0, seq=1, data=newer), now=NOW + 1)
    assert np.array_equal(state.stimulus["visual"].data, newer)
    assert state.stimulus["audio"].data.shape == (64, 64)
    assert [f.cluster for f in state.fired["visual"]] == [4, 4, -1, 9, 3]
    assert state.recon["visual"].msg.cue_modality == "audio" and state.recon["audio"].msg.cluster_id == 5
    assert state.weights[("visual", "audio")].data.shape == (5, 4)
    assert state.stats["hub"]["clusters"] == 12
    assert state.frame is not None and state.frame.data.shape == (120, 160, 3)
    assert state.counts["excite"] == 6 and state.counts["stimulus"] == 3
    assert not state.update(Control(command="hello"), now=NOW) and state.ignored == 1


def test_odd_shapes_and_values_still_render():
    state = ViewerState()
    odd = [Stimulus(modality="visual", t_ns=0, seq=0,
                    data=np.random.default_rng(0).random((10, 10)).astype(np.float32)),
           Stimulus(modality="audio", t_ns=0, seq=0, data=np.arange(100, dtype=np.float32)),  # 1-D, outside [0, 1]
           Frame(modality="visual", t_ns=0, seq=0, data=np.zeros((7, 5, 4), np.uint8)),
           Reconstruction(modality="visual", t_ns=0, seq=0, cluster_id=1, cue_modality="audio",
                          data=np.full((3, 3000, 2), 7, np.int16)),
           Reconstruction(modality="audio", t_ns=0, seq=0, cluster_id=1, cue_modality="visual",
                          data=np.zeros((1, 1), np.float32)),
           Weights(modality="visual", t_ns=0, seq=0, target="audio", rows=(1,), cols=(2,),
                   data=np.zeros((1, 2), np.float32)),
           Excitation(modality="thought", t_ns=0, seq=0, cluster_id=-1, node_id=-1)]
    for m in odd:
        state.update(m, now=NOW)
    img = render(state, 320, 180, now=NOW)
    assert img.shape == (180, 320, 3)
    assert _differs(render(ViewerState(), 320, 180, now=NOW), img, "sees")


def test_no_display_and_no_headless_is_a_clear_error(monkeypatch):
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    assert not gui_available()
    with pytest.raises(ViewerError, match="--headless DIR"):
        open_output(None)
    args = argparse.Namespace(bus="tcp://127.0.0.1:1", keys=None, quiet=True, headless=None, snapshot_every=5.0)
    with pytest.raises(ViewerError, match="no display"):
        run(args)  # fails before touching the bus


def test_display_but_no_gui_says_so(monkeypatch):
    monkeypatch.setenv("DISPLAY", ":99")
    if gui_available():
        pytest.skip("this OpenCV has GUI support")
    with pytest.raises(ViewerError, match="no GUI support.*--headless DIR"):
        open_output(None)


def test_the_command_reports_the_error(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
    out = subprocess.run([sys.executable, "-m", "tools.cli", "viewer", "--quiet"], cwd=REPO, env=env,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and "--headless DIR" in out.stderr


# ---------------------------------------------------------------------- on a real bus
@pytest.mark.slow
def test_viewer_on_a_bus_writes_video_and_snapshots(tmp_path, thread_bus):
    address = thread_bus
    client = BusClient(address, "viewer", [t for t in PROCESS.topics() if t not in FOXGLOVE_ONLY])
    feeder = BusClient(address, "feeder")
    viewer = None
    try:
        client.handshake(timeout_s=10)
        feeder.handshake(timeout_s=10)
        output = HeadlessOutput(tmp_path, fps=10, snapshot_s=0.5)
        viewer = Viewer(client, output, fps=10)

        errors: list[BaseException] = []
        stop_sent: list[float] = []

        def feed() -> None:
            try:
                for i in range(8):
                    t = time.time_ns()
                    for m in _messages(t, i):
                        feeder.send(m)
                    feeder.send(Stimulus(modality="visual", t_ns=t, seq=i,
                                         data=np.full((10, 10), 0.5, np.float32)))  # an odd shape
                    feeder.pub.send_multipart([b"stimulus.visual", b"not msgpack at all"])  # garbage is dropped
                    time.sleep(0.15)  # pacing: the dashboard is drawn over more than one snapshot period
                wait_for(lambda: viewer.state.counts["stimulus"] >= 24 and client.dropped >= 8, 10,
                         "the viewer to take in everything sent")
            except BaseException as e:  # noqa: BLE001 - reported by the test thread below
                errors.append(e)
            finally:
                stop_sent.append(time.monotonic())
                feeder.send(Control(command="stop", source="feeder"))

        fired = threading.Event()  # a last resort, so that a viewer that ignores stop fails instead of hanging

        def end_it() -> None:
            fired.set()
            viewer.running = False

        threading.Thread(target=feed, daemon=True).start()
        watchdog = threading.Timer(30, end_it)
        watchdog.start()
        viewer.run()
        stopped = time.monotonic()
        watchdog.cancel()
    finally:
        if viewer is not None:
            viewer.close()
        client.close()
        feeder.close()

    assert not errors, errors[0]
    assert not fired.is_set(), "the viewer ignored stop: the watchdog ended it"
    assert stopped - stop_sent[0] < 5, f"the viewer took {stopped - stop_sent[0]:.1f} s to obey stop"
    assert viewer.state.counts["stimulus"] == 24 and viewer.state.counts["weights"] == 8
    assert viewer.state.stimulus["visual"].data.shape == (10, 10)
    assert client.dropped >= 1
    videos = list(tmp_path.glob("*.avi"))
    assert len(videos) == 1 and videos[0].stat().st_size > 0
    cap = cv2.VideoCapture(str(videos[0]))
    ok, frame = cap.read()
    n = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
    cap.release()
    assert ok and frame.shape == (540, 960, 3) and n >= 1
    pngs = sorted(tmp_path.glob("*.png"))
    assert len(pngs) >= 2 and (tmp_path / "dashboard-final.png").exists()
    final = cv2.imread(str(tmp_path / "dashboard-final.png"))
    empty = render(ViewerState())
    for panel in ("sees", "hears", "fires", "recalls", "weights"):
        assert _differs(empty, final, panel), panel


def test_headless_output_caps_the_video_and_the_snapshots(tmp_path):
    out = HeadlessOutput(tmp_path, fps=10, snapshot_s=0.05, max_video_mb=0.001, keep_snapshots=3)
    img = render(_full_state(), now=NOW)
    for i in range(60):
        out.show(img, NOW + i * 0.1)
    out.close(img)
    assert out.video_full and out.writer is None and out.frames == 50
    assert cv2.VideoCapture(str(out.video_path)).read()[0]
    kept = sorted(p.name for p in tmp_path.glob("dashboard-0*.png"))
    assert kept == ["dashboard-0057.png", "dashboard-0058.png", "dashboard-0059.png"]
    assert (tmp_path / "dashboard-final.png").exists()
