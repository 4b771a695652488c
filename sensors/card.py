"""Digit cards in camera frames: where the card's digit is, and which views of it become stimuli.

Pure functions of frames (no capture, no bus), so the camera process, `extract_stimuli`
and `cdz bench live` see exactly the same thing.
"""

from __future__ import annotations

import cv2
import numpy as np

from sensors.errors import FeatureError
from sensors.image_features import ink_to_mnist


# ---------------------------------------------------------------------- finding the card
def _odd(n: float) -> int:
    return max(3, int(n) | 1)


def find_card(frame_bgr: np.ndarray, work_width: int = 320, min_size: float = 0.08, max_size: float = 0.9,
              upright: bool = True, group: int = 40) -> tuple[np.ndarray, tuple[int, int, int, int]] | None:
    """The digit on a card in view: (crop of bright ink on dark, float32 in [0, 1]; box x, y, w, h in
    frame pixels), or None.

    Ink is what is much darker than the paper around it: the paper's brightness is
    estimated by a grey closing (strokes thinner than the kernel vanish), so uneven
    light and a card brighter than the wall do not count as ink, and large dark
    things are ignored. Strokes closer than 1/`group` of the frame width are merged into one digit; the
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
    ratio, paper = _against_paper(grey)
    ink_mask = ((ratio < 0.6) & (paper > 40.0)).astype(np.uint8)
    grouped = cv2.dilate(ink_mask, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (_odd(w / group),) * 2))
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
    strength = _ink_strength(ratio)
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


def _against_paper(grey: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(each pixel's brightness as a share of the paper around it, the paper's brightness).

    The paper is a grey closing wider than any stroke (strokes vanish in it), so
    uneven light and a card brighter than the wall do not count as ink."""
    grey_f = grey.astype(np.float32)
    side = _odd(grey.shape[1] / 10)
    paper = cv2.morphologyEx(grey_f, cv2.MORPH_CLOSE, cv2.getStructuringElement(cv2.MORPH_RECT, (side, side)))
    paper = cv2.GaussianBlur(paper, (0, 0), 2.0)  # the closing is blocky
    return grey_f / np.maximum(paper, 1.0), paper


def _ink_strength(ratio: np.ndarray) -> np.ndarray:
    """How much ink a pixel holds, in [0, 1], from its share of the paper's brightness."""
    return np.clip((0.85 - ratio) / 0.45, 0.0, 1.0).astype(np.float32)


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


# ---------------------------------------------------------------------- a still picture
STILL_SIDE = 320  # a picture is looked at this large (the camera's working width)
_STILL_MARGIN = 0.5  # paper added around a picture, per side, as a share of its longer side
_STILL_GROUP = 20  # strokes closer than 1/20 of the working width are one digit: a still's digit is large
#                    in its frame, so the gap under a 5's bar is wider than in a camera's (1/40)


def ink_is_dark(grey: np.ndarray) -> bool:
    """Whether a picture's ink is darker than its paper (ink on paper) or brighter (chalk, MNIST).

    The paper is most of a picture, so the median pixel is paper: ink is dark when the
    median lies in the brighter half of the picture's own range (1st to 99th
    percentile), which also holds for a dim photo whose paper is darker than mid-grey.
    """
    lo, median, hi = np.percentile(grey, (1, 50, 99))
    return bool(median >= (lo + hi) / 2.0)


