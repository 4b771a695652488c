"""Senses as declarations: what a sense is, where its data comes from, how it is scored.

A sense is declared once, in the manner of pylsl's `StreamInfo`: its name, the
shape of one stimulus, the reader of its training and test data, its nominal
rate in live use, how its stimuli may be augmented when an encoder is taught
(training rows in a refinement, lived stimuli in a sleep; none: not augmented)
and, when a digit is not what its clusters stand for, the class a digit label is
scored as. Everything else (the cortex, the CDZ's rows, the encoder, checkpoints,
the scores) follows from `config.modalities`, so adding a sense means declaring it
here (or in a test) and naming it in the config.

The encoder is the config's `[senses.<name>.encoder]` table; a sense without one
has no encoder (`arch = "identity"`: its stimulus is its encoding).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from agent.core.config import REWARD, Config
from agent.core.sleep import AugmentStimuli
from agent.core.teaching import Augment
from replay.data.augment import ImageAugmenter, SoundAugmenter, SpectrogramAugmenter
from replay.data.datasets import Split, list_fsdd_files, load_fsdd, load_mnist

Loader = Callable[[Config, str], Split]  # (config, "train" or "test") -> the split the config selects
TrainAugment = Callable[[Config, np.ndarray, bool], Augment | None]  # (config, training rows, from files) -> augmenter


@dataclass(frozen=True)
class SenseInfo:
    """One declared sense."""

    name: str
    shape: tuple[int, int]  # one stimulus, as its encoder reads it
    load: Loader
    rate_hz: float  # nominal stimuli per second in live use (`cdz bench pipeline` feeds each sense at it)
    classes: Callable[[Config, np.ndarray], np.ndarray] | None = None  # digit labels -> scored classes; None: digits
    train_augment: TrainAugment | None = None  # augmenter of its training rows when a refinement teaches it
    lived_augment: Callable[[], AugmentStimuli] | None = None  # augmenter of lived stimuli when a sleep teaches it

    def scored(self, config: Config, labels: np.ndarray) -> np.ndarray:
        """The classes its stimuli (labelled with the taught digit) are scored as."""
        return labels if self.classes is None else self.classes(config, labels)


SENSES: dict[str, SenseInfo] = {}


def declare(info: SenseInfo) -> SenseInfo:
    """Make a sense known by name; declaring a name twice with another declaration is an error."""
    old = SENSES.get(info.name)
    if old is not None and old != info:
        raise ValueError(f"a sense named {info.name!r} is already declared")
    SENSES[info.name] = info
    return info


def sense(name: str) -> SenseInfo:
    try:
        return SENSES[name]
    except KeyError:
        raise KeyError(f"no sense named {name!r} is declared; known: {sorted(SENSES)}") from None


# --------------------------------------------------------------------------- the built-in senses


def make_augmenters(config: Config, x_train: dict[str, np.ndarray], from_files: bool = True) -> dict[str, Augment]:
    """Seeded augmentation of each sense's training rows, for teaching (refinements): what each
    declaration gives. `from_files`: the rows are the data set's own, in order (not a recording)."""
    out: dict[str, Augment] = {}
    for m in config.modalities:
        info = SENSES.get(m)  # a sense this process has no declaration of is not augmented
        make = None if info is None else info.train_augment
        augment = None if make is None else make(config, x_train[m], from_files)
        if augment is not None:
            out[m] = augment
    return out


def lived_augmenters(modalities: tuple[str, ...]) -> dict[str, AugmentStimuli]:
    """Seeded augmentation of each sense's lived stimuli, for sleep: what each declaration gives."""
    return {m: make() for m in modalities if (make := getattr(SENSES.get(m), "lived_augment", None)) is not None}


def _tensor_augment(augmenter: Callable[[torch.Tensor, int], torch.Tensor]) -> AugmentStimuli:
    """An augmenter of tensors as one of numpy stimuli."""
    return lambda x, seed: augmenter(torch.from_numpy(np.ascontiguousarray(x)), seed)


def _digit_filters(config: Config) -> dict:
    """The filters every training split shares: the digits and how many of each."""
    d = config.data
    return {"digits": list(d.digits), "per_class": d.per_class}


