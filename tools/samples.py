"""`cdz samples DIR`: a few inputs to try `cdz recall` and the API on, made from the held-out test data.

* `seven.png`: a handwritten 7 (an MNIST test digit) photographed on a card, off centre;
* `seven-printed.png`: a printed 7 on a page with wide margins;
* `seven.wav`: "seven" said by an FSDD speaker (a test recording);
* `words.wav`: "one", "two", "three" in one recording, with pauses, as a microphone hears them.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from tools.material.pictures import make_picture, mnist_test_digits

SPEAKER = "jackson"  # in every run made with the default speakers; its test recordings are held out
WORDS = (1, 2, 3)


def _fsdd(digit: int) -> tuple[np.ndarray, int]:
    """The first test recording of `digit` said by SPEAKER: samples in [-1, 1] and the rate."""
    from replay.data.datasets import list_fsdd_files
    from sensors.file_reading import read_wav_file

    return read_wav_file(list_fsdd_files("test", digits=[digit], per_class=1, speakers=[SPEAKER])[0])


def write_samples(out: Path) -> list[Path]:
    """Write the samples into `out` (made if missing); returns their paths. Needs the data (CDZ_DATA_DIR)."""
    from scipy.io import wavfile

    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(7)
    mnist = mnist_test_digits()
    pictures = {"seven.png": make_picture(rng, 7, "photographed", mnist),
                "seven-printed.png": make_picture(rng, 7, "printed", None)}
    paths = []
    for name, p in pictures.items():
        ok, data = cv2.imencode(".png", p.image)
        (out / name).write_bytes(data.tobytes())
        paths.append(out / name)
    seven, rate = _fsdd(7)
    wavfile.write(out / "seven.wav", rate, np.round(seven * 32767).astype(np.int16))
    pause = rng.normal(0.0, 1e-3, int(0.6 * rate)).astype(np.float32)
    words = [pause]
    for digit in WORDS:
        wave, _ = _fsdd(digit)
        words += [wave, pause]
    wavfile.write(out / "words.wav", rate, np.round(np.concatenate(words) * 32767).astype(np.int16))
    return paths + [out / "seven.wav", out / "words.wav"]
