"""The camera process: digit cards held up to a camera become visual stimuli on the bus.

    frame grabber (thread, newest frame only) -> find_card (ink blob on paper)
      -> ink_to_mnist (28x28 like MNIST) -> CardTracker (one stimulus per steady card,
      then at most `max_rate` per second) -> Stimulus on `stimulus.visual`

A small preview (`Frame`, ~5 per second, with the found card boxed) goes out for
viewers. The source is a camera index, a video file or a stream URL; a file can
be played at its own frame rate (like a camera) or as fast as the pipeline goes
without losing frames (tests, evaluation: `extract_stimuli`).
"""

from __future__ import annotations

import argparse
import glob
import logging
import re
import sys
import threading
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from agent.runtime.bus import BusClient
from agent.runtime.service import Latency, Service
from agent.core.messages import Frame, Stimulus
from agent.runtime.topology import hears
from sensors.features import FeatureError, ink_to_mnist
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
                 stall_s: float = 2.0, name: str = "camera"):
        self.cap = cap
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
            self._put(frame, time.time_ns())

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


# ---------------------------------------------------------------------- finding the card
def _odd(n: float) -> int:
    return max(3, int(n) | 1)


def find_card(frame_bgr: np.ndarray, work_width: int = 320, min_size: float = 0.08, max_size: float = 0.9,
              upright: bool = True) -> tuple[np.ndarray, tuple[int, int, int, int]] | None:
    """The digit on a card in view: (crop of bright ink on dark, float32 in [0, 1]; box x, y, w, h in
    frame pixels), or None.

    Ink is what is much darker than the paper around it: the paper's brightness is
    estimated by a grey closing (strokes thinner than the kernel vanish), so uneven
    light and a card brighter than the wall do not count as ink, and large dark
    things are ignored. Strokes close to each other are merged into one digit; the
    largest group of plausible size (`min_size`..`max_size` of the frame height,
    not cut by the frame edge) is the digit. With `upright`, a card held tilted is
    turned straight when its outline is clearly visible (MNIST digits are upright).
    """
    h0, w0 = frame_bgr.shape[:2]
    grey = frame_bgr if frame_bgr.ndim == 2 else cv2.cvtColor(frame_bgr, cv2.COLOR_BGR2GRAY)
    scale = min(1.0, work_width / w0)
    if scale < 1.0:
        grey = cv2.resize(grey, (round(w0 * scale), round(h0 * scale)), interpolation=cv2.INTER_AREA)
    h, w = grey.shape
    grey_f = grey.astype(np.float32)
    paper = cv2.morphologyEx(grey_f, cv2.MORPH_CLOSE, cv2.getStructuringElement(cv2.MORPH_RECT, (_odd(w / 10),) * 2))
    paper = cv2.GaussianBlur(paper, (0, 0), 2.0)  # the closing is blocky
    ratio = grey_f / np.maximum(paper, 1.0)
    ink_mask = ((ratio < 0.6) & (paper > 40.0)).astype(np.uint8)
    grouped = cv2.dilate(ink_mask, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (_odd(w / 40),) * 2))
    n, labels, boxes, _ = cv2.connectedComponentsWithStats(grouped, connectivity=8)
    best, best_ink = 0, 0
    for k in range(1, n):
        x, y, bw, bh, _area = boxes[k]
        if x <= 1 or y <= 1 or x + bw >= w - 1 or y + bh >= h - 1:
            continue  # cut by the frame edge: a card coming or going
        if not min_size * h <= max(bw, bh) <= max_size * h:
            continue
        ink = int(ink_mask[y:y + bh, x:x + bw][labels[y:y + bh, x:x + bw] == k].sum())
        if ink > best_ink:
            best, best_ink = k, ink
    if best == 0 or best_ink < 30:
        return None
    x, y, bw, bh, _ = boxes[best]
    box = (round(x / scale), round(y / scale), round(bw / scale), round(bh / scale))
    strength = np.clip((0.85 - ratio) / 0.45, 0.0, 1.0)
    digit = np.where(labels == best, strength, 0.0).astype(np.float32)
    tilt = _card_tilt(grey, grouped, (x, y, bw, bh)) if upright else 0.0
    if tilt:
        turn = cv2.getRotationMatrix2D((x + bw / 2.0, y + bh / 2.0), tilt, 1.0)
        digit = cv2.warpAffine(digit, turn, (w, h), flags=cv2.INTER_LINEAR)
        rows, cols = np.flatnonzero(digit.max(axis=1) > 0.05), np.flatnonzero(digit.max(axis=0) > 0.05)
        if rows.size == 0:
            return None
        return digit[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1], box
    return digit[y:y + bh, x:x + bw], box


