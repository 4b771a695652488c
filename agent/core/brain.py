"""The one-process brain: a cortex unit per modality and the CDZ unit, wired by direct calls.

This is the reference hosting of the learning rules (`Brain.step` reads as docs/LEARNING.md's
step order): the multi-process runtime hosts the very same units and only carries
their messages over the wire. The brain works on encodings; turning raw stimuli into encodings and modes
back into raw data is the autoencoders' job (see `agent.core.autoencoder`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from tqdm import tqdm

from agent.core.cdz import CDZ
from agent.core.checkpoint import CDZ_PART, REFINEMENTS, as_part, cortex_part, part
from agent.core.config import Config
from agent.core.cortex import Cortex
from agent.core.messages import Excitation, Stimulus, to_ns
from agent.core.state_check import check_arrays
from agent.core.stream import Stream, logged_partner
from agent.core.units import CDZUnit, CortexUnit


class Brain:
    """Cortices and CDZ of any number of modalities, wired by a synchronous router over their units."""

    def __init__(self, config: Config, dims: dict[str, int], epochs: dict[str, int]):
        self.config = config
        self.modalities = tuple(config.modalities)
        missing = [m for m in self.modalities if m not in dims or m not in epochs]
        if missing:
            raise ValueError(f"no encoding size / epoch length given for modalities {missing}")
        kernels = config.runtime.kernels
        self.cortices = {m: Cortex(m, dims[m], config.cortex, epochs[m], kernels) for m in self.modalities}
        self.cdz = CDZ(self.modalities, config.cdz, max_clusters=config.cortex.max_nodes, kernels=kernels)
        self.units = {m: CortexUnit(cortex) for m, cortex in self.cortices.items()}
        self.cdz_unit = CDZUnit(self.cdz)
        self.rejected = 0  # stimuli refused (NaN, wrong shape): counted, never fatal
        self.refinements = 0  # refinement phases applied (agent.core.refine); says which encoders fit the nodes

    def step(self, stim: Stimulus, z: np.ndarray, strength: float = 1.0) -> Excitation:
        """One stimulus through the brain, in docs/LEARNING.md's order; its excitation (cluster -1: rejected).

        The hub and the workers run these very units; there the bus carries what this passes by call."""
        return self._route(self.units[stim.modality].stimulus(stim, z, strength))  # steps 2-4: fire a cluster

    def _route(self, out: list) -> Excitation:
        for msg in out:  # cluster births and deaths reach the CDZ before the excitation that follows them
            for fb in self.cdz_unit.handle(msg):  # step 5: correlate with the other senses within B
                self.units[fb.modality].feedback(fb)  # step 6: those nodes move towards the chosen clusters
        return out[-1]  # step 7, recall, only reads: `recall`

    def learn(self, modality: str, z: np.ndarray, t: float, strength: float = 1.0) -> Excitation | None:
        """One stimulus (its encoding `z`, event time `t` in seconds) with learning on; None (and
        counted) if it is unusable."""
        unit = self.units.get(modality)
        if unit is None:
            raise KeyError(f"unknown modality {modality!r}; this brain has {self.modalities}")
        if not (math.isfinite(t) and math.isfinite(strength) and strength >= 0.0):
            self.rejected += 1
            return None
        exc = self._route(unit.encoded(z, to_ns(t), 0, strength, unit.cortex.growth_enabled))  # = step(Stimulus(...))
        if exc.cluster_id < 0:
            self.rejected += 1
            return None
        return exc

    def set_growth(self, enabled: bool) -> None:
        for cortex in self.cortices.values():
            cortex.growth_enabled = enabled

    # ------------------------------------------------------------------ reading (pure)
    def classify(self, modality: str, z: np.ndarray) -> np.ndarray:
        """Excited cluster id per encoding row, with learning off (changes nothing)."""
        return self.cortices[modality].assign(z)[1]

    def recall(self, modality: str, z: np.ndarray) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Excited clusters and, per other modality, the recalled cluster ids (-1: nothing)."""
        clusters = self.classify(modality, z)
        return clusters, self.cdz.recall_many(modality, clusters)

    # ------------------------------------------------------------------ checkpoint
    def state_dict(self) -> dict[str, np.ndarray]:
        state = as_part(CDZ_PART, self.cdz.state_dict())
        for m, cortex in self.cortices.items():
            state.update(as_part(cortex_part(m), cortex.state_dict()))
        state["rejected"] = np.array(self.rejected, np.int64)
        state[REFINEMENTS] = np.array(self.refinements, np.int64)
        return state

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        """Load a `state_dict`; every part is checked first, so a damaged one changes nothing."""
        cdz = part(state, CDZ_PART)
        own = {m: part(state, cortex_part(m)) for m in self.cortices}
        self.cdz.check_state(cdz)
        for m, cortex in self.cortices.items():
            cortex.check_state(own[m])
        check_arrays(state, {"rejected": ("i", ()), REFINEMENTS: ("i", ())}, "brain",
                     optional=frozenset({REFINEMENTS}))
        self.cdz.load_state_dict(cdz)
        for m, cortex in self.cortices.items():
            cortex.load_state_dict(own[m])
        self.rejected = int(state["rejected"])
        self.refinements = int(state[REFINEMENTS]) if REFINEMENTS in state else 0


@dataclass
class StreamLog:
    """What happened at each stimulus of a stream (for learning curves)."""

    cluster: np.ndarray  # (n,) excited cluster id, -1 if rejected
    recalled: np.ndarray  # (n,) cluster recalled in the next modality right after learning, -1 none


def learn_stream(brain: Brain, stream: Stream, encodings: dict[str, np.ndarray], start: int = 0,
                 stop: int | None = None, progress: bool = True, bar: tqdm | None = None) -> StreamLog:
    """Feed stimuli [start, stop) of the stream to the brain in event-time order.

    Growth stops for the last `growth_stop` share of the whole stream, so scoring
    never runs on half-trained nodes.
    """
    stop = len(stream) if stop is None else stop
    mods = stream.modalities
    growth_until = int(brain.config.cortex.growth_stop * len(stream))
    nxt = logged_partner(mods)
    cluster = np.full(stop - start, -1, np.int64)
    recalled = np.full(stop - start, -1, np.int64)
    t_arr, m_arr, i_arr = stream.t, stream.modality, stream.index
    brain.set_growth(start < growth_until)
    own_bar = bar is None
    if bar is None:
        bar = tqdm(total=stop - start, desc="stream", unit="stim", disable=not progress, mininterval=0.5)
    for j in range(start, stop):
        if j == growth_until:
            brain.set_growth(False)
        m = mods[m_arr[j]]
        exc = brain.learn(m, encodings[m][i_arr[j]], float(t_arr[j]))
        if exc is not None:
            cluster[j - start] = exc.cluster_id
            got = brain.cdz.recall_in(m, exc.cluster_id, nxt[m])
            recalled[j - start] = -1 if got is None else got
        if (j - start) % 4096 == 4095:
            bar.update(4096)
    bar.update((stop - start) % 4096)
    if own_bar:
        bar.close()
    return StreamLog(cluster, recalled)
