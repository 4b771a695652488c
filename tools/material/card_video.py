"""A video of MNIST test digits printed on cards and held in front of a camera.

It lets the camera pipeline be tested and measured without a camera or a
person: the ground truth (which digit is in view in which frames) is known.
The scene is lit unevenly (a gradient and a soft hot spot fall on the background
and the cards alike), the camera adds noise and JPEG artefacts, each card is
placed at a random spot, rotated up to +-15 degrees, blurred (defocus or motion)
and jitters a little from frame to frame as a hand would.

    python -m tools.material.card_video cards.avi --n 100
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2
import numpy as np

from agent.runtime import flags
PAPER = (0.93, 0.97)  # card reflectance (white-ish)
WALL = (0.62, 0.78)  # background reflectance (light, but darker than the card)
INK = (0.08, 0.22)  # printed ink reflectance
NOISE_FRAMES = 8  # sensor noise is drawn once and reused in random order (fast, looks the same)


def _illumination(rng: np.random.Generator, w: int, h: int) -> np.ndarray:
    """(h, w) light falling on the scene: a linear gradient plus a soft hot spot, ~0.65..1.15."""
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    angle = rng.uniform(0.0, 2.0 * np.pi)
    ramp = (np.cos(angle) * (xs / w - 0.5) + np.sin(angle) * (ys / h - 0.5))
    cy, cx = rng.uniform(0.2, 0.8) * h, rng.uniform(0.2, 0.8) * w
    spot = np.exp(-(((xs - cx) ** 2 + (ys - cy) ** 2) / (2.0 * (0.35 * w) ** 2)))
    return (0.8 + rng.uniform(0.25, 0.45) * ramp + 0.2 * spot).astype(np.float32)


def _background(rng: np.random.Generator, w: int, h: int) -> np.ndarray:
    """(h, w, 3) reflectance of a light wall: slightly tinted, with faint low-frequency texture."""
    tint = rng.uniform(*WALL) * rng.uniform(0.95, 1.05, size=3)
    texture = cv2.GaussianBlur(rng.normal(0.0, 1.0, (h, w)).astype(np.float32), (0, 0), 12.0)
    texture *= 0.03 / max(float(texture.std()), 1e-6)
    return (tint[None, None, :] + texture[..., None]).astype(np.float32)


def _card(rng: np.random.Generator, digit: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """A printed card before placement: reflectance and coverage, float32 (s, s) squares, and the
    card's half diagonal.

    The square leaves room for any rotation, so rotating it never cuts a corner."""
    side = int(rng.uniform(120, 200))  # the 28x28 MNIST field printed this large
    big = cv2.resize(np.asarray(digit, dtype=np.float32), (side, side), interpolation=cv2.INTER_CUBIC)
    big = np.clip(big, 0.0, 1.0)
    paper, ink = rng.uniform(*PAPER), rng.uniform(*INK)
    card_w, card_h = int(side * rng.uniform(1.15, 1.35)), int(side * rng.uniform(1.2, 1.5))
    s = int(np.ceil(np.hypot(card_w, card_h))) + 4
    refl = np.zeros((s, s), np.float32)
    cover = np.zeros((s, s), np.float32)
    y0, x0 = (s - card_h) // 2, (s - card_w) // 2
    refl[y0:y0 + card_h, x0:x0 + card_w] = paper
    cover[y0:y0 + card_h, x0:x0 + card_w] = 1.0
    dy, dx = (s - side) // 2, (s - side) // 2
    refl[dy:dy + side, dx:dx + side] = paper - (paper - ink) * big
    return refl, cover, float(np.hypot(card_w, card_h)) / 2.0


def _blur_kernel(rng: np.random.Generator) -> np.ndarray:
    """A defocus (Gaussian) kernel, or one time in three a short motion streak."""
    if rng.random() < 1.0 / 3.0:
        length = int(rng.integers(5, 10))
        k = np.zeros((length, length), np.float32)
        k[length // 2, :] = 1.0
        rot = cv2.getRotationMatrix2D(((length - 1) / 2.0, (length - 1) / 2.0), rng.uniform(0, 180), 1.0)
        k = cv2.warpAffine(k, rot, (length, length))
        return k / k.sum()
    sigma = rng.uniform(0.6, 1.8)
    g = cv2.getGaussianKernel(2 * int(3 * sigma) + 1, sigma).astype(np.float32)
    return g @ g.T


def make_card_video(path: str | Path, digits_x: np.ndarray, labels: np.ndarray, seed: int, fps: int = 15,
                    show_s: float = 1.5, gap_s: float = 0.7, size: tuple[int, int] = (640, 480)) -> list[dict]:
    """Write the video (MJPG .avi) and return the ground truth: per card its label, first and last
    frame, tilt (degrees, counter-clockwise) and centre in pixels.

    Each card is in view for `show_s` seconds after `gap_s` seconds of empty
    background, so the video opens with background. `digits_x` are MNIST-like
    (n, 28, 28) images in [0, 1] (bright ink), printed dark on the cards.
    """
    if len(digits_x) != len(labels):
        raise ValueError(f"{len(digits_x)} digits but {len(labels)} labels")
    rng = np.random.default_rng(seed)
    w, h = size
    light = _illumination(rng, w, h)
    wall = _background(rng, w, h) * light[..., None]
    noise = [rng.normal(0.0, 3.0, (h, w, 3)).astype(np.float32) for _ in range(NOISE_FRAMES)]
    show, gap = max(1, round(show_s * fps)), max(1, round(gap_s * fps))
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), float(fps), (w, h))
    if not writer.isOpened():
        raise OSError(f"cannot write a video to {path} (OpenCV has no MJPG writer for it?)")
    truth, frame_no = [], 0

    def emit(img: np.ndarray) -> None:
        nonlocal frame_no
        out = img * 255.0 + noise[int(rng.integers(NOISE_FRAMES))]
        writer.write(np.clip(out, 0, 255).astype(np.uint8))
        frame_no += 1

    try:
        for k, (digit, label) in enumerate(zip(digits_x, labels)):
            for _ in range(gap):
                emit(wall)
            refl, cover, half_diagonal = _card(rng, digit)
            s = refl.shape[0]
            angle = rng.uniform(-15.0, 15.0)
            kernel = _blur_kernel(rng)
            reach = min(half_diagonal + 6, min(w, h) / 2.0)  # the card stays in the frame, jitter included
            cx, cy = rng.uniform(reach, w - reach), rng.uniform(reach, h - reach)
            first = frame_no
            jitter = np.zeros(3)
            for _ in range(show):
                jitter = 0.7 * jitter + rng.normal(0.0, [1.0, 1.0, 0.4])  # a hand: small, correlated moves
                m = cv2.getRotationMatrix2D((s / 2.0, s / 2.0), angle + jitter[2], 1.0)
                m[:, 2] += (cx + jitter[0] - s / 2.0, cy + jitter[1] - s / 2.0)
                r = cv2.warpAffine(refl, m, (w, h), flags=cv2.INTER_LINEAR)
                c = cv2.warpAffine(cover, m, (w, h), flags=cv2.INTER_LINEAR)
                scene = wall * (1.0 - c[..., None]) + (r * light)[..., None] * c[..., None]
                emit(cv2.filter2D(scene, -1, kernel, borderType=cv2.BORDER_REPLICATE))
            truth.append({"card": k, "label": int(label), "first": first, "last": frame_no - 1,
                          "angle": round(float(angle), 2), "centre": (round(cx), round(cy))})
        for _ in range(gap):
            emit(wall)
    finally:
        writer.release()
    return truth


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tools.material.card_video", description=__doc__.split("\n\n")[0])
    p.add_argument("out", help="video file to write (.avi, MJPG)")
    p.add_argument("--n", type=flags.COUNT, default=100, help="cards (MNIST test digits, default 100)")
    p.add_argument("--seed", type=flags.SEED, default=0)
    p.add_argument("--fps", type=flags.COUNT, default=15)
    p.add_argument("--show", type=flags.POSITIVE, default=1.5, help="seconds each card is in view")
    p.add_argument("--gap", type=flags.NON_NEGATIVE, default=0.7, help="seconds of empty background between cards")
    args = p.parse_args(argv)
    from replay.data.datasets import load_mnist

    test = load_mnist("test")
    pick = np.random.default_rng(args.seed).choice(len(test.y), size=args.n, replace=False)
    truth = make_card_video(args.out, test.x[pick], test.y[pick], args.seed, fps=args.fps, show_s=args.show,
                            gap_s=args.gap)
    print(f"{args.out}: {len(truth)} cards, {truth[-1]['last'] + 1} frames; labels "
          f"{''.join(str(t['label']) for t in truth)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
