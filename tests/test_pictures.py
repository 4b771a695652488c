"""Pictures as people hand them over: the still-picture path of the camera's ink finder (`sensors.card`).

A digit must give the same stimulus wherever it sits on a page, whatever the page's
size and polarity, and whatever the pen; a table beside a photographed card is not ink.
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from sensors.card import MNIST_STROKE, even_strokes, ink_to_mnist, picture_to_stimulus, stimulus_distance, stroke_width
from sensors.image_features import image_to_stimulus
from sensors.files import picture


@pytest.fixture(scope="module")
def digits(data_dir) -> np.ndarray:
    """A few MNIST test digits, (n, 28, 28) uint8 with bright ink on black."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CDZ_DATA_DIR", str(data_dir))
        from replay.data.datasets import load_mnist

        x = load_mnist("test", per_class=1).x
    return np.round(x * 255).astype(np.uint8)


def on_page(digit: np.ndarray, side: int, page: tuple[int, int], at: tuple[int, int], dark_ink: bool) -> np.ndarray:
    """An MNIST digit drawn `side` pixels tall on a page of `page` (h, w) at `at` (top, left)."""
    ink = cv2.resize(digit, (side, side), interpolation=cv2.INTER_CUBIC).astype(np.float32) / 255.0
    out = np.zeros(page, np.float32)
    out[at[0]:at[0] + side, at[1]:at[1] + side] = ink
    img = (0.95 - 0.85 * out) if dark_ink else (0.1 + 0.85 * out)
    return np.round(img * 255).astype(np.uint8)


def test_a_digit_reads_the_same_wherever_it_sits_and_whichever_way_round(digits):
    for digit in digits:
        clean = picture(digit).x  # the MNIST field itself, through the picture path
        assert stimulus_distance(clean, ink_to_mnist(digit / 255.0)) < 0.25
        for side, page, at, dark in [(120, (600, 400), (50, 30), True), (60, (300, 500), (200, 400), True),
                                     (200, (260, 900), (30, 20), False), (40, (90, 60), (25, 10), False)]:
            img = on_page(digit, side, page, at, dark)
            seen = picture(img).x
            assert stimulus_distance(seen, clean) < 0.3, (side, page, at, dark, stimulus_distance(seen, clean))
        # what `cdz recall` did before: the whole page squeezed into 28x28 loses the digit
        assert stimulus_distance(image_to_stimulus(on_page(digit, 60, (300, 500), (200, 400), True)), clean) > 0.6


def test_a_table_cut_by_the_photo_edge_is_not_taken_for_ink(digits):
    digit = digits[7]
    img = on_page(digit, 100, (400, 400), (150, 150), True)
    photo = img.copy()
    photo[:, :40] = 30  # a dark table along the left edge, beside the card
    photo[:25, :] = 40  # and along the top
    assert stimulus_distance(picture(photo).x, picture(img).x) < 0.15


def test_bold_and_hairline_pens_are_evened_to_mnist_strokes(digits):
    digit = cv2.resize(digits[6], (280, 280), interpolation=cv2.INTER_CUBIC).astype(np.float32) / 255.0
    normal = stroke_width(digit)
    assert 0.08 <= normal <= 0.16 and even_strokes(digit) is digit  # MNIST's own pen: left alone
    bold = cv2.dilate(digit, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (35, 35)))
    fine = cv2.erode(digit, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (21, 21)))
    assert stroke_width(bold) > 0.2 and stroke_width(fine) < 0.07
    for pen in (bold, fine):
        evened = stroke_width(even_strokes(pen))
        assert abs(evened - MNIST_STROKE) < abs(stroke_width(pen) - MNIST_STROKE) / 2, (stroke_width(pen), evened)


def test_a_blank_or_flat_picture_is_a_clear_error():
    from sensors.errors import FeatureError

    with pytest.raises(FeatureError, match="blank"):
        picture(np.full((50, 50), 200, np.uint8))
    with pytest.raises(FeatureError, match="no contrast"):
        picture_to_stimulus(np.full((50, 50), 0.5, np.float32))