def _card_tilt(grey: np.ndarray, ink_near: np.ndarray, box: tuple[int, int, int, int],
               min_order: float = 0.3, max_tilt: float = 30.0) -> float:
    """Degrees to turn the image (counter-clockwise) so that the card around `box` stands straight.

    A card's edges are straight and at right angles, so the brightness gradients
    around the digit (the strokes themselves masked out by `ink_near`) point
    mostly in one direction modulo 90 degrees: their circular mean (angles times
    4) is the tilt, and its length says how clear it is (about 0.03 for a bare wall,
    0.7 for a card). Unlike tracing the outline this is not upset by uneven light.
    0 when the tilt is unclear (below `min_order`), tiny or implausibly large.
    """
    x, y, bw, bh = box
    side = int(1.5 * max(bw, bh))  # a card is about twice as large as its digit's ink, a "1" far wider
    x0, y0 = max(0, x - side), max(0, y - side)
    x1, y1 = min(grey.shape[1], x + bw + side), min(grey.shape[0], y + bh + side)
    window = cv2.GaussianBlur(grey[y0:y1, x0:x1].astype(np.float32), (0, 0), 1.0)
    gx = cv2.Sobel(window, cv2.CV_32F, 1, 0, ksize=3)
    gy = cv2.Sobel(window, cv2.CV_32F, 0, 1, ksize=3)
    weight = np.where(ink_near[y0:y1, x0:x1] > 0, 0.0, gx * gx + gy * gy)
    total = float(weight.sum())
    if total <= 0:
        return 0.0
    z = complex((weight * np.exp(4j * np.arctan2(gy, gx))).sum())
    tilt = float(np.degrees(np.angle(z))) / 4.0
    return tilt if abs(z) / total >= min_order and 1.0 <= abs(tilt) <= max_tilt else 0.0


def look(frame_bgr: np.ndarray) -> tuple[np.ndarray | None, tuple[int, int, int, int] | None]:
    """frame -> (28x28 stimulus or None, card box or None): find_card then ink_to_mnist."""
    found = find_card(frame_bgr)
    if found is None:
        return None, None
    try:
        return ink_to_mnist(found[0]), found[1]
    except FeatureError:
        return None, None


def stimulus_distance(a: np.ndarray, b: np.ndarray) -> float:
    """0 for equal images, 1 for images whose ink does not overlap at all, over shifts of +-1 pixel.

    The shift tolerance matters: ink_to_mnist centres by whole pixels, so a card
    moving by a hair can shift its whole 28x28 image by one pixel."""
    total = float(a.sum() + b.sum())
    if total <= 0:
        return 0.0
    padded = np.pad(b, 1)
    h, w = a.shape
    return min(float(np.abs(a - padded[1 + dy:1 + dy + h, 1 + dx:1 + dx + w]).sum())
               for dy in (-1, 0, 1) for dx in (-1, 0, 1)) / total


# ---------------------------------------------------------------------- when to emit
class CardTracker:
    """Decides which views of cards become stimuli.

    A card is emitted once it is steady (its 28x28 image changes by less than
    `steady_diff` over `steady_frames` consecutive frames, so a card still moving
    into view or blurred by motion is skipped), and then at most `max_rate` times
    a second while it stays (`max_rate` <= 0: once per card). It counts as a new
    card after `lost_frames` frames without a card, or when the image jumps by
    more than `new_card_diff` (one card swapped for another), unless the image
    comes back to the old card: a glitch (a frame smeared by a fast move) does
    not make the same card count twice. `cards` counts cards that held steady.
    """

    def __init__(self, steady_frames: int = 3, max_rate: float = 2.0, lost_frames: int = 4,
                 steady_diff: float = 0.2, new_card_diff: float = 0.4):
        self.steady_frames = max(1, steady_frames)
        self.max_rate = max_rate
        self.lost_frames = lost_frames
        self.steady_diff = steady_diff
        self.new_card_diff = new_card_diff
        self.cards = 0
        self.emitted = 0
        self.no_card = 0  # frames without a card
        self._prev: np.ndarray | None = None  # last frame's stimulus (None: no card lately)
        self._missing = 0
        self._steady = 0
        self._counted = False  # the current card has held steady (and was counted)
        self._ref: np.ndarray | None = None  # the current card's last emitted stimulus
        self._last_emit: float | None = None
        self._before: tuple[np.ndarray | None, float | None] | None = None  # the card left by a jump

    def update(self, stim: np.ndarray | None, t_s: float) -> bool:
        """Feed one frame's stimulus (None: no card) at time `t_s`; True: emit this one."""
        if stim is None:
            self.no_card += 1
            self._missing += 1
            self._steady = 0  # steady means consecutive frames
            if self._missing >= self.lost_frames:
                self._prev = self._before = None
            return False
        self._missing = 0
        if self._prev is None:
            self._start(jumped=False)
        elif (d := stimulus_distance(stim, self._prev)) > self.new_card_diff:
            self._start(jumped=True)
        else:
            self._steady = self._steady + 1 if d < self.steady_diff else 1
        self._prev = stim
        if self._steady < self.steady_frames:
            return False
        if not self._counted:
            self._counted, back, self._before = True, self._before, None
            if back is not None and back[0] is not None and stimulus_distance(stim, back[0]) <= self.new_card_diff:
                self._ref, self._last_emit = back  # the old card again, after a glitch
            else:
                self.cards += 1
        if self._last_emit is not None and (self.max_rate <= 0 or t_s - self._last_emit < 1.0 / self.max_rate):
            return False
        self._ref, self._last_emit = stim, t_s
        self.emitted += 1
        return True

    def _start(self, jumped: bool) -> None:
        """A new view begins: after a jump remember the card it left (unless that was a glitch itself)."""
        if not jumped:
            self._before = None
        elif self._counted:
            self._before = (self._ref, self._last_emit)
        self._counted, self._steady, self._ref, self._last_emit = False, 1, None, None

    def stats(self) -> dict:
        return {"cards": self.cards, "emitted": self.emitted, "no_card": self.no_card}


