"""Recall and imagination (docs/LEARNING.md rule 7), one path for the runtime's workers, `cdz think`,
`cdz recall` and the evaluation.

A stimulus excites a cluster of its sense; the CDZ recalls, for each other sense, the
cluster it is most strongly connected to; a recalled cluster is imagined as the position
of its mode node (its typical stimulus) through that sense's decoder. A thought is
such an imagined stimulus fed back as a stimulus of its own sense (`feed_back`), which
recalls the next sense in turn (`next_modality`).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from agent.core.autoencoder import Autoencoder, decode, encode
from agent.core.brain import Brain
from agent.core.cortex import Cortex
from agent.core.stream import logged_partner


def imagine(cortex: Cortex, model: Autoencoder, cluster_ids: Iterable[int]) -> dict[int, np.ndarray]:
    """Each cluster's decoded mode, as a float32 stimulus (clusters without a mode are left out)."""
    ids, positions = [], []
    for cid in cluster_ids:
        pos = cortex.mode_position(int(cid)) if cid >= 0 else None
        if pos is not None:
            ids.append(int(cid))
            positions.append(pos)
    if not ids:
        return {}
    return dict(zip(ids, decode(model, np.stack(positions)).astype(np.float32)))


@dataclass(frozen=True)
class Recollection:
    """What one stimulus excited, and what that recalls and imagines in each other sense."""

    modality: str
    cluster: int  # the cluster it excited (-1: none)
    recalled: dict[str, int]  # other sense -> the cluster recalled (-1: nothing)
    imagined: dict[str, np.ndarray | None]  # other sense -> the recalled cluster's decoded mode
    encoding: np.ndarray | None = None  # the stimulus's encoding (for familiarity)


def recollect(brain: Brain, models: dict[str, Autoencoder], modality: str, x: np.ndarray) -> Recollection:
    """One stimulus through encode, classify, recall and imagine, one row as a worker does it."""
    z = encode(models[modality], np.asarray(x, np.float32)[None])
    clusters, recalled = brain.recall(modality, z)
    got = {b: int(r[0]) for b, r in recalled.items()}
    imagined = {b: imagine(brain.cortices[b], models[b], [c]).get(c) for b, c in got.items()}
    return Recollection(modality, int(clusters[0]), got, imagined, z[0])


def next_modality(modalities: tuple[str, ...], modality: str) -> str:
    """The modality a thought in `modality` recalls (round robin, as the hub logs it)."""
    return logged_partner(modalities)[modality]


def feed_back(recon: np.ndarray, noise: float, rng: np.random.Generator) -> np.ndarray:
    """A reconstruction as the next stimulus: Gaussian noise (std `noise`) lets the chain wander."""
    x = np.asarray(recon, np.float32)
    if noise > 0:
        x = x + rng.normal(0.0, noise, x.shape).astype(np.float32)
    return np.clip(x, 0.0, 1.0).astype(np.float32)


def noise_stimulus(shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    """A spontaneous seed: uniform noise in the stimulus shape, no input behind it."""
    return rng.random(shape, dtype=np.float32)