def _fsdd_filters(config: Config) -> dict:
    """The training split's filters: digits, per class and the FSDD speakers."""
    d = config.data
    kw = _digit_filters(config)
    if d.speakers:
        kw["speakers"] = list(d.speakers)
    if d.exclude_speakers:
        kw["exclude_speakers"] = list(d.exclude_speakers)
    return kw


def _load_visual(config: Config, split: str) -> Split:
    if split == "train":
        return load_mnist(split, **_digit_filters(config))
    return load_mnist(split, digits=list(config.data.digits), per_class=config.data.test_per_class)


def _augment_images(config: Config, x: np.ndarray, from_files: bool) -> Augment:
    images = ImageAugmenter()

    def visual(rows: np.ndarray, seed: int) -> torch.Tensor:
        return torch.cat([images(torch.from_numpy(x[rows[i : i + 4096]]), seed + i) for i in range(0, len(rows), 4096)])

    return visual


def _load_audio(config: Config, split: str) -> Split:
    d = config.data
    if split == "train":
        return load_fsdd(split, **_fsdd_filters(config))
    kw: dict = {"digits": list(d.digits), "per_class": d.test_per_class}
    if d.speakers:
        kw["speakers"] = list(d.speakers)
    if d.exclude_speakers:  # held-out speakers were never heard: all of their recordings are test material
        kw["speakers"] = list(d.exclude_speakers)
        parts = [load_fsdd(part, **kw) for part in ("train", "test")]
        speakers = np.concatenate([p.speakers for p in parts])
        return Split("audio", np.concatenate([p.x for p in parts]), np.concatenate([p.y for p in parts]),
                     tuple(n for p in parts for n in p.names), speakers)
    return load_fsdd(split, **kw)


def _augment_sounds(config: Config, x: np.ndarray, from_files: bool) -> Augment | None:
    """Sounds are augmented as waveforms, so they need the FSDD files; a recording's are not augmented."""
    if not from_files:
        return None
    files = list_fsdd_files("train", **_fsdd_filters(config))
    if len(files) != len(x):
        raise RuntimeError("the FSDD files do not match the audio training split")
    return SoundAugmenter(files)


REWARD_ROWS = {"train": 100, "test": 20}  # reward stimuli per digit when data.per_class does not say


def _load_reward(config: Config, split: str) -> Split:
    """The rewards the teacher can give: per digit, its reward plus `teacher.reward_noise`
    gaussian noise, drawn from the run's seed. Labels are the digit that earned it."""
    d, t = config.data, config.teacher
    per = (d.per_class if split == "train" else d.test_per_class) or REWARD_ROWS[split]
    rng = np.random.default_rng([config.seed, 1 if split == "train" else 2])
    y = np.repeat(np.array(d.digits, np.int64), per)
    values = np.array(t.rewards, np.float64)[y] + t.reward_noise * rng.standard_normal(len(y))
    return Split(REWARD, values.astype(np.float32).reshape(-1, 1, 1), y,
                 tuple(f"reward/{split}/{i}" for i in range(len(y))))


def reward_classes(config: Config, labels: np.ndarray) -> np.ndarray:
    """A digit's reward class: the rank of its (noise-free) reward among the distinct rewards."""
    rewards = np.array(config.teacher.rewards, np.float64)
    values = np.unique(rewards)
    out = np.full(len(labels), -1, np.int64)
    ok = labels >= 0
    out[ok] = np.searchsorted(values, rewards[labels[ok]])
    return out


VISUAL = declare(SenseInfo("visual", (28, 28), _load_visual, rate_hz=30.0, train_augment=_augment_images,
                           lived_augment=lambda: _tensor_augment(ImageAugmenter())))
AUDIO = declare(SenseInfo("audio", (64, 64), _load_audio, rate_hz=2.0, train_augment=_augment_sounds,
                          lived_augment=lambda: _tensor_augment(SpectrogramAugmenter())))
REWARD_SENSE = declare(SenseInfo(REWARD, (1, 1), _load_reward, rate_hz=1.0, classes=reward_classes))
