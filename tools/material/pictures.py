"""Pictures of digits as people hand them over, with their digits: test material for `cdz recall`.

Users do not give the agent MNIST fields. They give a scan with wide margins, a
printed digit off centre, a phone photo of a card under a lamp, white chalk on a
board. Each picture here is one of four kinds, drawn at random:

* **handwritten**: an MNIST *test* digit (writers the agent never learned from)
  drawn large, dark on white, somewhere on a page with margins;
* **printed**: a digit in one of OpenCV's Hershey fonts, any size and weight,
  somewhere on a page;
* **photographed**: either of the above on a card on a wall, lit unevenly, blurred
  a little, with camera noise and JPEG artefacts;
* **inverted**: light ink on a dark board (chalk) or screen.

    python -m tools.material.pictures OUT_DIR --n 120     # OUT_DIR/<i>_<digit>_<kind>.png (.jpg for photos)
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from agent.runtime import flags
from tools.material.card_video import _background, _illumination

KINDS = ("handwritten", "printed", "photographed", "inverted")
FONTS = (cv2.FONT_HERSHEY_SIMPLEX, cv2.FONT_HERSHEY_DUPLEX, cv2.FONT_HERSHEY_COMPLEX, cv2.FONT_HERSHEY_TRIPLEX,
         cv2.FONT_HERSHEY_PLAIN, cv2.FONT_HERSHEY_COMPLEX_SMALL)


@dataclass(frozen=True)
class Picture:
    image: np.ndarray  # HxW uint8 grey
    digit: int
    kind: str
    suffix: str  # ".png", or ".jpg" for a photo


def _ink_field(rng: np.random.Generator, digit: int, mnist: tuple[np.ndarray, np.ndarray] | None,
               handwritten: bool) -> np.ndarray:
    """Ink coverage in [0, 1] of one digit, float32, cropped to its ink with a little room."""
    if handwritten and mnist is not None:
        images, labels = mnist
        pick = rng.choice(np.flatnonzero(labels == digit))
        side = int(rng.integers(60, 260))
        ink = cv2.resize(images[pick].astype(np.float32), (side, side), interpolation=cv2.INTER_CUBIC)
    else:
        font = FONTS[int(rng.integers(len(FONTS)))]
        scale = float(rng.uniform(2.0, 6.0))
        thick = int(rng.integers(2, 12))
        (w, h), base = cv2.getTextSize(str(digit), font, scale, thick)
        canvas = np.zeros((h + base + 2 * thick + 8, w + 2 * thick + 8), np.uint8)
        cv2.putText(canvas, str(digit), (thick + 4, h + thick + 4), font, scale, 255, thick, cv2.LINE_AA)
        ink = canvas.astype(np.float32) / 255.0
    ink = np.clip(ink, 0.0, 1.0)
    rows, cols = np.flatnonzero(ink.max(axis=1) > 0.1), np.flatnonzero(ink.max(axis=0) > 0.1)
    return ink[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]


def _place(rng: np.random.Generator, ink: np.ndarray) -> tuple[np.ndarray, tuple[int, int]]:
    """The ink on a page with margins of 10-150% of its size on each side (off centre)."""
    h, w = ink.shape
    top, bottom = (int(rng.uniform(0.1, 1.5) * h) for _ in range(2))
    left, right = (int(rng.uniform(0.1, 1.5) * max(w, h // 2)) for _ in range(2))
    page = np.zeros((h + top + bottom, w + left + right), np.float32)
    page[top:top + h, left:left + w] = ink
    return page, (top, left)


def make_picture(rng: np.random.Generator, digit: int, kind: str,
                 mnist: tuple[np.ndarray, np.ndarray] | None) -> Picture:
    """One picture of `digit` of the given kind (handwriting from `mnist` where given, else printed)."""
    handwritten = kind == "handwritten" or (kind != "printed" and rng.random() < 0.5)
    coverage, _ = _place(rng, _ink_field(rng, digit, mnist, handwritten))
    h, w = coverage.shape
    if kind == "photographed":
        refl = _background(rng, w, h).mean(axis=2)
        paper, ink = rng.uniform(0.85, 0.97), rng.uniform(0.05, 0.25)
        pad_y, pad_x = int(0.1 * h), int(0.1 * w)
        refl[pad_y:h - pad_y, pad_x:w - pad_x] = paper  # the card, smaller than the frame
        refl = refl * (1.0 - coverage) + ink * coverage
        img = refl * _illumination(rng, w, h) * 230.0
        img = cv2.GaussianBlur(img, (0, 0), float(rng.uniform(0.3, 1.5)))
        img = img + rng.normal(0.0, rng.uniform(2.0, 6.0), img.shape)
        img = np.clip(np.rint(img), 0, 255).astype(np.uint8)
        quality = int(rng.integers(40, 90))
        ok, jpg = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, quality])
        return Picture(cv2.imdecode(jpg, cv2.IMREAD_GRAYSCALE), digit, kind, ".jpg")
    paper, ink = (rng.uniform(0.0, 0.25), rng.uniform(0.75, 1.0)) if kind == "inverted" \
        else (rng.uniform(0.85, 1.0), rng.uniform(0.0, 0.3))
    img = (paper * (1.0 - coverage) + ink * coverage) * 255.0
    return Picture(np.clip(np.rint(img), 0, 255).astype(np.uint8), digit, kind, ".png")


def make_pictures(n: int, seed: int = 0, mnist: tuple[np.ndarray, np.ndarray] | None = None) -> list[Picture]:
    """`n` pictures, the kinds and digits in turn (so any n >= 40 holds every pair), drawn from `seed`."""
    rng = np.random.default_rng(seed)
    return [make_picture(rng, i % 10, KINDS[(i // 10) % len(KINDS)], mnist) for i in range(n)]


def mnist_test_digits() -> tuple[np.ndarray, np.ndarray]:
    """MNIST's test images (writers outside the training split) and their labels."""
    from replay.data.datasets import load_mnist

    split = load_mnist("test")
    return split.x, split.y


def write_pictures(pictures: list[Picture], out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, p in enumerate(pictures):
        path = out / f"{i:03d}_{p.digit}_{p.kind}{p.suffix}"
        if not cv2.imwrite(str(path), p.image):
            raise OSError(f"could not write {path}")
        paths.append(path)
    return paths


def digit_of(path: Path) -> int:
    """The digit a written picture shows, from its name (`<i>_<digit>_<kind>`)."""
    return int(path.stem.split("_")[1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.material.pictures", description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path, help="folder for the pictures")
    parser.add_argument("--n", type=flags.COUNT, default=120, help="how many (default 120)")
    parser.add_argument("--seed", type=flags.SEED, default=0)
    parser.add_argument("--printed-only", action="store_true", help="no MNIST needed: printed digits only")
    args = parser.parse_args(argv)
    mnist = None if args.printed_only else mnist_test_digits()
    paths = write_pictures(make_pictures(args.n, args.seed, mnist), args.out)
    print(f"{len(paths)} pictures in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
