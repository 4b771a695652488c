"""The viewer's dashboard: the latest of everything heard (`ViewerState`) and one picture of it (`render`).

Pure: no sockets, and no clock unless asked, so both are tested directly; the process
that feeds them and shows the picture is `tools.viewer`.
"""

from __future__ import annotations

import logging
import time
from collections import Counter, deque
from dataclasses import dataclass, field

import cv2
import numpy as np

from agent.core.messages import Excitation, Frame, Message, Reconstruction, Stats, Stimulus, Weights
from replay.foxglove_views import VALUE_SIZE  # a stimulus this small (a reward) is written out, not drawn

log = logging.getLogger(__name__)

RECENT = 12  # firings remembered per modality
HOT_S = 1.0  # a cluster that fired this recently is drawn highlighted
MAX_SIDE = 2048  # larger arrays are subsampled before drawing (a bad sender must not stall us)


# ---------------------------------------------------------------------- state
@dataclass
class Fired:
    cluster: int
    strength: float
    at: float  # monotonic receive time


@dataclass
class Seen:
    """A message's array with the time we received it (a copy: the frame buffer is freed)."""

    data: np.ndarray
    at: float
    msg: Message


@dataclass
class ViewerState:
    """The latest of everything the viewer heard; `update` returns whether it was used."""

    frame: Seen | None = None
    stimulus: dict[str, Seen] = field(default_factory=dict)
    fired: dict[str, deque[Fired]] = field(default_factory=dict)
    recon: dict[str, Seen] = field(default_factory=dict)
    weights: dict[tuple[str, str], Seen] = field(default_factory=dict)
    stats: dict[str, dict] = field(default_factory=dict)
    counts: Counter[str] = field(default_factory=Counter)
    ignored: int = 0  # messages of a kind or shape we cannot draw

    def update(self, msg: Message, now: float | None = None) -> bool:
        now = time.monotonic() if now is None else now
        data = getattr(msg, "data", None)
        if isinstance(msg, Stimulus):
            self.stimulus[msg.modality] = Seen(np.array(data), now, msg)
        elif isinstance(msg, Frame):
            self.frame = Seen(np.array(data), now, msg)
        elif isinstance(msg, Excitation):
            self.fired.setdefault(msg.modality, deque(maxlen=RECENT)).append(Fired(msg.cluster_id, msg.strength, now))
        elif isinstance(msg, Reconstruction):
            self.recon[msg.modality] = Seen(np.array(data), now, msg)
        elif isinstance(msg, Weights):
            if data.ndim != 2:
                self.ignored += 1
                return False
            self.weights[(msg.modality, msg.target)] = Seen(np.array(data), now, msg)
        elif isinstance(msg, Stats):
            self.stats[msg.source or "?"] = {**msg.values, "_at": now}
        else:
            self.ignored += 1
            return False
        self.counts[msg.KIND] += 1
        return True


# ---------------------------------------------------------------------- drawing helpers
BG = (22, 22, 22)
PANEL = (38, 38, 38)
LABEL = (215, 215, 215)
DIM = (130, 130, 130)
HOT = (60, 200, 255)  # amber (BGR)
FONT = cv2.FONT_HERSHEY_SIMPLEX


@dataclass(frozen=True)
class Rect:
    x: int
    y: int
    w: int
    h: int

    def of(self, img: np.ndarray) -> np.ndarray:
        return img[self.y:self.y + self.h, self.x:self.x + self.w]

    def split(self, frac: float, gap: int = 6) -> tuple["Rect", "Rect"]:
        """Left and right parts."""
        a = max(1, int((self.w - gap) * frac))
        return Rect(self.x, self.y, a, self.h), Rect(self.x + a + gap, self.y, max(1, self.w - a - gap), self.h)


