"""A user's files and arrays, taken the way the sensors take the world.

A picture goes through the camera's ink finder (`sensors.card.picture_to_stimulus`):
dark ink on light or light on dark, any size, margin and position. A sound goes
through the microphone's word finder (`sensors.words`), so a recording of several
words gives several stimuli. `cdz recall` and the Python API (`agent.api`) both read
their inputs here, so a file is seen exactly as the live agent would see it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sensors.card import picture_to_stimulus
from sensors.errors import FeatureError
from sensors.file_reading import decode_audio_file, decode_image_file
from sensors.image_features import composite_on_white, to_unit_grey
from sensors.sound_features import audio_to_stimulus
from sensors.words import words_in

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".pgm", ".pbm", ".ppm", ".pnm", ".tif", ".tiff", ".webp"}
AUDIO_SUFFIXES = {".wav"}


@dataclass(frozen=True)
class Percept:
    """One stimulus found in an input: its sense, the stimulus, and where in a sound it lies."""

    modality: str
    x: np.ndarray
    start_s: float | None = None  # a word's span in its recording (None for a picture)
    end_s: float | None = None


def modality_of(path: Path) -> str:
    """The sense a file is for, from its suffix."""
    suffix = path.suffix.lower()
    if suffix in IMAGE_SUFFIXES:
        return "visual"
    if suffix in AUDIO_SUFFIXES:
        return "audio"
    raise FeatureError(f"{path}: unknown file type {suffix or '(no suffix)'!r}; give an image "
                       f"({', '.join(sorted(IMAGE_SUFFIXES))}) or a .wav")


def picture(img: np.ndarray) -> Percept:
    """A picture as an array (HxW grey, or HxWx3/4 in OpenCV's BGR(A) order, any dtype) -> its stimulus."""
    return Percept("visual", picture_to_stimulus(to_unit_grey(composite_on_white(np.asarray(img)))))


def words(wave: np.ndarray, rate: int) -> list[Percept]:
    """Every word the microphone's segmenter finds in a recording, noise-gated as the microphone does it,
    one stimulus each.

    A recording in which it finds none (a click-free tone, a clip cut tight to the
    word) is taken whole, as one stimulus, as a dataset clip is."""
    found = words_in(wave, rate)
    if not found:
        mono = np.asarray(wave, np.float32)
        return [Percept("audio", audio_to_stimulus(mono, rate), 0.0, mono.shape[0] / rate)]
    return [Percept("audio", audio_to_stimulus(w.audio, rate), w.start_s, w.end_s) for w in found]


def read_file(path: str | Path) -> list[Percept]:
    """The stimuli of one file: a picture gives one, a recording one per word.

    Every problem with the file is a FeatureError whose one-line message starts
    with the path and says what is wrong."""
    path = Path(path)
    if path.is_dir():
        raise FeatureError(f"{path}: is a folder, not a file (give the images or wavs in it)")
    modality = modality_of(path)
    if not path.exists():
        raise FeatureError(f"{path}: " + ("broken link (its target does not exist)" if path.is_symlink()
                                          else "file does not exist"))
    try:
        if modality == "visual":
            return [picture(decode_image_file(path))]
        return words(*decode_audio_file(path))
    except FeatureError as exc:
        msg = str(exc)
        raise FeatureError(msg if msg.startswith(f"{path}: ") else f"{path}: {msg}") from None


def read_image_file(path: str | Path) -> np.ndarray:
    """The stimulus the camera would make of a picture file."""
    return read_file(path)[0].x
