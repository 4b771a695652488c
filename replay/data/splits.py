"""The data a run's config selects: each modality's training and test split.

Each sense's reader is its declaration (`replay.data.senses`). Labels are returned for
the scorer and the teacher's pairing; the learner never reads them.
"""

from __future__ import annotations

import numpy as np

from agent.core.config import Config
from replay.data.datasets import Split
from replay.data.senses import sense


def load_splits(config: Config, split: str) -> dict[str, Split]:
    """The data of every modality for one split, filtered as the config says."""
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    return {m: sense(m).load(config, split) for m in config.modalities}


def load_splits_x(config: Config, split: str) -> dict[str, np.ndarray]:
    return {m: s.x for m, s in load_splits(config, split).items()}
