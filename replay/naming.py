"""The names clusters are shown by: the digit (or reward class) each discovered class stands for.

A cluster's name is the majority label of the training stimuli it wins. Labels are
used for naming and scoring only, never for learning. A pack carries the names it
was made with (`names.json`), since it carries no training data to name them again.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from agent.core.brain import Brain
from agent.core.checkpoint import RunFolder
from agent.core.config import Config
from replay.pipeline import Encodings
from replay.senses import sense

NAMES_FILE = "names.json"


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


def save_names(path: Path, names: dict[str, dict[int, int]]) -> None:
    path.write_text(json.dumps({m: {str(c): n for c, n in per.items()} for m, per in names.items()}, indent=1))


def load_names(path: Path) -> dict[str, dict[int, int]]:
    """names.json, checked: senses to {cluster id: name}, all integers."""
    try:
        raw = json.loads(path.read_text())
        return {str(m): {int(c): int(n) for c, n in per.items()} for m, per in raw.items()}
    except (OSError, ValueError, TypeError, AttributeError) as exc:
        raise ValueError(f"{path}: not a names file ({type(exc).__name__}: {exc})") from None


def run_names(run: RunFolder) -> dict[str, dict[int, int]]:
    """A run's cluster names: its names file where it has one (a pack), else worked out from its
    training encodings and its latest brain."""
    if (run.path / NAMES_FILE).exists():
        return load_names(run.path / NAMES_FILE)
    from replay.pipeline import load_brain

    loaded = load_brain(run)
    return scoring_names(loaded.config, loaded.enc, loaded.brain)
