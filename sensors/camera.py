"""The camera process: digit cards held up to a camera become visual stimuli on the bus.

    frame grabber (thread, newest frame only) -> find_card (ink blob on paper)
      -> ink_to_mnist (28x28 like MNIST) -> CardTracker (one stimulus per steady card,
      then at most `max_rate` per second) -> Stimulus on `stimulus.visual`

This module owns the capture and the process; what is seen in a frame, and when a
view becomes a stimulus, is `sensors.card`.

A small preview (`Frame`, ~5 per second, with the found card boxed) goes out for
viewers. The source is a camera index, a video file or a stream URL; a file can
be played at its own frame rate (like a camera) or as fast as the pipeline goes
without losing frames (tests, evaluation: `extract_stimuli`).
"""

from __future__ import annotations

import glob
import logging
import re
import threading
import time
from pathlib import Path
from collections.abc import Callable
from typing import Any

import cv2
import numpy as np

from agent.runtime.service import Latency, Rate, Service
from agent.core.messages import Frame, Stimulus
from sensors.card import CardTracker, look
from sensors.errors import SensorError

log = logging.getLogger(__name__)

MODALITY = "visual"
CHOOSE = ("choose a source with --camera INDEX|FILE|URL, e.g. --camera 0 (first camera), "
          "--camera cards.avi (a video file), --camera http://phone:8080/video (an MJPEG/RTSP/HTTP stream)")


# ---------------------------------------------------------------------- sources
def source_kind(source: str) -> str:
    """'device' (a camera index), 'url' (a network stream) or 'file'."""
    if source.strip().isdigit():
        return "device"
    if "://" in source and not source.startswith("file://"):
        return "url"
    return "file"


def shown_source(source: str) -> str:
    """The source as it may be shown in stats and logs: a URL's user:password@ is left out."""
    return re.sub(r"://[^/@]*@", "://", source)[-200:]


def open_source(source: str) -> cv2.VideoCapture:
    """Open a camera index ("0"), a video file or a stream URL; SensorError (no traceback) if it fails."""
    kind = source_kind(source)
    if kind == "file":
        path = Path(source[len("file://"):] if source.startswith("file://") else source).expanduser()
        if not path.is_file():
            raise SensorError(f"cannot open video file {str(path)!r}: no such file; {CHOOSE}")
        cap = _quietly(lambda: cv2.VideoCapture(str(path)))
        if not cap.isOpened():
            raise SensorError(f"cannot open video file {str(path)!r}: OpenCV cannot decode it; {CHOOSE}")
        return cap
    if kind == "url":
        timeouts = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, 5000, cv2.CAP_PROP_READ_TIMEOUT_MSEC, 5000]
        cap = _quietly(lambda: cv2.VideoCapture(source, cv2.CAP_FFMPEG, timeouts))
        if not cap.isOpened():
            raise SensorError(f"cannot open stream {shown_source(source)!r} (no answer within 5 s, "
                              f"or not a video stream); {CHOOSE}")
        return cap
    index = int(source)
    cap = _quietly(lambda: cv2.VideoCapture(index))
    if not cap.isOpened():
        found = sorted(glob.glob("/dev/video*"))
        seen = f"devices present: {', '.join(found)}" if found else "no /dev/video* devices on this machine"
        raise SensorError(f"cannot open camera {index} (OpenCV device index {index}; {seen}); {CHOOSE}")
    return cap


def _quietly(fn):
    """Run fn with OpenCV's own warnings off: a missing camera gets our message, not its log spam."""
    logging_ = cv2.utils.logging
    old = logging_.getLogLevel()
    logging_.setLogLevel(logging_.LOG_LEVEL_ERROR)
    try:
        return fn()
    finally:
        logging_.setLogLevel(old)


