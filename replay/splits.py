"""The data a run's config selects: each modality's training and test split.

Labels are returned for the scorer and the teacher's pairing; the learner never
reads them.
"""

from __future__ import annotations

import numpy as np

from agent.config import Config
from replay.datasets import Split, load_modality


def train_filters(config: Config, modality: str) -> dict:
    """load_modality's filters for a modality's training split."""
    d = config.data
    kw: dict = {"digits": list(d.digits), "per_class": d.per_class}
    if modality == "audio" and d.speakers:
        kw["speakers"] = list(d.speakers)
    if modality == "audio" and d.exclude_speakers:
        kw["exclude_speakers"] = list(d.exclude_speakers)
    return kw


def load_splits(config: Config, split: str) -> dict[str, Split]:
    """The data of every modality for one split, filtered as the config says."""
    d = config.data
    out = {}
    for m in config.modalities:
        if split == "train":
            out[m] = load_modality(m, split, **train_filters(config, m))
            continue
        kw: dict = {"digits": list(d.digits), "per_class": d.test_per_class}
        if m == "audio" and d.speakers:
            kw["speakers"] = list(d.speakers)
        if m == "audio" and d.exclude_speakers:
            # held-out speakers were never heard: all of their recordings are test material
            kw["speakers"] = list(d.exclude_speakers)
            out[m] = _concat([load_modality(m, part, **kw) for part in ("train", "test")])
            continue
        out[m] = load_modality(m, split, **kw)
    return out


def _concat(parts: list[Split]) -> Split:
    speakers = None if parts[0].speakers is None else np.concatenate([p.speakers for p in parts])
    return Split(parts[0].modality, np.concatenate([p.x for p in parts]), np.concatenate([p.y for p in parts]),
                 tuple(n for p in parts for n in p.names), speakers)


def load_splits_x(config: Config, split: str) -> dict[str, np.ndarray]:
    return {m: s.x for m, s in load_splits(config, split).items()}
