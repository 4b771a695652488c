"""One modality's node and cluster layer (docs/LEARNING.md, steps 2-4, 6 and maintenance).

Nodes are points in encoding space (like a growing neural gas); each node links
to clusters of its modality with weights that sum to 1, and its strongest link is
its class. Clusters never see encodings: they learn only through CDZ feedback,
which is how classes form without labels.

All state lives in fixed-capacity arrays indexed by *slot* (grown by doubling,
never per stimulus); `node_id`/`cluster_id` name the occupant of a slot and are
never reused, so late messages about deleted nodes/clusters are detected.
"""

from __future__ import annotations

from dataclasses import dataclass

import heapq
import math

import numpy as np

from agent.core.config import CortexSettings
from agent.core.kernels import Kernels
from agent.core.messages import ClusterChange, Excitation, to_ns
from agent.core.state_check import StateError, check_arrays, check_ids, check_range

_START_CAPACITY = 512


class StimulusError(ValueError):
    """An encoding that cannot be learned (wrong shape, NaN, inf)."""


@dataclass
class CortexCounters:
    """What happened, for logs and stats (never needed for correctness)."""

    stimuli: int = 0
    feedback: int = 0
    stale_feedback: int = 0
    splits: int = 0
    pruned_nodes: int = 0
    pruned_clusters: int = 0


