"""Every message of the agent, in one vocabulary: what the learning core emits is what the wire carries.

The core's messages are the docs/LEARNING.md steps made into data:

* `Stimulus`: a sense's raw input (an image, a spectrogram; or its encoding, in the one-process brain);
* `Excitation`: the cluster a stimulus fired (step 4), which the CDZ correlates (step 5);
* `Feedback`: the CDZ tells a sense which clusters its nodes should move towards (step 6);
* `ClusterChange`: a cortex's clusters born and deleted, which the CDZ mirrors;
* `Recall` and `Reconstruction`: a cluster recalled in another sense, and what it looks like (step 7).

The runtime adds its own: `Frame` (a camera preview), `Weights` (the CDZ matrix for viewers),
`Credit` (lossless flow), `Control` and `Stats`.

Every message carries the same envelope: `modality`, event time `t_ns` (integer
nanoseconds: a replay's stream time or a sensor's capture time), sequence number
`seq`, `source` (the sending process) and run generation `gen` (bumped on every
rewind, so older messages are ignored). The core fills `modality` and `t_ns`; a
process stamps the rest when it sends. `agent.runtime.wire` encodes these very objects;
nothing is translated on the way. Messages are built with keywords only
(`Excitation(modality="visual", t_ns=t, seq=s, cluster_id=c, node_id=n)`): a dozen fields
in a row are easy to swap unseen. Ids name nodes and clusters and are never
reused, so a message that arrives after its node or cluster is gone is stale,
not a hit on a newcomer.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

NS = 1_000_000_000  # nanoseconds per second


def to_ns(t: float) -> int:
    """Event time in seconds as the envelope's whole nanoseconds (replay times are whole ns already)."""
    return int(round(t * NS))


# ---------------------------------------------------------------------- the core's messages
@dataclass(frozen=True, slots=True, kw_only=True)
class Stimulus:
    """Sensor -> worker: one raw stimulus (an image or a spectrogram) to encode and learn."""

    KIND: ClassVar[str] = "stimulus"
    modality: str
    t_ns: int  # event time (capture time of live input; stream time of a replay)
    seq: int  # global sequence number of the source's stream
    data: np.ndarray = field(repr=False)
    source: str = ""
    gen: int = 0  # run generation: bumped on every rewind, older messages are ignored
    mseq: int = 0  # sequence number among this modality's stimuli (gap = loss)
    learn: bool = True  # False: only classify and recall (nothing changes)
    grow: bool = True  # node growth allowed (a replay stops it near the end)
    internal: bool = False  # a thought, not a sensation (stream of thought)
    depth: int = 0  # thought depth: 0 for real input
    near: int = -1  # replays: stimuli of other modalities within B of this one (-1: unknown)


@dataclass(frozen=True, slots=True, kw_only=True)
class Excitation:
    """Cluster `cluster_id` of `modality` fired because node `node_id` was nearest (-1: stimulus rejected)."""

    KIND: ClassVar[str] = "excite"
    modality: str
    t_ns: int
    seq: int
    cluster_id: int
    node_id: int
    strength: float = 1.0
    source: str = ""
    gen: int = 0
    learn: bool = True  # False: a pure query; the CDZ answers with recall only
    internal: bool = False  # the stimulus was a thought (its recalls are thoughts too)
    depth: int = 0
    relived: bool = False  # lived again after a sleep (agent.core.sleep): learned, but no recall and no latency

    @property
    def t(self) -> float:
        """Event time in seconds, as the CDZ's window reads it."""
        return self.t_ns / NS


