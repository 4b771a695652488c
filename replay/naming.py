"""The names clusters are shown by: the digit (or reward class) each discovered class stands for.

A cluster's name is the majority label of the training stimuli it wins. Labels are
used for naming and scoring only, never for learning. A pack carries the names it
was made with (`names.json`), since it carries no training data to name them again.
"""

from __future__ import annotations

import numpy as np

from agent.core.brain import Brain
from agent.core.checkpoint import RunFolder
from agent.core.config import Config
from agent.pack import NAMES_FILE, load_names
from replay.pipeline import Encodings
from replay.data.senses import sense


def cluster_names(clusters: np.ndarray, labels: np.ndarray) -> dict[int, int]:
    """Scoring name of each cluster: the majority label of the stimuli exciting it."""
    names = {}
    for cid in np.unique(clusters):
        if cid >= 0:
            names[int(cid)] = int(np.bincount(labels[clusters == cid]).argmax())
    return names


def scoring_names(config: Config, enc: Encodings, brain: Brain) -> dict[str, dict[int, int]]:
    """Every sense's cluster names: the majority class (a digit, or a reward class) of the
    training stimuli each cluster wins."""
    return {m: cluster_names(brain.classify(m, enc.train[m]), sense(m).scored(config, enc.train_y[m]))
            for m in config.modalities}


def run_names(run: RunFolder) -> dict[str, dict[int, int]]:
    """A run's cluster names: its names file where it has one (a pack), else worked out from its
    training encodings and its latest brain."""
    if (run.path / NAMES_FILE).exists():
        return load_names(run.path / NAMES_FILE)
    from replay.pipeline import load_brain

    loaded = load_brain(run)
    return scoring_names(loaded.config, loaded.enc, loaded.brain)