def picture_to_stimulus(grey: np.ndarray) -> np.ndarray:
    """A still picture (HxW grey in [0, 1], any size, either polarity) -> the 28x28 stimulus the camera
    would make of it.

    The picture is turned to dark ink on light paper, stretched to full contrast, given a
    margin, scaled to the camera's working size, and handed to `find_card`, then
    `ink_to_mnist`. The margin is tried two ways. First the picture's own edge runs on
    into it, so whatever its edge cuts (a table beside a photographed card) stays cut by
    the frame edge and is passed over, as the camera passes over a card coming or going.
    If that finds no digit (one that touches the picture's edge, or fills it), the
    margin is blank paper, so the digit stands free and its strokes stay thin next to
    the paper estimate. Where neither finds a digit-sized ink group, all the picture's
    ink is used. A still is not turned upright: without a card's edges, the slant of a
    "1" would pass for a tilt.
    """
    g = np.asarray(grey, np.float32)
    if not ink_is_dark(g):
        g = 1.0 - g
    lo = float(cv2.GaussianBlur(g, (0, 0), 1.0).min())  # the darkest ink, not a lone noisy pixel
    hi = float(np.percentile(g, 99.5))  # the paper (a digit can cover far less than 0.5% of a page)
    if hi - lo < 1.0 / 255.0:
        raise FeatureError("picture has no contrast")
    g = np.clip((g - lo) / (hi - lo), 0.0, 1.0) * 255.0
    kernel = cv2.getStructuringElement(cv2.MORPH_RECT, (_odd(max(g.shape) / 5),) * 2)
    paper = cv2.morphologyEx(g, cv2.MORPH_CLOSE, kernel)  # the picture without its strokes
    for around in (g, paper):
        frame = _framed(g, around)
        found = find_card(frame, work_width=STILL_SIDE, min_size=0.02, max_size=0.95, upright=False, group=_STILL_GROUP)
        if found is not None:
            return ink_to_mnist(even_strokes(found[0]))
    return ink_to_mnist(even_strokes(_ink_strength(_against_paper(frame)[0])))


MNIST_STROKE = 0.115  # MNIST's median stroke width, as a share of the digit's longer side (10-90%: 0.09-0.16)
_STROKE_RANGE = (0.08, 0.16)  # widths a pen gives that need no change


def stroke_width(ink: np.ndarray) -> float:
    """The ink's stroke width as a share of its box's longer side: 2 x area / outline length,
    which is the width of a long thin stroke. 0 for no ink."""
    mask = (ink > 0.5 * float(ink.max(initial=0.0))).astype(np.uint8)
    area = int(mask.sum())
    if area == 0:
        return 0.0
    contours, _ = cv2.findContours(mask, cv2.RETR_LIST, cv2.CHAIN_APPROX_NONE)
    outline = sum(cv2.arcLength(c, True) for c in contours)
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    side = max(rows[-1] - rows[0] + 1, cols[-1] - cols[0] + 1)
    return 2.0 * area / max(outline, 1.0) / side


def even_strokes(ink: np.ndarray) -> np.ndarray:
    """Ink drawn with a much bolder or finer pen than MNIST's, eroded or dilated to MNIST's stroke width.

    A bold printed 6 closes its loop and reads as a 0, and a hairline scanned large
    thins to grey once shrunk to 20x20: neither looks like what the agent learned.
    Pens within MNIST's own range (`_STROKE_RANGE`) are left as they are."""
    width = stroke_width(ink)
    if width == 0.0 or _STROKE_RANGE[0] <= width <= _STROKE_RANGE[1]:
        return ink
    mask = ink > 0.5 * float(ink.max())
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    side = max(rows[-1] - rows[0] + 1, cols[-1] - cols[0] + 1)
    radius = int(round(abs(width - MNIST_STROKE) * side / 2.0))
    if radius == 0:
        return ink
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1,) * 2)
    padded = cv2.copyMakeBorder(np.asarray(ink, np.float32), radius, radius, radius, radius, cv2.BORDER_CONSTANT, 0.0)
    changed = cv2.erode(padded, kernel) if width > MNIST_STROKE else cv2.dilate(padded, kernel)
    return changed if changed.max() > 0.5 * float(ink.max()) else ink


def _framed(picture: np.ndarray, around: np.ndarray) -> np.ndarray:
    """The picture in the middle of a margin that continues `around`'s edge, scaled to STILL_SIDE, uint8."""
    h, w = picture.shape
    margin = round(_STILL_MARGIN * max(h, w))
    frame = cv2.copyMakeBorder(around, margin, margin, margin, margin, cv2.BORDER_REPLICATE)
    frame[margin:margin + h, margin:margin + w] = picture
    side = max(frame.shape)
    size = (round(frame.shape[1] * STILL_SIDE / side), round(frame.shape[0] * STILL_SIDE / side))
    frame = cv2.resize(frame, size, interpolation=cv2.INTER_AREA if side > STILL_SIDE else cv2.INTER_LINEAR)
    return np.clip(np.rint(frame), 0, 255).astype(np.uint8)


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