@dataclass(frozen=True, slots=True, kw_only=True)
class Feedback:
    """CDZ -> cortex of `modality`: after excitation `seq`, these nodes should move towards these clusters.

    `certainties` are those of the CDZ connection rows that chose each cluster. In
    lossless mode the hub answers every sequence number, which is also the workers'
    go-ahead (`Credit` covers the sequence numbers that gave no feedback).
    """

    KIND: ClassVar[str] = "feedback"
    modality: str
    t_ns: int
    seq: int
    node_ids: tuple[int, ...] = ()
    cluster_ids: tuple[int, ...] = ()
    certainties: tuple[float, ...] = ()
    source: str = ""
    gen: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class ClusterChange:
    """Cortex -> CDZ: clusters created and deleted (by seeding, growth or pruning) just before excitation `seq`."""

    KIND: ClassVar[str] = "clusters"
    modality: str
    t_ns: int = 0
    seq: int = 0
    created: tuple[int, ...] = ()
    deleted: tuple[int, ...] = ()
    source: str = ""
    gen: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class Recall:
    """CDZ -> worker of `modality`: show what cluster `cluster_id` looks like (cue from another sense)."""

    KIND: ClassVar[str] = "recall"
    modality: str
    t_ns: int  # event time of the cue stimulus: latency is measured from it
    seq: int
    cluster_id: int
    cue_modality: str
    cue_cluster: int
    source: str = ""
    gen: int = 0
    internal: bool = False
    depth: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class Reconstruction:
    """Worker -> anyone: the decoded mode of a recalled cluster, in stimulus space."""

    KIND: ClassVar[str] = "recon"
    modality: str
    t_ns: int  # event time of the cue stimulus
    seq: int
    cluster_id: int
    cue_modality: str
    data: np.ndarray = field(repr=False)
    source: str = ""
    gen: int = 0
    internal: bool = False
    depth: int = 0


# ---------------------------------------------------------------------- the runtime's messages
@dataclass(frozen=True, slots=True, kw_only=True)
class Frame:
    """Camera -> viewers: a small preview of what the camera sees (uint8, HxW or HxWx3).

    Not a stimulus: nothing learns from it. The camera sends a few per second."""

    KIND: ClassVar[str] = "frame"
    modality: str
    t_ns: int
    seq: int
    data: np.ndarray = field(repr=False)
    source: str = ""
    gen: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class Weights:
    """Hub -> viewers: the CDZ matrix W[modality -> target] over live clusters (rows: `rows`
    cluster ids of `modality`, columns: `cols` cluster ids of `target`), now and then."""

    KIND: ClassVar[str] = "weights"
    modality: str
    t_ns: int
    seq: int
    target: str
    rows: tuple[int, ...]
    cols: tuple[int, ...]
    data: np.ndarray = field(repr=False)
    source: str = ""
    gen: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class Credit:
    """Hub -> player and workers (lossless flow): every stimulus below `seq` is learned and
    answered; `t_ns` is the event time of the last one. The player's credit, the workers' watermark."""

    KIND: ClassVar[str] = "credit"
    seq: int
    t_ns: int
    source: str = ""
    gen: int = 0
    modality: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class Control:
    """Supervisor <-> processes: hello, ready, go, rewind, stop, checkpoint, saved, sleep, reload.

    `args` holds flat scalars only (bool, int, finite float, short str).
    """

    KIND: ClassVar[str] = "control"
    command: str
    args: dict[str, Any] = field(default_factory=dict)
    source: str = ""
    gen: int = 0
    t_ns: int = 0
    seq: int = 0
    modality: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class Stats:
    """Every process, about once a second: rates, queue depths, drops, latencies."""

    KIND: ClassVar[str] = "stats"
    values: dict[str, Any] = field(default_factory=dict)
    source: str = ""
    gen: int = 0
    t_ns: int = 0
    seq: int = 0
    modality: str = ""


Message = (Stimulus | Excitation | Feedback | Recall | Reconstruction | ClusterChange | Frame | Weights | Credit
           | Control | Stats)
KINDS: dict[str, type] = {c.KIND: c for c in (Stimulus, Excitation, Feedback, Recall, Reconstruction, ClusterChange,
                                              Frame, Weights, Credit, Control, Stats)}