# ---------------------------------------------------------------------- the process
class Camera(Service):
    """Publishes a Stimulus per steady card and a small Frame preview a few times a second."""

    def __init__(self, bus: Any, source: str, *, max_rate: float = 2.0, steady_frames: int = 3,
                 realtime: bool = True, exit_at_end: bool = True, stall_s: float = 2.0, preview_hz: float = 5.0,
                 preview_width: int = 160, gen: int = 0):
        super().__init__(bus, gen=gen)
        self.source = source
        is_file = source_kind(source) == "file"
        self.video_time = is_file and not realtime  # pace max_rate by the video's clock, not the wall's
        self.grabber = FrameGrabber(open_source(source), is_file=is_file, realtime=realtime and is_file,
                                    keep_all=is_file and not realtime, stall_s=stall_s, name=self.name)
        self.tracker = CardTracker(steady_frames=steady_frames, max_rate=max_rate)
        self.exit_at_end = exit_at_end
        self.preview_every_s = 1.0 / preview_hz if preview_hz > 0 else float("inf")
        self.preview_width = preview_width
        self.processed = 0
        self.seq = 0
        self.previews = 0
        self.latency = Latency()
        self._last_preview = -float("inf")
        self._rate_at, self._rate_count, self.fps = time.monotonic(), 0, 0.0
        self.grabber.start()

    def tick(self) -> None:
        item = self.grabber.latest(timeout_s=0.005)
        if item is None:
            if self.exit_at_end and self.grabber.finished:
                log.info("%s: end of %s", self.name, self.source)
                self.running = False
            return
        frame, t_ns, index = item
        self.processed += 1
        stim, box = look(frame)
        t_s = index / (self.grabber.fps or 30.0) if self.video_time else t_ns / 1e9
        if self.tracker.update(stim, t_s):
            self.bus.send(Stimulus(MODALITY, t_ns, self.seq, np.ascontiguousarray(stim, dtype=np.float32),
                                   source=self.name, gen=self.gen, mseq=self.seq))
            self.seq += 1
            self.latency.add((time.time_ns() - t_ns) / 1e6)
        now = time.monotonic()
        if now - self._last_preview >= self.preview_every_s:
            self._last_preview = now
            self.bus.send(Frame(MODALITY, t_ns, self.previews, preview(frame, box, self.preview_width),
                                source=self.name, gen=self.gen))
            self.previews += 1

    def stats(self) -> dict:
        now = time.monotonic()
        if now - self._rate_at >= 0.5:
            self.fps = (self.processed - self._rate_count) / (now - self._rate_at)
            self._rate_at, self._rate_count = now, self.processed
        lat = list(self.latency.values)
        return {"role": "camera", "source": shown_source(self.source), "fps": self.fps, "processed": self.processed,
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


# ---------------------------------------------------------------------- command line
def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The camera's own arguments (the CLI adds --bus, --keys and --quiet)."""
    parser.add_argument("--camera", default="0", metavar="INDEX|FILE|URL",
                        help="camera index (0 = first), a video file, or a stream URL (MJPEG/RTSP/HTTP); default 0")
    parser.add_argument("--max-rate", type=float, default=2.0,
                        help="stimuli per second at most while one card stays in view (0: once per card; default 2)")
    parser.add_argument("--steady-frames", type=int, default=3,
                        help="frames a card must hold still before it is sent (default 3)")
    parser.add_argument("--no-realtime", action="store_true",
                        help="video files: read as fast as the pipeline goes (no frame lost) instead of at the "
                             "file's frame rate")
    parser.add_argument("--stall", type=float, default=2.0,
                        help="seconds without a new frame before the source is reported as stalled (default 2)")


def run(args: argparse.Namespace) -> int:
    """`cdz camera`: publish cards seen by the camera until stopped (or a video file ends)."""
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    client = BusClient(args.bus, "camera", hears("camera"), keys=args.keys)
    camera = None
    try:
        camera = Camera(client, args.camera, max_rate=args.max_rate, steady_frames=args.steady_frames,
                        realtime=not args.no_realtime, stall_s=getattr(args, "stall", 2.0),
                        gen=getattr(args, "gen", 0))
        client.handshake(timeout_s=getattr(args, "connect_timeout", 30.0))
        camera.ready()
        camera.run(timeout_ms=1)
    finally:
        if camera is not None:
            camera.close()
        client.close()
    return 0
