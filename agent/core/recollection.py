"""Recall and imagination (docs/LEARNING.md rule 7), one path for the runtime's workers, `cdz think`,
`cdz recall` and the evaluation.

A stimulus excites a cluster of its sense; the CDZ recalls, for each other sense, the
cluster it is most strongly connected to; a recalled cluster is imagined as the position
of its mode node (its typical stimulus) through that sense's decoder. A thought is
such an imagined stimulus fed back as a stimulus of its own sense (`feed_back`), which
recalls the next sense in turn (`next_modality`).
"""

from __future__ import annotations

from collections import OrderedDict
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


class Imagination:
    """`imagine` for one cluster at a time, remembering what it decoded: a cluster whose mode node has
    not moved since is not decoded again. A live worker answers a recall for every stimulus of the
    other sense, while its own nodes move only with its own stimuli, so most recalls find the
    image already made; the decoder (a millisecond or two) leaves the path. The very bits `imagine`
    gives: the key is the node and its exact position, and a new model forgets everything."""

    def __init__(self, size: int = 256):
        self.size = size
        self.hits = 0
        self._images: OrderedDict[tuple[int, bytes], np.ndarray] = OrderedDict()
        self._model: Autoencoder | None = None

    def __call__(self, cortex: Cortex, model: Autoencoder, cluster_id: int) -> np.ndarray | None:
        """The cluster's decoded mode (read only: it may be handed out again), or None without a mode."""
        node = cortex.mode_node(cluster_id) if cluster_id >= 0 else None
        if node is None:
            return None
        if model is not self._model:
            self._images.clear()
            self._model = model
        pos = cortex.pos[cortex.node_slot[node]]
        key = (node, pos.tobytes())
        image = self._images.get(key)
        if image is not None:
            self._images.move_to_end(key)
            self.hits += 1
            return image
        image = decode(model, pos[None]).astype(np.float32)[0]
        image.flags.writeable = False
        self._images[key] = image
        if len(self._images) > self.size:
            self._images.popitem(last=False)
        return image


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