# ---------------------------------------------------------------------- grabbing
class FrameGrabber:
    """Reads frames on a daemon thread and keeps only the newest.

    OpenCV queues frames inside the driver; reading them one by one in the main
    loop would hand out ever older frames as soon as processing is slower than
    the camera. `keep_all=True` instead waits until each frame was taken (a file
    read as fast as the consumer goes, nothing lost). A stall (no new frame for
    `stall_s`) is counted and logged once per episode; a file's end sets `eof`.
    """

    def __init__(self, cap: Any, *, is_file: bool, realtime: bool | None = None, keep_all: bool = False,
                 stall_s: float = 2.0, name: str = "camera", clock: Callable[[], int] = time.time_ns):
        self.cap = cap
        self.clock = clock  # stamps each frame's capture time
        self.is_file = is_file
        self.realtime = is_file if realtime is None else realtime
        fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0) if is_file else 0.0
        self.fps = fps if 0.5 <= fps <= 1000.0 else 0.0
        self.keep_all = keep_all
        self.stall_s = stall_s
        self.name = name
        self.frames = 0  # frames read from the source
        self.dropped = 0  # frames overwritten before anyone took them
        self.failures = 0  # failed reads of a camera or stream
        self.stalls = 0
        self.stalled = False
        self.eof = False
        self._cond = threading.Condition()
        self._item: tuple[np.ndarray, int, int] | None = None
        self._last_frame_at = time.monotonic()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"{name}-grabber", daemon=True)

    def start(self) -> "FrameGrabber":
        self._last_frame_at = time.monotonic()
        self._thread.start()
        return self

    def _run(self) -> None:
        t0 = time.monotonic()
        while not self._stop.is_set():
            try:
                ok, frame = self.cap.read()
            except cv2.error as e:  # a broken stream: treat like a failed read
                log.debug("%s: read failed: %s", self.name, e)
                ok, frame = False, None
            if not ok or frame is None:
                if self.is_file:
                    with self._cond:
                        self.eof = True
                        self._cond.notify_all()
                    return
                self.failures += 1
                with self._cond:
                    self._check_stall()
                self._stop.wait(0.05)
                continue
            if self.realtime and self.fps:  # a file behaves like a camera: frame n arrives at n / fps
                self._stop.wait(max(0.0, t0 + self.frames / self.fps - time.monotonic()))
            self._put(frame, self.clock())

    def _put(self, frame: np.ndarray, t_ns: int) -> None:
        with self._cond:
            while self.keep_all and self._item is not None and not self._stop.is_set():
                self._cond.wait(0.1)
            if self._item is not None:
                self.dropped += 1
            self._item = (frame, t_ns, self.frames)
            self.frames += 1
            self._last_frame_at = time.monotonic()
            if self.stalled:
                self.stalled = False
                log.info("%s: frames are coming again", self.name)
            self._cond.notify_all()

    def latest(self, timeout_s: float = 0.0) -> tuple[np.ndarray, int, int] | None:
        """(frame, capture time ns, frame index) of the newest frame not handed out yet, else None.

        Waits up to `timeout_s` for one."""
        with self._cond:
            if self._item is None and timeout_s > 0 and not self.eof:
                self._cond.wait_for(lambda: self._item is not None or self.eof, timeout_s)
            self._check_stall()
            item, self._item = self._item, None
            self._cond.notify_all()
            return item

    @property
    def finished(self) -> bool:
        """The file has ended and its last frame was taken: nothing more will come."""
        with self._cond:
            return self.eof and self._item is None

    def _check_stall(self) -> None:  # with self._cond held
        if not self.stalled and time.monotonic() - self._last_frame_at > self.stall_s:
            self.stalled = True
            self.stalls += 1
            why = "the video file has ended" if self.eof else "the camera stopped sending"
            log.warning("%s: no new frame for %.1f s (%s); waiting", self.name, self.stall_s, why)

    def stats(self) -> dict:
        with self._cond:
            self._check_stall()
            return {"frames": self.frames, "dropped": self.dropped, "read_failures": self.failures,
                    "stalls": self.stalls, "stalled": self.stalled, "eof": self.eof}

    def stop(self) -> None:
        """End the thread and release the source (left to the process's end if a read still blocks)."""
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        if self._thread.is_alive():
            self._thread.join(timeout=2.0)
        if not self._thread.is_alive():
            self.cap.release()


