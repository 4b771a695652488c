"""The messages the cortex and the CDZ exchange.

The brain is plain objects driven by messages: a cortex turns an encoding into an
`Excitation`, the CDZ turns excitations into `Feedback` and answers recalls, and
cluster births and deaths travel as `ClusterChange`. The one-process brain passes
them by call; the multi-process runtime will put the same objects on the wire.
Ids name nodes and clusters and are never reused, so a message that arrives after
its node or cluster is gone is recognised as stale instead of hitting a newcomer.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Excitation:
    """Cluster `cluster_id` of `modality` fired because node `node_id` was nearest."""

    modality: str
    cluster_id: int
    node_id: int
    strength: float
    t: float  # event time of the stimulus, seconds


@dataclass(frozen=True, slots=True)
class Feedback:
    """CDZ -> cortex: node `node_id` should belong more to cluster `cluster_id`."""

    modality: str
    node_id: int
    cluster_id: int
    certainty: float  # certainty of the CDZ connection row that chose the cluster


@dataclass(frozen=True, slots=True)
class ClusterChange:
    """Cortex -> CDZ: clusters created and deleted by seeding, growth or pruning."""

    modality: str
    created: tuple[int, ...] = ()
    deleted: tuple[int, ...] = ()
