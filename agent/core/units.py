"""The learning rules behind messages: a cortex unit and a CDZ unit, each a message in and messages out.

`agent.core.cortex` and `agent.core.cdz` hold the rules; a unit is how the rest of the agent
talks to them. The one-process brain routes the units' messages by call
(`agent.core.brain.Brain.step`); the runtime hosts the very same units behind the bus
(`agent.runtime.worker` a `CortexUnit`, `agent.runtime.hub` the `CDZUnit`). What the in-process
brain passes by call is what the wire carries, so both are the same agent.

What a unit emits carries the event time and sequence number of the stimulus that
caused it; the process that sends it stamps `source` and `gen` (`Service.stamp`).
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from agent.core.cdz import CDZ
from agent.core.cortex import Cortex, StimulusError
from agent.core.messages import ClusterChange, Excitation, Feedback, Stimulus


class CortexUnit:
    """One sense's cortex: an encoded stimulus in, its cluster changes and its excitation out; feedback in."""

    def __init__(self, cortex: Cortex):
        self.cortex = cortex
        self.modality = cortex.modality
        self.rejected = 0  # stimuli it could not use: counted, answered with cluster -1, never fatal
        self.last_error = ""  # why the last one was rejected

    def stimulus(self, stim: Stimulus, z: np.ndarray | None, strength: float = 1.0,
                 relived: bool = False) -> list[ClusterChange | Excitation]:
        """docs/LEARNING.md steps 2-4 for one stimulus and its encoding `z` (None: it could not be encoded).

        Learning: seed or move the nearest node and fire its strongest cluster. A query
        (`stim.learn` false) only classifies. Returns the cluster births and deaths this
        caused, which the CDZ must hear first, then the excitation; an unusable stimulus
        gives cluster -1 (the CDZ still hears of it, so a lossless run stays in step).
        """
        if z is None:
            self.rejected += 1
            self.last_error = f"{self.modality}: stimulus of shape {stim.data.shape} cannot be encoded"
            return [Excitation(modality=self.modality, t_ns=stim.t_ns, seq=stim.seq, cluster_id=-1, node_id=-1,
                               strength=strength, learn=stim.learn,
                               internal=stim.internal, depth=stim.depth, relived=relived)]
        return self.encoded(z, stim.t_ns, stim.seq, strength, stim.grow, stim.learn, stim.internal, stim.depth,
                            relived)

    def encoded(self, z: np.ndarray, t_ns: int, seq: int = 0, strength: float = 1.0, grow: bool = True,
                learn: bool = True, internal: bool = False, depth: int = 0,
                relived: bool = False) -> list[ClusterChange | Excitation]:
        """`stimulus` given the envelope's fields instead of a `Stimulus` (the one-process brain's fast path)."""
        cortex = self.cortex
        cluster = node = -1
        try:
            if learn:
                cortex.growth_enabled = grow
                cluster, node = cortex.fire(z)
            else:
                if cortex.n_nodes == 0:
                    raise StimulusError(f"{self.modality}: no nodes yet, nothing to classify a query against")
                nodes, clusters = cortex.assign(np.asarray(z)[None])
                cluster, node = int(clusters[0]), int(nodes[0])
        except StimulusError as e:
            self.rejected += 1
            self.last_error = str(e)
        exc = Excitation(modality=self.modality, t_ns=t_ns, seq=seq, cluster_id=cluster, node_id=node,
                         strength=strength, learn=learn, internal=internal, depth=depth, relived=relived)
        if cortex.has_changes:
            return [replace(c, t_ns=t_ns, seq=seq) for c in cortex.drain_changes()] + [exc]
        return [exc]

    def feedback(self, fb: Feedback, step: int | None = None, z_at=None) -> None:
        """docs/LEARNING.md step 6: move each named node's cluster links towards the cluster the CDZ chose.

        `step` and `z_at(node)` are for feedback applied after later stimuli were learned
        (an encoder worker running ahead of the hub): see `Cortex.feedback`."""
        apply = self.cortex.feedback
        if z_at is None and step is None:
            for node, cluster, certainty in zip(fb.node_ids, fb.cluster_ids, fb.certainties):
                apply(node, cluster, certainty)
            return
        for node, cluster, certainty in zip(fb.node_ids, fb.cluster_ids, fb.certainties):
            apply(node, cluster, certainty, step=step, z=None if z_at is None else z_at(node))


class CDZUnit:
    """The CDZ: excitations and cluster changes in, feedback out (docs/LEARNING.md steps 5 and 6)."""

    def __init__(self, cdz: CDZ):
        self.cdz = cdz
        self.rejected = 0  # excitations of rejected stimuli (cluster -1) heard

    def handle(self, msg: Excitation | ClusterChange) -> list[Feedback]:
        """A cluster change updates the CDZ's rows; a learned excitation is correlated within B."""
        if msg.__class__ is Excitation and msg.cluster_id >= 0 and msg.learn:  # nearly every message
            return self.cdz.excite(msg)
        if isinstance(msg, ClusterChange):
            self.cdz.apply(msg)
        elif msg.cluster_id < 0:
            self.rejected += 1
        return []  # changes, rejections and queries (recall only) teach no node

    def recall(self, exc: Excitation) -> dict[str, int | None]:
        """docs/LEARNING.md step 7: the cluster the excitation's cluster recalls in every other sense."""
        return self.cdz.recall(exc.modality, exc.cluster_id)