# ---------------------------------------------------------------------- the process
class Camera(Service):
    """Publishes a Stimulus per steady card and a small Frame preview a few times a second."""

    stamps_events = True

    def __init__(self, bus: Any, source: str, *, max_rate: float = 2.0, steady_frames: int = 3,
                 realtime: bool = True, exit_at_end: bool = True, stall_s: float = 2.0, preview_hz: float = 5.0,
                 preview_width: int = 160, gen: int = 0):
        super().__init__(bus, gen=gen)
        self.source = source
        is_file = source_kind(source) == "file"
        self.video_time = is_file and not realtime  # pace max_rate by the video's clock, not the wall's
        self.grabber = FrameGrabber(open_source(source), is_file=is_file, realtime=realtime and is_file,
                                    keep_all=is_file and not realtime, stall_s=stall_s, name=self.name,
                                    clock=self.local_ns)
        self.tracker = CardTracker(steady_frames=steady_frames, max_rate=max_rate)
        self.exit_at_end = exit_at_end
        self.preview_every_s = 1.0 / preview_hz if preview_hz > 0 else float("inf")
        self.preview_width = preview_width
        self.processed = 0
        self.seq = 0
        self.previews = 0
        self.latency = Latency()
        self._last_preview = -float("inf")
        self._rate = Rate(min_window_s=0.5)
        self.grabber.start()

    def tick(self) -> None:
        item = self.grabber.latest(timeout_s=0.005)
        if item is None:
            if self.exit_at_end and self.grabber.finished:
                log.info("%s: end of %s", self.name, self.source)
                self.running = False
            return
        frame, t_local, index = item
        t_ns = self.bus_ns(t_local)  # the capture time on the hub's clock
        self.processed += 1
        self._rate.add()
        stim, box = look(frame)
        t_s = index / (self.grabber.fps or 30.0) if self.video_time else t_local / 1e9
        if self.tracker.update(stim, t_s):
            self.bus.send(Stimulus(modality=MODALITY, t_ns=t_ns, seq=self.seq,
                                   data=np.ascontiguousarray(stim, dtype=np.float32),
                                   source=self.name, gen=self.gen, mseq=self.seq))
            self.seq += 1
            self.latency.add((self.local_ns() - t_local) / 1e6)
        now = time.monotonic()
        if now - self._last_preview >= self.preview_every_s:
            self._last_preview = now
            self.bus.send(Frame(modality=MODALITY, t_ns=t_ns, seq=self.previews,
                                data=preview(frame, box, self.preview_width),
                                source=self.name, gen=self.gen))
            self.previews += 1

    def stats(self) -> dict:
        lat = list(self.latency.values)
        return {"role": "camera", "source": shown_source(self.source), "fps": self._rate.per_second(), "processed": self.processed,
                "previews": self.previews, "latency_ms_mean": float(np.mean(lat)) if lat else 0.0,
                **self.grabber.stats(), **self.tracker.stats()}

    def close(self) -> None:
        self.grabber.stop()


def preview(frame: np.ndarray, box: tuple[int, int, int, int] | None, width: int = 160) -> np.ndarray:
    """A small BGR uint8 copy of the frame for viewers, the found card boxed in green."""
    h, w = frame.shape[:2]
    scale = min(1.0, width / w)
    small = cv2.resize(frame, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)
    if small.ndim == 2:
        small = cv2.cvtColor(small, cv2.COLOR_GRAY2BGR)
    if box is not None:
        x, y, bw, bh = (round(v * scale) for v in box)
        cv2.rectangle(small, (x, y), (x + bw, y + bh), (0, 255, 0), 1)
    return np.ascontiguousarray(small, dtype=np.uint8)


# ---------------------------------------------------------------------- offline
def extract_stimuli(source: str, **tracker_kwargs: Any) -> list[tuple[int, int, np.ndarray]]:
    """The camera's pipeline without a bus: (capture time ns, frame index, 28x28 stimulus) per emission.

    Every frame of a file is looked at (no pacing, no drops) and the tracker's
    clock is the video's own, so the result does not depend on the machine's speed."""
    is_file = source_kind(source) == "file"
    grabber = FrameGrabber(open_source(source), is_file=is_file, realtime=False, keep_all=is_file).start()
    fps = grabber.fps or 30.0
    tracker = CardTracker(**tracker_kwargs)
    out = []
    try:
        while not grabber.finished:
            item = grabber.latest(timeout_s=0.1)
            if item is None:
                continue
            frame, t_ns, index = item
            stim, _ = look(frame)
            if tracker.update(stim, index / fps if is_file else t_ns / 1e9):
                out.append((t_ns, index, stim))
    finally:
        grabber.stop()
    return out
