"""A stream: stimuli of several senses in event-time order, what the brain learns from.

The teacher (`replay.data.teacher`) makes one from the training sets; a recorded session
(`replay.pipeline.recorded_stream`) is read back as one. The learner reads the
modality, event time and row of each stimulus; the labels are for scoring only.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Stream:
    """Stimuli in event-time order. All arrays have one entry per stimulus."""

    modalities: tuple[str, ...]
    t: np.ndarray  # (n,) float64 event time, seconds
    modality: np.ndarray  # (n,) int64 index into `modalities`
    index: np.ndarray  # (n,) int64 row of that modality's training split
    event: np.ndarray  # (n,) int64 teaching event the stimulus belongs to
    label: np.ndarray  # (n,) int64 digit shown/said (scoring only)

    def __len__(self) -> int:
        return len(self.t)

    def count(self, modality: str) -> int:
        return int((self.modality == self.modalities.index(modality)).sum())


def logged_partner(modalities: tuple[str, ...] | list[str]) -> dict[str, str]:
    """For each sense, the sense whose recall the stream log keeps (the next one, cyclically:
    with two senses, the other one)."""
    return {m: modalities[(k + 1) % len(modalities)] for k, m in enumerate(modalities)}