def layout(width: int = 960, height: int = 540) -> dict[str, Rect]:
    """Where each panel lies (tests compare these regions)."""
    title = max(14, height // 22)
    pad = max(2, width // 160)
    body_h = height - title
    cols1 = (0.0, 0.36, 0.64, 1.0)
    cols2 = (0.0, 0.40, 0.66, 1.0)  # stats a third wide: a process's stats on one line at the smaller text sizes

    def cell(cols: tuple, i: int, top: float, bottom: float) -> Rect:
        x0, x1 = int(cols[i] * width) + pad, int(cols[i + 1] * width) - pad
        y0, y1 = title + int(top * body_h) + pad, title + int(bottom * body_h) - pad
        return Rect(x0, y0, max(1, x1 - x0), max(1, y1 - y0))

    return {"title": Rect(0, 0, width, title),
            "sees": cell(cols1, 0, 0.0, 0.55), "hears": cell(cols1, 1, 0.0, 0.55), "recalls": cell(cols1, 2, 0.0, 0.55),
            "fires": cell(cols2, 0, 0.55, 1.0), "weights": cell(cols2, 1, 0.55, 1.0), "stats": cell(cols2, 2, 0.55, 1.0)}


def _scale(img: np.ndarray) -> float:
    return max(0.33, min(img.shape[0] / 540.0, img.shape[1] / 960.0) * 0.6)


def _text(img: np.ndarray, s: str, x: int, y: int, scale: float, color=LABEL, thick: int = 1) -> None:
    cv2.putText(img, s, (int(x), int(y)), FONT, scale, color, thick, cv2.LINE_AA)


def _text_h(scale: float) -> int:
    return int(cv2.getTextSize("Ag", FONT, scale, 1)[0][1] * 1.9) + 2


def _centred(img: np.ndarray, r: Rect, s: str, scale: float, color=DIM) -> None:
    (tw, th), _ = cv2.getTextSize(s, FONT, scale, 1)
    _text(img, s, r.x + max(0, (r.w - tw) // 2), r.y + (r.h + th) // 2, scale, color)


def _panel(img: np.ndarray, r: Rect, title: str, scale: float) -> Rect:
    """Draw a panel's background and title; return the rectangle left for its content."""
    cv2.rectangle(img, (r.x, r.y), (r.x + r.w - 1, r.y + r.h - 1), PANEL, -1)
    _text(img, title, r.x + 6, r.y + _text_h(scale) - 4, scale, LABEL)
    return _content(r, scale)


def _content(r: Rect, scale: float) -> Rect:
    """What panel `r` leaves for its content under its title (pure, so layouts can be checked)."""
    th = _text_h(scale)
    return Rect(r.x + 4, r.y + th + 2, max(1, r.w - 8), max(1, r.h - th - 6))


def _unit(arr: np.ndarray) -> np.ndarray:
    """Any array -> 2-D (or HxWx3) float32 in [0, 1], small enough to resize."""
    a = np.asarray(arr)
    if a.ndim == 1:
        a = a[None, :]
    elif a.ndim == 3 and a.shape[2] in (1, 3, 4):
        a = a[..., :3] if a.shape[2] != 1 else a[..., 0]
    elif a.ndim >= 3:
        a = a.reshape(a.shape[0], -1)
    step = [max(1, -(-s // MAX_SIDE)) for s in a.shape[:2]]
    a = a[::step[0], ::step[1]].astype(np.float32)
    if arr.dtype == np.uint8:
        return a / 255.0
    lo, hi = float(a.min()), float(a.max())
    if lo >= 0.0 and hi <= 1.0:
        return a
    return (a - lo) / (hi - lo) if hi > lo else np.zeros_like(a)


def _fit(img: np.ndarray, box: Rect, src: np.ndarray, colormap: int | None = None, flip: bool = False) -> Rect:
    """Draw `src` into `box`, as large as fits with its aspect kept; returns where it went."""
    a = _unit(src)
    if flip:
        a = a[::-1]
    h, w = a.shape[:2]
    k = min(box.w / w, box.h / h)
    tw, th = max(1, int(w * k)), max(1, int(h * k))
    interp = cv2.INTER_NEAREST if k >= 1 else cv2.INTER_AREA
    u8 = np.ascontiguousarray(np.round(a * 255).astype(np.uint8))
    u8 = cv2.resize(u8, (tw, th), interpolation=interp)
    if colormap is not None:
        bgr = cv2.applyColorMap(u8 if u8.ndim == 2 else cv2.cvtColor(u8, cv2.COLOR_BGR2GRAY), colormap)
    else:
        bgr = cv2.cvtColor(u8, cv2.COLOR_GRAY2BGR) if u8.ndim == 2 else u8
    x, y = box.x + (box.w - tw) // 2, box.y + (box.h - th) // 2
    img[y:y + th, x:x + tw] = bgr
    return Rect(x, y, tw, th)


def _caption(img: np.ndarray, box: Rect, s: str, scale: float) -> Rect:
    """Write `s` at the bottom of `box`; return what is left above it."""
    th = _text_h(scale)
    _text(img, s, box.x + 2, box.y + box.h - 4, scale, DIM)
    return Rect(box.x, box.y, box.w, max(1, box.h - th))


def _ago(at: float, now: float) -> str:
    return f"{max(0.0, now - at):.1f} s ago"


# ---------------------------------------------------------------------- panels
def _sees(img, r, state, now, s) -> None:
    inner = _panel(img, r, "sees", s)
    cam, stim = inner.split(0.6)
    if state.frame is not None:
        _fit(img, _caption(img, cam, f"camera {_ago(state.frame.at, now)}", s * 0.8), state.frame.data)
    else:
        _centred(img, cam, "waiting for camera", s * 0.8)
    seen = state.stimulus.get("visual")
    if seen is not None:
        _fit(img, _caption(img, stim, f"stimulus {'x'.join(map(str, seen.data.shape))}", s * 0.8), seen.data)
    else:
        _centred(img, stim, "waiting for image", s * 0.8)


def _hears(img, r, state, now, s) -> None:
    inner = _panel(img, r, "hears", s)
    seen = state.stimulus.get("audio")
    if seen is None:
        _centred(img, inner, "waiting for sound", s * 0.8)
        return
    box = _caption(img, inner, f"spectrogram {_ago(seen.at, now)}", s * 0.8)
    _fit(img, box, seen.data, cv2.COLORMAP_VIRIDIS, flip=True)


WAITING = {"visual": "an image", "audio": "a sound"}


def _recalls(img, r, state, now, s) -> None:
    """One column per sense: the image and the spectrogram always, any other sense once it recalls."""
    inner = _panel(img, r, "recalls", s)
    senses = ["visual", "audio"] + sorted(m for m in state.recon if m not in ("visual", "audio"))
    boxes, rest = [], inner
    for k in range(len(senses) - 1):
        box, rest = rest.split(1 / (len(senses) - k))
        boxes.append(box)
    boxes.append(rest)
    for box, modality in zip(boxes, senses):
        seen = state.recon.get(modality)
        if seen is None:
            _centred(img, box, f"waiting for {WAITING.get(modality, modality)}", s * 0.8)
            continue
        msg = seen.msg
        box = _caption(img, box, f"{_ago(seen.at, now)}", s * 0.8)
        thought = f" (thought {msg.depth})" if msg.internal else ""
        box = _caption(img, box, f"#{msg.cluster_id} from {msg.cue_modality}{thought}", s * 0.8)
        if seen.data.size <= VALUE_SIZE:
            _centred(img, box, f"{modality} " + " ".join(f"{v:.3g}" for v in seen.data.ravel()), s * 1.2, LABEL)
        else:
            audio = modality == "audio"
            _fit(img, box, seen.data, cv2.COLORMAP_VIRIDIS if audio else None, flip=audio)


def _fires(img, r, state, now, s) -> None:
    inner = _panel(img, r, "fires", s)
    if not state.fired:
        _centred(img, inner, "waiting for excitations", s * 0.8)
        return
    rows = sorted(state.fired)
    row_h = inner.h // len(rows)
    big, small = s * 1.4, s * 0.8
    for i, modality in enumerate(rows):
        y = inner.y + i * row_h + _text_h(big)
        recent = list(state.fired[modality])[::-1]
        last = recent[0]
        x = inner.x + 2
        _text(img, modality, x, y, s)
        x += max(cv2.getTextSize(m, FONT, s, 1)[0][0] for m in rows) + 12
        label = "rejected" if last.cluster < 0 else f"#{last.cluster}"
        _text(img, label, x, y, big, HOT if now - last.at < HOT_S else LABEL, 2)
        x += cv2.getTextSize(label, FONT, big, 2)[0][0] + 12
        _text(img, _ago(last.at, now), x, y, small, DIM)
        if row_h >= _text_h(big) + _text_h(small) + 16:  # room for the recent ones under it
            _chips(img, Rect(inner.x + 2, y + 8, inner.w - 4, row_h), recent, now, small)


def _chips(img, box: Rect, recent: list[Fired], now: float, s: float) -> None:
    """The recently fired clusters, newest first; hot ones filled, older ones fading."""
    x = box.x
    for f in recent:
        label = "-" if f.cluster < 0 else str(f.cluster)
        (tw, th), _ = cv2.getTextSize(label, FONT, s, 1)
        if x + tw + 8 > box.x + box.w:
            break
        age = now - f.at
        hot = age < HOT_S
        colour = HOT if hot else tuple(int(c * max(0.3, 1.0 - age / 10.0)) for c in LABEL)
        cv2.rectangle(img, (x, box.y), (x + tw + 8, box.y + th + 10), colour, -1 if hot else 1)
        _text(img, label, x + 4, box.y + th + 5, s, BG if hot else colour)
        x += tw + 14


def _weights(img, r, state, now, s) -> None:
    seen = state.weights.get(("visual", "audio"))
    if seen is None and state.weights:
        seen = state.weights[sorted(state.weights)[0]]
    name = "CDZ visual->audio" if seen is None else f"CDZ {seen.msg.modality}->{seen.msg.target}"
    inner = _panel(img, r, name, s)
    if seen is None:
        _centred(img, inner, "waiting for weights", s * 0.8)
        return
    rows, cols = seen.data.shape
    box = _caption(img, inner, f"{rows} x {cols} clusters, max {float(seen.data.max()):.3g}", s * 0.8)
    w = np.maximum(seen.data.astype(np.float32), 0.0)
    peak = float(w.max())
    _fit(img, box, w / peak if peak > 0 else w, cv2.COLORMAP_INFERNO)


_STAT_KEYS = (("rate_per_s", "{:.0f}/s"), ("clusters", "{} cl"), ("nodes", "{} nodes"), ("played", "{} played"),
              ("latency_p50_ms", "p50 {:.1f} ms"), ("bad_messages", "{} bad"))


def _wrap(words: list[str], width: int, scale: float) -> list[str]:
    """Greedy line breaking of `words` to `width` pixels (a word too long alone is cut)."""
    lines: list[str] = []
    for w in words:
        joined = f"{lines[-1]}  {w}" if lines else w
        if lines and cv2.getTextSize(joined, FONT, scale, 1)[0][0] <= width:
            lines[-1] = joined
        else:
            while len(w) > 1 and cv2.getTextSize(w, FONT, scale, 1)[0][0] > width:
                w = w[:-1]
            lines.append(w)
    return lines


@dataclass(frozen=True)
class TextLine:
    """One line of text as drawn: `y` is its baseline, `bottom` the lowest row its descenders reach."""

    text: str
    colour: tuple[int, int, int]
    x: int
    y: int
    scale: float
    bottom: int


STATS_MIN_SCALE = 0.3  # smaller Hershey text is unreadable: below it, the lines that do not fit are summed up


def _stats_text(state: ViewerState, width: int, scale: float) -> list[tuple[str, tuple[int, int, int]]]:
    """The message counts, then a line or more per process that reports stats, wrapped to `width`."""
    lines = [(line, DIM) for line in _wrap([f"{k} {v}" for k, v in sorted(state.counts.items())]
                                           or ["no messages yet"], width, scale)]
    for name in sorted(state.stats):
        values = state.stats[name]
        parts = [fmt.format(values[k]) for k, fmt in _STAT_KEYS
                 if isinstance(values.get(k), (int, float)) and not (k == "bad_messages" and not values[k])]
        lines += [(line, LABEL) for line in _wrap([f"{name}:", *parts], width, scale)]
    return lines


def stats_lines(state: ViewerState, r: Rect, s: float) -> list[TextLine]:
    """The stats panel `r`'s lines at dashboard text scale `s`, every one wholly inside the panel.

    A live session has a hub, a worker per sense, camera, microphone, speaker and thinker
    reporting, more lines than the panel holds at the dashboard's text size (they ran off its
    bottom): the text shrinks until all fit, and below a readable size the last line that fits
    says how many more there are instead.
    """
    box = _content(r, s)
    scale = s * 0.8
    while True:
        lines = _stats_text(state, box.w - 4, scale)
        (_, th), base = cv2.getTextSize("Ag", FONT, scale, 1)
        gap = max(2, th // 2)
        step = th + base + gap
        room = max(0, (box.h - 1 + gap) // step)  # line i spans rows box.y + i*step + 1 ... + th + base
        if len(lines) <= room or scale * 0.9 < STATS_MIN_SCALE:
            break
        scale *= 0.9
    if len(lines) > room:
        more = len(lines) - room + 1
        lines = lines[:room - 1] + [(_wrap([f"... {more} more lines"], box.w - 4, scale)[0], DIM)] if room else []
    out = []
    for i, (text, colour) in enumerate(lines):
        y = box.y + i * step + 1 + th
        out.append(TextLine(text, colour, box.x + 2, y, scale, y + base))
    return out


def _stats(img, r, state, now, s) -> None:
    _panel(img, r, "stats", s)
    for line in stats_lines(state, r, s):
        _text(img, line.text, line.x, line.y, line.scale, line.colour)


def render(state: ViewerState, width: int = 960, height: int = 540, now: float | None = None) -> np.ndarray:
    """The dashboard as one BGR uint8 picture of `height` x `width` (any subset of data may be missing)."""
    if width < 64 or height < 48:
        raise ValueError(f"dashboard of {width}x{height} is too small (at least 64x48)")
    now = time.monotonic() if now is None else now
    img = np.full((height, width, 3), BG, np.uint8)
    s = _scale(img)
    boxes = layout(width, height)
    t = boxes["title"]
    asleep = any(v.get("sleeping") is True for v in state.stats.values())  # the hub says so while `cdz sleep` runs
    _text(img, f"cdz viewer   {sum(state.counts.values())} messages{'   SLEEPING (learning what it lived)' if asleep else ''}",
          t.x + 8, t.y + t.h - 4, s, LABEL)
    for name, draw in (("sees", _sees), ("hears", _hears), ("recalls", _recalls), ("fires", _fires),
                       ("weights", _weights), ("stats", _stats)):
        try:
            draw(img, boxes[name], state, now, s)
        except (cv2.error, ValueError, ZeroDivisionError) as e:  # odd data must not end the viewer
            log.warning("viewer: cannot draw %s (%s)", name, e)
            _centred(img, boxes[name], f"cannot draw {name}", s * 0.8, HOT)
    return img
