"""The agent as a Python object: load a trained agent, show it things, teach it, save it.

    from agent import Agent
    agent = Agent.load("runs/demo")               # a run folder or a pack
    r = agent.recall("seven.png")                 # also a numpy image or (wave, rate)
    r.sense, r.cluster, r.familiarity             # what it saw
    r.recalled["audio"].cluster, r.imagined["audio"]   # what it recalls and imagines
    agent.learn(image, (wave, rate))              # one paired event, online
    agent.save("runs/demo-more")

Inputs are taken as the sensors take the world (`sensors.files`): a picture through
the camera's ink finder, a recording through the microphone's word finder. The brain,
the encoders and the recall are the very code the runtime and `cdz recall` run.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Union

import numpy as np

from agent.core.autoencoder import Autoencoder, encode, load_autoencoder, save_autoencoder
from agent.core.brain import Brain
from agent.core.checkpoint import RunFolder, new_run
from agent.core.config import REWARD, Config
from agent.core.recollection import recollect
from agent.core.session_mean import session_for
from agent.core.storage import atomic_write_bytes
from agent.pack import NAMES_FILE, names_bytes, open_run
from replay.naming import run_names
from sensors.errors import FeatureError
from sensors.files import Percept, picture, read_file, words

Input = Union[str, Path, np.ndarray, tuple, float, int]  # a file, an image, (wave, rate), or a reward value
ASSOCIATE_WEIGHT = 0.05  # a recalled sense also lists the clusters connected with at least this weight
NOVEL_BELOW = 0.02  # familiarity under this: farther from its nearest node than 98% of the usual distances


@dataclass(frozen=True)
class Recalled:
    """The cluster one sense recalls, the digit (or reward class) it stands for, and every cluster
    connected with at least ASSOCIATE_WEIGHT, as (cluster, name, weight), strongest first."""

    cluster: int | None
    name: int | None
    associates: list[tuple[int, int | None, float]] = field(default_factory=list)


@dataclass(frozen=True)
class Recall:
    """What one stimulus excited, how familiar it was, and what it recalls and imagines in each other sense."""

    sense: str
    cluster: int
    name: int | None  # the digit (or reward class) the cluster stands for
    familiarity: float  # in [0, 1]; see `agent.core.cortex.Cortex.familiarity`
    stimulus: np.ndarray  # the stimulus as the agent saw it
    recalled: dict[str, Recalled]
    imagined: dict[str, np.ndarray | None]  # the recalled cluster's typical stimulus, decoded
    span: tuple[float, float] | None = None  # a word's (start_s, end_s) in its recording

    @property
    def novel(self) -> bool:
        """Farther from all it learned than nearly everything it learned was: not a known kind of thing."""
        return self.familiarity < NOVEL_BELOW


class Agent:
    """A trained agent: its settings, an autoencoder per sense, the brain, and the names of its clusters."""

    def __init__(self, config: Config, coders: dict[str, Autoencoder], brain: Brain,
                 names: dict[str, dict[int, int]]):
        self.config = config
        self.coders = coders
        self.brain = brain
        self.names = names
        self._usual: dict[str, tuple[int, np.ndarray]] = {}  # sense -> (cortex step, usual distances)
        # what it hears has the session's mean and spread traded for the training ones (agent.core.session_mean)
        self.sessions = {m: session_for(coder, config.sense(m)) for m, coder in coders.items()}

    # ------------------------------------------------------------------ loading and saving
    @classmethod
    def load(cls, path: str | Path) -> "Agent":
        """A run folder (its latest checkpoint) or a pack made by `cdz pack`."""
        run = open_run(path)
        config = run.config()
        with run.restoring() as (_step, state):
            stage = int(state.get("refinements", np.array(0)))
            coders = {m: load_autoencoder(run.fitting_encoder_path(m, stage)) for m in config.modalities}
            brain = Brain(config, {m: c.code_dim for m, c in coders.items()}, {m: 1 for m in config.modalities})
            brain.load_state_dict(state)
        return cls(config, coders, brain, run_names(run))

    def save(self, folder: str | Path, overwrite: bool = False) -> RunFolder:
        """Write the agent as it is now into a new run folder (settings, encoders, brain, names)."""
        with new_run(self.config, folder, overwrite) as run:
            for m, coder in self.coders.items():
                save_autoencoder(coder, run.encoder_path(m))
                save_autoencoder(coder, run.stage_encoder_path(m, self.brain.refinements))
            atomic_write_bytes(run.path / NAMES_FILE, names_bytes(self.names))
            run.save_checkpoint(self.stimuli_learned, self.brain.state_dict())
        return run

    @property
    def senses(self) -> tuple[str, ...]:
        return tuple(self.config.modalities)

    @property
    def stimuli_learned(self) -> int:
        return sum(c.step for c in self.brain.cortices.values())

    # ------------------------------------------------------------------ perceiving
    def perceive(self, what: Input) -> list[Percept]:
        """The stimuli in an input, as the sensors would make them: a file (picture or wav), an image
        array, a (wave, sample_rate) pair, or a number for the reward sense."""
        if isinstance(what, (str, Path)):
            found = read_file(what)
        elif isinstance(what, tuple):
            if len(what) != 2:
                raise FeatureError(f"a sound is given as (wave, sample_rate), got a tuple of {len(what)}")
            found = words(np.asarray(what[0]), what[1])
        elif isinstance(what, np.ndarray):
            found = [picture(what)]
        elif isinstance(what, (int, float)) and not isinstance(what, bool):
            if not math.isfinite(what):
                raise FeatureError(f"a reward must be finite, got {what}")
            found = [Percept(REWARD, np.array([[float(what)]], np.float32))]
        else:
            raise FeatureError(f"cannot perceive a {type(what).__name__}: give a file path, an image array, "
                               "(wave, sample_rate) or a reward value")
        for p in found:
            if p.modality not in self.senses:
                raise FeatureError(f"this agent has no {p.modality} sense (it has {', '.join(self.senses)})")
        return found

    # ------------------------------------------------------------------ recall and learning
    def recall(self, what: Input) -> Recall:
        """What one input excites and recalls (a recording with several words: use `recall_all`)."""
        found = self.recall_all(what)
        if len(found) != 1:
            raise FeatureError(f"the input holds {len(found)} words; use recall_all to recall each")
        return found[0]

    def recall_all(self, what: Input) -> list[Recall]:
        """One recall per stimulus in the input (each word of a recording). Changes nothing it learned;
        what it hears counts into its session's mean and spread (`new_session` starts afresh)."""
        return [self.recall_stimulus(p.modality, p.x, (p.start_s, p.end_s) if p.start_s is not None else None)
                for p in self.perceive(what)]

    def recall_stimulus(self, sense: str, x: np.ndarray, span: tuple[float, float] | None = None) -> Recall:
        """Recall for a stimulus already made (a 28x28 image in [0, 1], a 64x64 spectrogram, ...)."""
        x = self._heard(sense, x)
        r = recollect(self.brain, self.coders, sense, x)
        recalled = {}
        for target, cid in r.recalled.items():
            links = self.brain.cdz.associates(sense, r.cluster, target, ASSOCIATE_WEIGHT)
            recalled[target] = Recalled(cid if cid >= 0 else None, self._name(target, cid),
                                        [(c, self._name(target, c), w) for c, w in links])
        return Recall(sense, r.cluster, self._name(sense, r.cluster), self._familiarity(sense, r.encoding),
                      np.asarray(x, np.float32), recalled, dict(r.imagined), span)

    def new_session(self) -> None:
        """Another speaker or room from now on: forget the session's mean and spread."""
        for session in self.sessions.values():
            if session is not None:
                session.reset()

    def _heard(self, sense: str, x: np.ndarray) -> np.ndarray:
        """The stimulus with the session's mean and spread traded for the training ones (senses that keep one)."""
        session = self.sessions.get(sense)
        x = np.asarray(x, np.float32)
        if session is None or x.shape != session.reference.shape:  # a wrong shape is refused further on
            return x
        return session(x[None])[0]

    def _familiarity(self, sense: str, z: np.ndarray) -> float:
        """`Cortex.familiarity`, its reference distances kept until the cortex learns again."""
        cortex = self.brain.cortices[sense]
        step, usual = self._usual.get(sense, (-1, None))
        if step != cortex.step or usual is None:
            usual = cortex.usual_distances()
            self._usual[sense] = (cortex.step, usual)
        return cortex.familiarity(z, usual)

    def learn(self, *inputs: Input) -> list[int]:
        """One paired event, learned online: every input is sensed at the same moment (an image with
        the word heard with it). Returns the cluster each excited. Inputs must hold one stimulus each."""
        percepts = []
        for what in inputs:
            found = self.perceive(what)
            if len(found) != 1:
                raise FeatureError(f"an input of a paired event must hold one stimulus, this one holds {len(found)}")
            percepts.append(found[0])
        s = self.config.cdz
        t = (self.brain.cdz.t_max if math.isfinite(self.brain.cdz.t_max) else 0.0) + s.window_s + s.reorder_slack_s + 1.0
        clusters = []
        for p in percepts:  # after the window and slack have passed: no earlier event pairs with this one
            z = encode(self.coders[p.modality], self._heard(p.modality, p.x)[None])[0]
            exc = self.brain.learn(p.modality, z, t)
            clusters.append(exc.cluster_id if exc is not None else -1)
        return clusters

    def _name(self, sense: str, cluster: int | None) -> int | None:
        return None if cluster is None or cluster < 0 else self.names.get(sense, {}).get(int(cluster))

    def __repr__(self) -> str:
        sizes = ", ".join(f"{m}: {c.n_nodes} nodes / {len(c.alive_cluster_ids())} clusters"
                          for m, c in self.brain.cortices.items())
        return f"Agent({sizes}; {self.stimuli_learned:,} stimuli learned)"