class Cortex:
    """Nodes and clusters of one modality, learned online one stimulus at a time."""

    def __init__(self, modality: str, dim: int, settings: CortexSettings, epoch: int, kernels: str = "numba"):
        if epoch <= 0:
            raise ValueError("epoch (stimuli per pass, the seed's T) must be positive")
        self.modality = modality
        self.dim = dim
        self.settings = settings
        self.kernels = Kernels(kernels)  # the per-stimulus arithmetic (agent.core.kernels)
        self._periods_of: tuple = ()  # (epoch, prune_every, grow_every) that `_periods` was worked out for
        self._periods = (1, 1)  # pruning and growth periods in stimuli
        self.epoch = epoch
        self.growth_enabled = True
        self.step = 0  # stimuli learned so far
        self.counters = CortexCounters()
        self.next_node_id = 0
        self.next_cluster_id = 0
        self.n_hi = 0  # slots >= n_hi were never used: scans stop there
        self.c_hi = 0
        self._alloc(_START_CAPACITY, _START_CAPACITY)
        self.node_slot: dict[int, int] = {}
        self.cluster_slot: dict[int, int] = {}
        self._free_nodes: list[int] = []
        self._free_clusters: list[int] = []
        # (node slot) -> {cluster slot: [sum of encodings (dim), count]}: what each
        # node received while fed back towards each cluster since the last growth round.
        self.fb_stats: dict[int, dict[int, np.ndarray]] = {}
        self._changes: list[ClusterChange] = []

    # ------------------------------------------------------------------ storage
    def _alloc(self, cap_n: int, cap_c: int) -> None:
        d = self.dim
        self.pos = np.zeros((cap_n, d), np.float32)  # (cap_n, d) node positions
        self.pos_sq = np.full(cap_n, np.inf, np.float32)  # |pos|^2; inf marks free slots
        self.last_z = np.zeros((cap_n, d), np.float32)  # encoding that last excited each node
        self.node_id = np.full(cap_n, -1, np.int64)
        self.node_last = np.zeros(cap_n, np.int64)  # step of last excitation or feedback
        self.node_feedbacks = np.zeros(cap_n, np.int64)  # the node's age for certainty
        self.link = np.zeros((cap_n, cap_c), np.float32)  # node -> cluster, rows sum to 1
        self.cluster_id = np.full(cap_c, -1, np.int64)
        self.cluster_last = np.zeros(cap_c, np.int64)
        self.mode_link = np.zeros((cap_c, cap_n), np.float32)  # cluster -> node, rows sum to 1

    def _grow_capacity(self, nodes: bool) -> None:
        old = {k: getattr(self, k) for k in ("pos", "pos_sq", "last_z", "node_id", "node_last",
                                             "node_feedbacks", "link", "cluster_id",
                                             "cluster_last", "mode_link")}
        cap_n, cap_c = old["link"].shape
        self._alloc(cap_n * 2 if nodes else cap_n, cap_c if nodes else cap_c * 2)
        for name, arr in old.items():
            getattr(self, name)[tuple(slice(0, s) for s in arr.shape)] = arr

    @property
    def capacity(self) -> tuple[int, int]:
        return self.link.shape  # type: ignore[return-value]

    @property
    def n_nodes(self) -> int:
        return len(self.node_slot)

    @property
    def n_clusters(self) -> int:
        return len(self.cluster_slot)

    def _new_node(self, at: np.ndarray) -> int:
        if not self._free_nodes and self.n_hi == self.capacity[0]:
            self._grow_capacity(nodes=True)
        n = heapq.heappop(self._free_nodes) if self._free_nodes else self.n_hi
        self.n_hi = max(self.n_hi, n + 1)
        self.pos[n] = at  # a copy: moving the node never touches the caller's data
        self.pos_sq[n] = float(at @ at)
        self.last_z[n] = at
        self.node_id[n] = self.next_node_id
        self.node_slot[self.next_node_id] = n
        self.next_node_id += 1
        self.node_last[n] = self.step
        self.node_feedbacks[n] = 0
        return n

    def _new_cluster(self) -> int:
        if not self._free_clusters and self.c_hi == self.capacity[1]:
            self._grow_capacity(nodes=False)
        c = heapq.heappop(self._free_clusters) if self._free_clusters else self.c_hi
        self.c_hi = max(self.c_hi, c + 1)
        self.cluster_id[c] = self.next_cluster_id
        self.cluster_slot[self.next_cluster_id] = c
        self.next_cluster_id += 1
        self.cluster_last[c] = self.step
        return c

    def _node_with_own_cluster(self, at: np.ndarray) -> tuple[int, int]:
        n, c = self._new_node(at), self._new_cluster()
        self.link[n, c] = 1.0
        self.mode_link[c, n] = 1.0
        return n, c

    # ------------------------------------------------------------------ learning
    def check(self, z: np.ndarray) -> np.ndarray:
        """The encoding as float32 (dim,), or StimulusError saying what is wrong."""
        z = self._shaped(z)
        if not np.isfinite(z).all():
            raise self._not_finite()
        return z

    def _shaped(self, z: np.ndarray) -> np.ndarray:
        """`check` without the finiteness test (the fire kernel makes that one itself)."""
        if type(z) is not np.ndarray or z.dtype != np.float32:
            z = np.asarray(z, dtype=np.float32)
        if z.shape != (self.dim,):
            raise StimulusError(f"{self.modality}: encoding has shape {z.shape}, expected ({self.dim},)")
        return z

    def _not_finite(self) -> StimulusError:
        return StimulusError(f"{self.modality}: encoding contains NaN or inf")

    def excite(self, z: np.ndarray, t: float, strength: float = 1.0) -> Excitation:
        """Learn one stimulus at event time `t` (seconds): its excitation (see `fire`)."""
        if not (math.isfinite(t) and math.isfinite(strength) and strength >= 0.0):
            raise StimulusError(f"{self.modality}: event time {t!r} and strength {strength!r} must be finite, "
                                "strength >= 0")
        cluster_id, node_id = self.fire(z)
        return Excitation(modality=self.modality, t_ns=to_ns(t), seq=0, cluster_id=cluster_id, node_id=node_id,
                          strength=strength)

    def fire(self, z: np.ndarray) -> tuple[int, int]:
        """Learn one stimulus (docs/LEARNING.md steps 2-4): seed or move the nearest node, fire its strongest
        cluster. Returns (cluster id, node id); StimulusError for an encoding it cannot use."""
        s = self.settings
        if self.next_node_id < s.initial_nodes:  # the seeding phase: the first stimuli become nodes
            z = self.check(z)
            n, c = self._node_with_own_cluster(z)
            self._changes.append(ClusterChange(modality=self.modality, created=(int(self.cluster_id[c]),)))
            self.last_z[n] = z
            self.node_last[n] = self.step
            self.cluster_last[c] = self.step
        else:  # move the nearest node, fire its strongest cluster, stamp both
            n, c = self.kernels.fire(self.pos, self.pos_sq, self.link, self.mode_link, self.last_z, self.node_last,
                                     self.cluster_last, self._shaped(z), self.n_hi, self.c_hi, self.step, s.node_lr,
                                     s.cluster_node_lr)
            if n < 0:
                raise self._not_finite()
        self.step += 1
        self.counters.stimuli += 1
        fired = int(self.cluster_id[c]), int(self.node_id[n])
        self._maybe_maintain()
        return fired

    def peek_node(self, z: np.ndarray) -> int | None:
        """Id of the node the next `excite(z)` moves (None: it will seed a new node); changes nothing.

        With `maintenance_due`, this tells an encoder worker which nodes a stimulus
        touches, so it can learn it before the hub's feedback on other nodes arrives.
        """
        if self.next_node_id < self.settings.initial_nodes:
            return None
        return int(self.node_id[self._nearest(self.check(z))])

    def link_margin(self, node_id: int) -> float:
        """How far the node's strongest cluster link leads the runner-up (rows sum to 1).

        One feedback adds at most 4 * feedback_lr to a link before renormalising, so
        fewer than margin / (4 * feedback_lr) feedbacks cannot change which cluster
        the node excites.
        """
        row = self.link[self.node_slot[node_id], : self.c_hi]
        if row.size < 2:
            return float(row.max()) if row.size else 0.0
        top2 = np.partition(row, row.size - 2)[-2:]
        return float(top2[1] - top2[0])

    def next_feedback_bound(self, node_id: int) -> float:
        """The most the node's next feedback can add to one of its cluster links, as the node stands
        now: `feedback_lr * (1 + node certainty * connection certainty)^2` with the connection's
        certainty at its largest, 1. A young or unsure node gets far less than 4 * feedback_lr."""
        return self._feedback_step(self.node_slot[node_id], 1.0)

    def _feedback_step(self, n: int, connection_certainty: float) -> float:
        """What one feedback adds to slot n's link before the row is renormalised (docs/LEARNING.md step 6)."""
        s = self.settings
        return self.kernels.feedback_step(self.link, self.node_feedbacks, n, self.c_hi, s.feedback_lr,
                                          float(connection_certainty), s.age_factor)

    @property
    def maintenance_due(self) -> bool:
        """Whether the next stimulus ends with a pruning or growth round (they read every node)."""
        s = self.settings
        nxt = self.step + 1
        return nxt % self._period(s.prune_every) == 0 or (self.growth_enabled and nxt % self._period(s.grow_every) == 0)

    def _nearest(self, z: np.ndarray) -> int:
        return int(self.kernels.nearest(self.pos, self.pos_sq, z, self.n_hi))

    def feedback(self, node_id: int, cluster_id: int, connection_certainty: float, step: int | None = None,
                 z: np.ndarray | None = None) -> bool:
        """CDZ feedback: node `node_id` should belong more to `cluster_id` (docs/LEARNING.md step 6).

        `step` is the stimulus count the feedback belongs to when it is applied after later
        stimuli were already learned (an encoder worker running ahead of the hub); the
        last-use stamps then take the later of the two, exactly as in arrival order; `z` is
        then the encoding that excited the node before those later stimuli.
        """
        n = self.node_slot.get(node_id)
        c = self.cluster_slot.get(cluster_id)
        if n is None or c is None or not 0.0 <= connection_certainty <= 1.0:  # stale or malformed
            self.counters.stale_feedback += 1
            return False
        per_node = self.fb_stats.get(n)
        if per_node is None:
            per_node = self.fb_stats[n] = {}
        acc = per_node.get(c)  # what the node received while fed back towards c: [sum of encodings, count]
        if acc is None:
            acc = per_node[c] = np.zeros(self.dim + 1, np.float64)
        s = self.settings
        self.kernels.feedback(self.link, self.node_feedbacks, self.node_last, self.cluster_last, acc,
                              self.last_z[n] if z is None else z, n, c, self.c_hi, self.step if step is None else step,
                              s.feedback_lr, float(connection_certainty), s.age_factor)
        self.counters.feedback += 1
        return True

    @property
    def has_changes(self) -> bool:
        """Whether cluster births or deaths wait to be drained (cheap: checked per stimulus)."""
        return bool(self._changes)

    def drain_changes(self) -> list[ClusterChange]:
        """Cluster births and deaths since the last call, for the CDZ."""
        out, self._changes = self._changes, []
        return out

    # ------------------------------------------------------------------ maintenance
    def _period(self, frac: float) -> int:
        return max(1, int(round(frac * self.epoch)))

    def _maybe_maintain(self) -> None:
        s = self.settings
        key = (self.epoch, s.prune_every, s.grow_every)
        if key != self._periods_of:  # the periods, worked out again only when epoch or settings change
            self._periods_of, self._periods = key, (self._period(s.prune_every), self._period(s.grow_every))
        prune, grow = self._periods
        if self.step % prune == 0:
            self.prune_()
        if self.growth_enabled and self.step % grow == 0:
            self.grow_()

    def prune_(self) -> tuple[int, int]:
        """Delete nodes and clusters unused for too long; returns (nodes, clusters) deleted."""
        s = self.settings
        c_alive = self.cluster_id[: self.c_hi] >= 0
        stale_c = np.flatnonzero(c_alive & (self.step - self.cluster_last[: self.c_hi] > s.prune_clusters_after * self.epoch))
        if stale_c.size:
            self._delete_clusters(stale_c)
        n_alive = self.node_id[: self.n_hi] >= 0
        orphan = self.link[: self.n_hi, : self.c_hi].sum(axis=1) <= 0
        stale_n = np.flatnonzero(n_alive & ((self.step - self.node_last[: self.n_hi] > s.prune_nodes_after * self.epoch) | orphan))
        if stale_n.size:
            self._delete_nodes(stale_n)
        self.counters.pruned_nodes += int(stale_n.size)
        self.counters.pruned_clusters += int(stale_c.size)
        return int(stale_n.size), int(stale_c.size)

    def _delete_clusters(self, slots: np.ndarray) -> None:
        ids = tuple(int(i) for i in self.cluster_id[slots])
        for cid in ids:
            del self.cluster_slot[cid]
        self.cluster_id[slots] = -1
        self.mode_link[slots] = 0.0
        drop_columns_(self.link[: self.n_hi, : self.c_hi], slots)
        dead = set(int(c) for c in slots)
        for per_node in self.fb_stats.values():
            for c in dead.intersection(per_node):
                del per_node[c]
        for c in slots:
            heapq.heappush(self._free_clusters, int(c))
        self._changes.append(ClusterChange(modality=self.modality, deleted=ids))

    def _delete_nodes(self, slots: np.ndarray) -> None:
        for nid in self.node_id[slots]:
            del self.node_slot[int(nid)]
        self.node_id[slots] = -1
        self.pos[slots] = 0.0
        self.pos_sq[slots] = np.inf
        self.link[slots] = 0.0
        drop_columns_(self.mode_link[: self.c_hi, : self.n_hi], slots)
        for n in slots:
            self.fb_stats.pop(int(n), None)
        for n in slots:
            heapq.heappush(self._free_nodes, int(n))

    def grow_(self) -> int:
        """Split ambiguous nodes at the means of what was fed back towards each cluster.

        A node that is mature, still used and ambiguous is replaced by one new node
        (with a new cluster) per cluster it was pushed towards more than a few times
        since the last round; this refines class borders. Returns the number of splits.
        """
        s = self.settings
        max_splits = max(int(s.split_per_round_frac * self.epoch), 5)
        stats, self.fb_stats = self.fb_stats, {}
        if self.n_nodes >= s.max_nodes or not stats:
            return 0
        hi = self.n_hi
        recent = self.step - self.node_last[:hi] <= self._period(s.grow_every)
        ambiguity = 1.0 - self.link[:hi, : self.c_hi].max(axis=1)
        ok = (self.node_id[:hi] >= 0) & (self.node_feedbacks[:hi] >= s.mature_feedbacks) & recent
        ok &= ambiguity > s.split_threshold
        candidates = np.flatnonzero(ok)
        candidates = candidates[np.argsort(-ambiguity[candidates], kind="stable")]
        splits = 0
        created: list[int] = []
        for n in candidates:  # maintenance, not the per-stimulus path
            groups = [(c, acc) for c, acc in stats.get(int(n), {}).items() if acc[self.dim] > s.split_min_samples]
            if len(groups) < 2 or self.n_nodes + len(groups) - 1 > s.max_nodes:
                continue
            for c_fed, acc in groups:
                mean = (acc[: self.dim] / acc[self.dim]).astype(np.float32)
                if s.split_children == "inherit" and self.cluster_id[c_fed] >= 0:
                    child = self._new_node(mean)
                    self.link[child, c_fed] = 1.0
                else:
                    _, c = self._node_with_own_cluster(mean)
                    created.append(int(self.cluster_id[c]))
            self._delete_nodes(np.array([n]))
            splits += 1
            if splits >= max_splits or self.n_nodes >= s.max_nodes:
                break
        if created:
            self._changes.append(ClusterChange(modality=self.modality, created=tuple(created)))
        self.counters.splits += splits
        return splits

    def split_cluster(self, cluster_id: int, node_ids: np.ndarray) -> int:
        """Move `node_ids` out of cluster `cluster_id` into a new cluster; returns its id.

        Each moved node's link to the old cluster becomes its link to the new one, and
        the old cluster's mode links to those nodes move with them, so both halves keep
        their history (certainty, modes). Used by the merge rule (`agent.core.merges`).
        """
        old = self.cluster_slot[int(cluster_id)]
        slots = np.array([self.node_slot[int(n)] for n in node_ids], np.int64)
        new = self._new_cluster()
        self.cluster_last[new] = self.cluster_last[old]
        self.link[slots, new] = self.link[slots, old]
        self.link[slots, old] = 0.0
        self.mode_link[new, slots] = self.mode_link[old, slots]
        self.mode_link[old, slots] = 0.0
        for c in (old, new):
            row = self.mode_link[c, : self.n_hi]
            total = row.sum()
            if total > 0:
                row /= total
        self._changes.append(ClusterChange(modality=self.modality, created=(int(self.cluster_id[new]),)))
        return int(self.cluster_id[new])

    def relocate(self, positions: np.ndarray) -> None:
        """Give every live node a new position (rows of `positions` by slot, (n_hi, dim)).

        After the encoder changes (`agent.core.teaching`) the nodes follow their stimuli into
        the new encoding space; ids, links and ages stay. What nodes received for growth
        was measured in the old space, so it is forgotten.
        """
        alive = self.node_id[: self.n_hi] >= 0
        pos = np.asarray(positions, np.float32)[: self.n_hi]
        if pos.shape != (self.n_hi, self.dim) or not np.isfinite(pos[alive]).all():
            raise ValueError(f"{self.modality}: relocate needs finite positions of shape ({self.n_hi}, {self.dim})")
        self.pos[: self.n_hi][alive] = pos[alive]
        self.pos_sq[: self.n_hi][alive] = np.einsum("ij,ij->i", pos[alive], pos[alive])
        self.last_z[: self.n_hi][alive] = pos[alive]
        self.fb_stats = {}

    # ------------------------------------------------------------------ reading (pure)
    def assign(self, z: np.ndarray, chunk: int = 4096) -> tuple[np.ndarray, np.ndarray]:
        """Nearest node id and its strongest cluster id for each row of z (n, dim). Changes nothing."""
        z = np.asarray(z, dtype=np.float32)
        if z.ndim != 2 or z.shape[1] != self.dim:
            raise StimulusError(f"{self.modality}: encodings have shape {z.shape}, expected (n, {self.dim})")
        if self.n_nodes == 0:
            raise RuntimeError(f"{self.modality}: the cortex has no nodes yet")
        hi, chi = self.n_hi, self.c_hi
        nodes = np.empty(len(z), np.int64)
        for i in range(0, len(z), chunk):
            part = z[i : i + chunk]
            d = self.pos_sq[:hi][None, :] - 2.0 * (part @ self.pos[:hi].T)  # (chunk, hi)
            nodes[i : i + chunk] = d.argmin(axis=1)
        bad = ~np.isfinite(z).all(axis=1)
        clusters = self.link[nodes, :chi].argmax(axis=1)
        node_ids = self.node_id[nodes].copy()
        cluster_ids = self.cluster_id[clusters].copy()
        node_ids[bad] = -1
        cluster_ids[bad] = -1
        return node_ids, cluster_ids

    def usual_distances(self) -> np.ndarray:
        """How far a stimulus of a known kind lies from the nearest node it did not make: for every node,
        the distance from the encoding that last excited it to the nearest *other* node, sorted.

        A node sits on its own stimuli (the audio nodes of a small training set nearly on each
        one), so the distance to the node itself would make every new stimulus look
        strange; leaving the node out asks how far a new stimulus of that kind would be
        from what else was learned. Nodes that have not fired since they were placed or
        relocated (their last stimulus is their position) hold no sample. Changes nothing.
        """
        hi = self.n_hi
        alive = np.flatnonzero(self.node_id[:hi] >= 0)
        if alive.size < 2:
            return np.zeros(0, np.float32)
        last, pos = self.last_z[alive], self.pos[alive]
        fired = np.any(last != pos, axis=1)
        d = self.pos_sq[alive][None, :] - 2.0 * (last[fired] @ pos.T) + np.einsum("ij,ij->i", last[fired], last[fired])[:, None]
        d[np.arange(d.shape[0]), np.flatnonzero(fired)] = np.inf  # not the node itself
        return np.sort(np.sqrt(np.maximum(d.min(axis=1), 0.0)))

    def familiarity(self, z: np.ndarray, usual: np.ndarray | None = None) -> float:
        """How familiar an encoding is, in [0, 1]: the share of `usual_distances` (pass them in to reuse
        them) at least as large as the distance from `z` to its nearest node.

        A stimulus of a known kind lands among those distances (a typical one near 0.5);
        something novel lies farther from every node than nearly all of them (near 0).
        Changes nothing.
        """
        z = self.check(z)
        if self.n_nodes == 0:
            raise RuntimeError(f"{self.modality}: the cortex has no nodes yet")
        usual = self.usual_distances() if usual is None else usual
        if usual.size == 0:
            return 0.0
        d = float(np.linalg.norm(self.pos[self._nearest(z)] - z))
        return float(1.0 - np.searchsorted(usual, d, side="left") / usual.size)

    def alive_cluster_ids(self) -> np.ndarray:
        return np.sort(np.fromiter(self.cluster_slot.keys(), np.int64, len(self.cluster_slot)))

    def mode_node(self, cluster_id: int) -> int | None:
        """The node a cluster is most strongly linked to (its typical stimulus), or None."""
        c = self.cluster_slot.get(int(cluster_id))
        if c is None:
            return None
        row = self.mode_link[c, : self.n_hi]
        if row.max() <= 0:  # every node it knew is gone: fall back to its strongest member
            col = self.link[: self.n_hi, c]
            if col.max() <= 0:
                return None
            return int(self.node_id[int(col.argmax())])
        return int(self.node_id[int(row.argmax())])

    def mode_position(self, cluster_id: int) -> np.ndarray | None:
        nid = self.mode_node(cluster_id)
        return None if nid is None else self.pos[self.node_slot[nid]].copy()

    # ------------------------------------------------------------------ checkpoint
    def state_dict(self) -> dict[str, np.ndarray]:
        """Everything needed to rebuild this cortex, as plain arrays (saved with np.savez)."""
        hi, chi = self.n_hi, self.c_hi
        fb_keys, fb_vals = [], []
        for n, per_node in self.fb_stats.items():
            for c, acc in per_node.items():
                fb_keys.append((n, c))
                fb_vals.append(acc)
        state = {
            "pos": self.pos[:hi], "pos_sq": self.pos_sq[:hi], "last_z": self.last_z[:hi], "node_id": self.node_id[:hi],
            "node_last": self.node_last[:hi], "node_feedbacks": self.node_feedbacks[:hi],
            "link": self.link[:hi, :chi], "cluster_id": self.cluster_id[:chi],
            "cluster_last": self.cluster_last[:chi], "mode_link": self.mode_link[:chi, :hi],
            "fb_keys": np.array(fb_keys, np.int64).reshape(-1, 2),
            "fb_vals": np.array(fb_vals, np.float64).reshape(-1, self.dim + 1),
            "scalars": np.array([self.step, self.next_node_id, self.next_cluster_id, int(self.growth_enabled)], np.int64),
            "epoch": np.array(self.epoch, np.int64),
        }
        return {k: v.copy() for k, v in state.items()}  # a snapshot, not views of live arrays

    def check_state(self, state: dict[str, np.ndarray]) -> None:
        """Raise `StateError` unless `state` is a whole, consistent `state_dict` of this cortex."""
        where = f"cortex.{self.modality}"
        f, i = "f", "i"
        dims = check_arrays(state, {
            "pos": (f, ("N", "D")), "pos_sq": (f, ("N",)), "last_z": (f, ("N", "D")), "node_id": (i, ("N",)),
            "node_last": (i, ("N",)), "node_feedbacks": (i, ("N",)), "link": (f, ("N", "C")),
            "cluster_id": (i, ("C",)), "cluster_last": (i, ("C",)), "mode_link": (f, ("C", "N")),
            "fb_keys": (i, ("K", 2)), "fb_vals": (f, ("K", self.dim + 1)), "scalars": (i, (4,)), "epoch": (i, ()),
        }, where, dims={"D": self.dim})
        step, next_node, next_cluster, _ = (int(v) for v in state["scalars"])
        if step < 0 or int(state["epoch"]) < 1:
            raise StateError(f"{where}: step {step} and epoch must be a count and a positive number")
        check_ids(state["node_id"], next_node, "node ids", where)
        check_ids(state["cluster_id"], next_cluster, "cluster ids", where)
        check_range(state["fb_keys"][:, 0], 0, dims["N"], "feedback node slots", where)
        check_range(state["fb_keys"][:, 1], 0, dims["C"], "feedback cluster slots", where)
        link, alive = state["link"], state["node_id"] >= 0
        if link.size and float(link.min()) < 0:
            raise StateError(f"{where}: node->cluster links must not be negative")
        if alive.any() and float(link[alive].sum(1).min()) <= 0:  # every live node belongs to some cluster
            raise StateError(f"{where}: a live node links to no cluster (a zeroed link row)")

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        self.check_state(state)  # all or nothing: nothing below runs on a damaged state
        hi, chi = state["link"].shape
        cap_n = max(_START_CAPACITY, 1 << max(hi, 1).bit_length())
        cap_c = max(_START_CAPACITY, 1 << max(chi, 1).bit_length())
        self._alloc(cap_n, cap_c)
        self.n_hi, self.c_hi = hi, chi
        for name in ("pos", "last_z", "node_id", "node_last", "node_feedbacks",
                     "cluster_id", "cluster_last"):
            getattr(self, name)[: len(state[name])] = state[name]
        self.link[:hi, :chi] = state["link"]
        self.mode_link[:chi, :hi] = state["mode_link"]
        alive = self.node_id[:hi] >= 0
        self.pos_sq[:hi] = state["pos_sq"]  # saved, not recomputed: bit-identical nearest-node ties
        self.node_slot = {int(self.node_id[n]): int(n) for n in np.flatnonzero(alive)}
        c_alive = self.cluster_id[:chi] >= 0
        self.cluster_slot = {int(self.cluster_id[c]): int(c) for c in np.flatnonzero(c_alive)}
        self._free_nodes = [int(n) for n in np.flatnonzero(~alive)]  # ascending: a valid heap
        self._free_clusters = [int(c) for c in np.flatnonzero(~c_alive)]
        self.fb_stats = {}
        for (n, c), acc in zip(state["fb_keys"], state["fb_vals"]):
            self.fb_stats.setdefault(int(n), {})[int(c)] = acc.copy()
        step, next_node, next_cluster, growth = (int(v) for v in state["scalars"])
        self.step, self.next_node_id, self.next_cluster_id = step, next_node, next_cluster
        self.growth_enabled = bool(growth)
        self.epoch = int(state["epoch"])
        self._changes = []


def drop_columns_(matrix: np.ndarray, columns: np.ndarray) -> None:
    """Zero `columns` of a row-normalised matrix and renormalise the rows they touched (empty rows stay 0)."""
    touched = np.flatnonzero(matrix[:, columns].sum(axis=1) > 0)
    matrix[:, columns] = 0.0
    sub = matrix[touched]
    sums = sub.sum(axis=1, keepdims=True)
    matrix[touched] = np.divide(sub, sums, out=np.zeros_like(sub), where=sums > 0)

