"""`cdz bench pictures`: `cdz recall` on pictures as people hand them over, and what familiarity tells apart.

The pictures (`tools.material.pictures`) are written as files and read back through the very
path `cdz recall` and the API take (`sensors.files`). A picture is recalled correctly
when the audio cluster it recalls stands for its digit. Beside it: the same pictures
squeezed whole into 28x28 (`sensors.image_features.image_to_stimulus`, what `cdz recall` did
before it used the camera's ink finder), and, for familiarity, MNIST test digits
and pictures of digits against things that are not digits (printed letters, noise, a
filled disc, which the ink finder makes into something very like a bold 0).
"""

from __future__ import annotations

import tempfile
from collections import defaultdict
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from sensors.file_reading import decode_image_file
from sensors.image_features import image_to_stimulus
from sensors.files import read_image_file
from tools.material.pictures import KINDS, digit_of, make_pictures, mnist_test_digits, write_pictures

LETTERS = "ACEFHKMPRTWXY"
NOT_DIGITS = ("letter", "noise", "filled disc")


def _not_digits(rng: np.random.Generator, n: int) -> list[np.ndarray]:
    """Pictures of things the agent never learned, NOT_DIGITS in turn (uint8, dark on light)."""
    out = []
    for i in range(n):
        page = np.full((160, 160), int(rng.integers(200, 250)), np.uint8)
        kind = i % len(NOT_DIGITS)
        if kind == 0:
            cv2.putText(page, LETTERS[int(rng.integers(len(LETTERS)))], (40, 120), cv2.FONT_HERSHEY_DUPLEX,
                        float(rng.uniform(2.5, 3.5)), int(rng.integers(0, 60)), int(rng.integers(4, 10)), cv2.LINE_AA)
        elif kind == 1:
            page = rng.integers(0, 256, page.shape).astype(np.uint8)
        else:
            cv2.circle(page, (int(rng.integers(50, 110)), int(rng.integers(50, 110))), int(rng.integers(20, 45)),
                       int(rng.integers(0, 80)), -1)
        out.append(page)
    return out


def bench_pictures(run: Path | str, n: int = 120, seed: int = 0, familiarity_n: int = 60) -> dict[str, Any]:
    """Recall on `n` pictures (every kind and digit), before and after the ink finder; familiarity of
    digits and non-digits."""
    from agent.api import Agent

    agent = Agent.load(run)
    mnist = mnist_test_digits()
    hits: dict[str, list[bool]] = defaultdict(list)
    whole: dict[str, list[bool]] = defaultdict(list)
    with tempfile.TemporaryDirectory(prefix="cdz-pictures-") as tmp:
        for path in write_pictures(make_pictures(n, seed, mnist), Path(tmp)):
            digit, kind = digit_of(path), path.stem.split("_")[2]
            seen = agent.recall_stimulus("visual", read_image_file(path)).recalled["audio"].name
            squeezed = agent.recall_stimulus("visual", image_to_stimulus(decode_image_file(path))).recalled["audio"].name
            hits[kind].append(seen == digit)
            whole[kind].append(squeezed == digit)
    rng = np.random.default_rng(seed)
    digits = [agent.recall_stimulus("visual", x) for x in mnist[0][rng.choice(len(mnist[0]), familiarity_n, False)]]
    others = [agent.recall(img) for img in _not_digits(rng, familiarity_n)]
    pictured = [agent.recall(p.image) for p in make_pictures(familiarity_n, seed + 1, mnist)]
    every = [h for kind in KINDS for h in hits[kind]]
    return {
        "pictures": len(every),
        "recall": float(np.mean(every)),
        "recall_by_kind": {k: float(np.mean(hits[k])) for k in KINDS if hits[k]},
        "recall_squeezed_whole": float(np.mean([h for k in KINDS for h in whole[k]])),
        "familiarity": {
            "mnist_test_median": float(np.median([r.familiarity for r in digits])),
            "mnist_test_flagged_novel": float(np.mean([r.novel for r in digits])),
            "pictures_median": float(np.median([r.familiarity for r in pictured])),
            "pictures_flagged_novel": float(np.mean([r.novel for r in pictured])),
            "not_digits_median": {k: float(np.median([r.familiarity for r in others[i::3]]))
                                  for i, k in enumerate(NOT_DIGITS)},
            "not_digits_flagged_novel": {k: float(np.mean([r.novel for r in others[i::3]]))
                                         for i, k in enumerate(NOT_DIGITS)},
        },
    }


def format_pictures(result: dict[str, Any]) -> str:
    f = result["familiarity"]
    lines = [f"cdz recall on {result['pictures']} pictures as people hand them over (recalled audio = the digit):",
             f"  through the camera's ink finder   {result['recall']:.3f}",
             "    " + ", ".join(f"{k} {v:.3f}" for k, v in result["recall_by_kind"].items()),
             f"  squeezed whole into 28x28 (before) {result['recall_squeezed_whole']:.3f}",
             "familiarity (median; share flagged novel):",
             f"  MNIST test digits {f['mnist_test_median']:.2f}; {f['mnist_test_flagged_novel']:.2f}",
             f"  digit pictures    {f['pictures_median']:.2f}; {f['pictures_flagged_novel']:.2f}"]
    lines += [f"  {k:<17} {f['not_digits_median'][k]:.2f}; {f['not_digits_flagged_novel'][k]:.2f}" for k in NOT_DIGITS]
    return "\n".join(lines)
