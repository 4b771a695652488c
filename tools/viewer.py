"""`cdz viewer`: a live dashboard of what the agent sees, hears, fires and recalls.

It listens to the bus like any other process and draws one picture: the camera
preview and the visual stimulus ("sees"), the spectrogram ("hears"), the clusters
the stimuli excited ("fires"), the decoded recalls ("recalls": the image an audio
cue brings to mind, the spectrogram a visual cue brings to mind), the CDZ weights
visual->audio as a heat map, and a few stats.

`tools.dashboard` holds the latest of everything (`ViewerState`) and draws it
(`render`); both are pure (no sockets, no clock unless asked), so they are tested
directly. This module is the process and where the picture goes: it goes
to a window when a display and an OpenCV with GUI support exist; otherwise, with
`--headless DIR`, to an MJPG video plus PNG snapshots in DIR (the installed wheel is
opencv-python-headless, so this is the usual case on servers). With `--foxglove`, it
also serves every message to Foxglove (`tools.foxglove_live`), or only that when it
has nowhere to draw.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import cv2
import numpy as np

from agent.runtime.bus import BusClient
from agent.runtime.service import Service
from agent.core.messages import Message, Stats
from tools.dashboard import ViewerState, render
from tools.foxglove_live import FoxgloveLive

log = logging.getLogger(__name__)



class ViewerError(RuntimeError):
    """The dashboard cannot be shown anywhere; the text says what to pass instead."""


# ---------------------------------------------------------------------- outputs
def gui_available() -> bool:
    """A display and an OpenCV built with a GUI backend (opencv-python-headless has none)."""
    if not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        return False
    for line in cv2.getBuildInformation().splitlines():
        if line.strip().startswith("GUI:"):
            return line.split(":", 1)[1].strip().upper() not in ("NONE", "")
    return True


class WindowOutput:
    """An OpenCV window; q or Esc in it stops the viewer."""

    def __init__(self, title: str = "cdz viewer"):
        self.title = title
        try:
            cv2.namedWindow(title, cv2.WINDOW_NORMAL)
        except cv2.error as e:
            raise ViewerError(f"cannot open a window ({str(e).strip().splitlines()[-1][:120]}); "
                              "pass --headless DIR to write a video and snapshots instead") from None
        self.shown = 0

    def show(self, img: np.ndarray, now: float) -> bool:
        if self.shown and cv2.getWindowProperty(self.title, cv2.WND_PROP_VISIBLE) < 1:
            return False  # closed with the mouse: imshow would only open it again
        cv2.imshow(self.title, img)
        self.shown += 1
        return (cv2.waitKey(1) & 0xFF) not in (ord("q"), 27)

    def close(self, img: np.ndarray | None) -> None:
        cv2.destroyWindow(self.title)

    def describe(self) -> str:
        return "window"


class HeadlessOutput:
    """An MJPG .avi of the dashboard at `fps` (real time: frames repeat while nothing new is drawn)
    plus a PNG snapshot every `snapshot_s` seconds (the newest `keep_snapshots` are kept) and one at exit.

    MJPG is ~60 KB a frame at 960x540 (about 2 GB an hour at 10 fps), so the video stops at
    `max_video_mb` (snapshots go on): a viewer left running must not fill the disk."""

    def __init__(self, folder: Path | str, fps: float = 10.0, snapshot_s: float = 5.0, max_video_mb: float = 1000.0,
                 keep_snapshots: int = 1000):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.fps = fps
        self.snapshot_s = snapshot_s
        self.video_path = self.folder / f"dashboard-{time.strftime('%Y%m%d-%H%M%S')}.avi"
        self.max_video_bytes = max_video_mb * 1e6
        self.writer: cv2.VideoWriter | None = None
        self.video_full = False
        self.frames = 0
        self.snapshots: list[Path] = []
        self.keep_snapshots = keep_snapshots
        self._snap_no = 0
        self._t0: float | None = None
        self._next_snap = 0.0

    def show(self, img: np.ndarray, now: float) -> bool:
        if self.writer is None and not self.video_full:
            h, w = img.shape[:2]
            self.writer = cv2.VideoWriter(str(self.video_path), cv2.VideoWriter_fourcc(*"MJPG"), self.fps, (w, h))
            if not self.writer.isOpened():
                raise ViewerError(f"cannot write an MJPG video to {self.video_path}")
            self._t0, self._next_snap = now, now
        if self.writer is not None:
            self._write(img, now)
        if self.snapshot_s > 0 and now >= self._next_snap:
            self._next_snap = now + self.snapshot_s
            self._snapshot(img, f"dashboard-{self._snap_no:04d}.png")
            self._snap_no += 1
            while len(self.snapshots) > self.keep_snapshots:
                self.snapshots.pop(0).unlink(missing_ok=True)
        return True

    def _write(self, img: np.ndarray, now: float) -> None:
        due = int((now - self._t0) * self.fps) + 1 - self.frames  # keep the video in step with the clock
        for _ in range(max(1, min(due, int(self.fps * 5)))):
            self.writer.write(img)
            self.frames += 1
            if self.frames % 50 == 0 and self.video_path.stat().st_size >= self.max_video_bytes:
                log.warning("viewer: %s reached %.0f MB: video stopped, PNG snapshots go on",
                            self.video_path, self.max_video_bytes / 1e6)
                self.writer.release()
                self.writer, self.video_full = None, True
                return

    def _snapshot(self, img: np.ndarray, name: str) -> None:
        path = self.folder / name
        if cv2.imwrite(str(path), img):
            self.snapshots.append(path)
        else:
            log.warning("viewer: could not write %s", path)

    def close(self, img: np.ndarray | None) -> None:
        if img is not None:
            self._snapshot(img, "dashboard-final.png")
        if self.writer is not None:
            self.writer.release()
            self.writer = None

    def describe(self) -> str:
        return f"{self.video_path} ({self.frames} frames) and {len(self.snapshots)} PNGs in {self.folder}"


def open_output(headless_dir: str | Path | None, fps: float = 10.0, snapshot_s: float = 5.0,
                max_video_mb: float = 1000.0):
    """A window if one can be shown, else the headless files; a clear error when neither is possible."""
    if headless_dir is not None:
        return HeadlessOutput(headless_dir, fps, snapshot_s, max_video_mb)
    if gui_available():
        return WindowOutput()
    if os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"):
        raise ViewerError("this OpenCV has no GUI support (opencv-python-headless): pass --headless DIR to write "
                          "a video and PNG snapshots there, or install opencv-python for a window")
    raise ViewerError("no display here (DISPLAY and WAYLAND_DISPLAY are unset): pass --headless DIR to write "
                      "the dashboard as a video and PNG snapshots into DIR")


# ---------------------------------------------------------------------- the process
class Viewer(Service):
    """Keeps a `ViewerState` from the bus and redraws it at most `fps` times a second."""

    def __init__(self, bus: BusClient, output, fps: float = 10.0, size: tuple[int, int] = (960, 540),
                 foxglove: FoxgloveLive | None = None):
        super().__init__(bus)
        self.state = ViewerState()
        self.output = output  # None: no dashboard, only the Foxglove server
        self.foxglove = foxglove
        self.interval = 1.0 / fps
        self.size = size
        self.image: np.ndarray | None = None
        self.renders = 0
        self._render_s = 0.0
        self._last = -1e9
        self._dirty = True

    def rewind(self, gen: int) -> None:
        """Only follow the generation: a viewer has no checkpoint and is not awaited by the launcher."""
        self.gen = gen

    def handle(self, msg: Message) -> None:
        if isinstance(msg, Stats) and msg.source == self.name:
            return
        if self.foxglove is not None:
            self.foxglove.publish(msg)
        self._dirty |= self.state.update(msg)

    def tick(self) -> None:
        if self.output is None:
            return
        now = time.monotonic()
        if now - self._last < self.interval:
            return
        self._last = now
        if self._dirty or self.image is None or self.renders % 5 == 0:  # ages and highlights change with time too
            t = time.perf_counter()
            self.image = render(self.state, *self.size, now=now)
            self._render_s += time.perf_counter() - t
            self._dirty = False
        self.renders += 1
        if not self.output.show(self.image, now):
            self.running = False

    def close(self) -> None:
        if self.foxglove is not None:
            self.foxglove.close()
        if self.output is not None:
            self.output.close(self.image if self.image is not None else render(self.state, *self.size))

    def stats(self) -> dict:
        out = {"renders": self.renders, "render_ms": 1000.0 * self._render_s / max(1, self.renders),
               "messages": sum(self.state.counts.values()), "ignored": self.state.ignored}
        if self.foxglove is not None:
            out["foxglove_published"] = self.foxglove.published
        return out
