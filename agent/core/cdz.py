"""The convergence-divergence zone: cross-modal cluster connections (docs/LEARNING.md steps 5-7).

The CDZ is the only owner of cross-modal weights. For every ordered pair of
modalities (a, b) it holds a matrix W[a->b] (clusters of a x clusters of b) whose
rows sum to 1 (or are empty). Excitations of different modalities whose event
times are within the window B are correlated: the earlier->later connection grows,
the reverse grows `backward_gain` times as much, and each side is told which of its
own clusters the other side points to (feedback). Recall is the argmax of a row.

Clusters are known by id (never reused); the CDZ keeps its own id->row map, so it
can run in a different process from the cortices that own the clusters.
"""

from __future__ import annotations

import heapq
import logging
import math
from collections import deque
from dataclasses import dataclass

import numpy as np

from agent.core.config import CDZSettings
from agent.core.cortex import drop_columns_
from agent.core.kernels import Kernels
from agent.core.messages import NS, ClusterChange, Excitation, Feedback, to_ns
from agent.core.state_check import StateError, check_arrays, check_ids, check_range

log = logging.getLogger(__name__)

_START_CAPACITY = 512


@dataclass
class CDZCounters:
    excitations: int = 0
    pairs: int = 0
    unknown_modality: int = 0
    stale: int = 0  # excitations of deleted or invalid clusters
    refused: int = 0  # clusters beyond the per-sense ceiling, not registered


class _Clusters:
    """Row bookkeeping of one modality's clusters inside the CDZ."""

    def __init__(self) -> None:
        self.deleted: set[int] = set()  # ids are never reused: a late message about one is ignored
        self.slot: dict[int, int] = {}
        self.ids = np.full(_START_CAPACITY, -1, np.int64)
        self.free: list[int] = []
        self.hi = 0

    @property
    def capacity(self) -> int:
        return len(self.ids)


def window_weight(dt: float, window_s: float, kernel: str) -> float:
    """w(dt) on [0, B]: 1 (flat) or a Gaussian with sigma = B / 2; 0 outside the window."""
    if dt > window_s:
        return 0.0
    if kernel == "flat" or window_s <= 0.0:  # a zero window pairs identical times only
        return 1.0
    return math.exp(-0.5 * (dt / (window_s / 2.0)) ** 2)


class CDZ:
    """Correlates cluster excitations within window B and answers recall."""

    def __init__(self, modalities: tuple[str, ...] | list[str], settings: CDZSettings, max_clusters: int = 1_000_000,
                 kernels: str = "numba"):
        if len(set(modalities)) != len(modalities) or len(modalities) < 2:
            raise ValueError(f"the CDZ needs at least two distinct modalities, got {modalities}")
        if settings.kernel not in ("flat", "gaussian"):
            raise ValueError(f"cdz.kernel must be 'flat' or 'gaussian', not {settings.kernel!r}")
        self.modalities = tuple(modalities)
        self.settings = settings
        self.kernels = Kernels(kernels)  # the per-pair arithmetic (agent.core.kernels)
        self.max_clusters = max_clusters  # per sense (a cortex holds no more): the matrices' ceiling
        self._silent = frozenset(settings.no_feedback_from)  # read once per pair: kept out of the settings lookup
        self.clusters = {m: _Clusters() for m in self.modalities}
        self.pairs = [(a, b) for a in self.modalities for b in self.modalities if a != b]
        self.W = {p: np.zeros((_START_CAPACITY, _START_CAPACITY), np.float32) for p in self.pairs}
        self.age = {p: np.zeros(_START_CAPACITY, np.int64) for p in self.pairs}  # updates per row
        self.recent: deque[Excitation] = deque()  # excitations that may still pair, by event time
        self.t_max = -math.inf
        self.counters = CDZCounters()
        self.associating = True  # False: pairs get feedback but grow no connection (a sleep's rehearsal)

    # ------------------------------------------------------------------ clusters
    def _row(self, modality: str, cluster_id: int) -> int | None:
        """Row of a cluster, registering it on first sight (creation may travel separately);
        None, counted in `refused`, when the sense already has `max_clusters` (a flood of
        cluster ids no cortex could hold must not grow the matrices without end)."""
        cl = self.clusters[modality]
        r = cl.slot.get(cluster_id)
        if r is not None:
            return r
        if len(cl.slot) >= self.max_clusters:
            self.counters.refused += 1
            if self.counters.refused == 1:
                log.warning("%s: more than %d clusters; cluster %d and any further ones are refused",
                            modality, self.max_clusters, cluster_id)
            return None
        if not cl.free and cl.hi == cl.capacity:
            self._grow(modality)
        r = heapq.heappop(cl.free) if cl.free else cl.hi
        cl.hi = max(cl.hi, r + 1)
        cl.slot[cluster_id] = r
        cl.ids[r] = cluster_id
        return r

    def _grow(self, modality: str) -> None:
        cl = self.clusters[modality]
        cap = min(cl.capacity * 2, self.max_clusters)
        ids = np.full(cap, -1, np.int64)
        ids[: cl.capacity] = cl.ids
        cl.ids = ids
        for (a, b), w in list(self.W.items()):
            if modality in (a, b):
                rows = cap if a == modality else w.shape[0]
                cols = cap if b == modality else w.shape[1]
                grown = np.zeros((rows, cols), np.float32)
                grown[: w.shape[0], : w.shape[1]] = w
                self.W[(a, b)] = grown
                if a == modality:
                    age = np.zeros(cap, np.int64)
                    age[: len(self.age[(a, b)])] = self.age[(a, b)]
                    self.age[(a, b)] = age

    def apply(self, change: ClusterChange) -> None:
        """Register created clusters; drop the rows and columns of deleted ones and renormalise."""
        if change.modality not in self.clusters:
            self.counters.unknown_modality += 1
            return
        cl = self.clusters[change.modality]
        for cid in change.created:
            if int(cid) >= 0 and int(cid) not in cl.deleted:
                self._row(change.modality, int(cid))
        cl.deleted.update(int(cid) for cid in change.deleted)
        rows = [cl.slot.pop(int(cid)) for cid in change.deleted if int(cid) in cl.slot]
        if not rows:
            return
        rows_arr = np.array(rows)
        cl.ids[rows_arr] = -1
        for r in rows:
            heapq.heappush(cl.free, r)
        m = change.modality
        for (a, b), w in self.W.items():
            if a == m:
                w[rows_arr] = 0.0
                self.age[(a, b)][rows_arr] = 0
            elif b == m:
                drop_columns_(w, rows_arr)
        dead = {(m, int(cid)) for cid in change.deleted}
        self.recent = deque(e for e in self.recent if (e.modality, e.cluster_id) not in dead)

    # ------------------------------------------------------------------ learning
    def kernel(self, dt: float) -> float:
        return window_weight(dt, self.settings.window_s, self.settings.kernel)

    def excite(self, exc: Excitation) -> list[Feedback]:
        """Correlate one excitation with those of other modalities within B.

        Returns the feedback: one `Feedback` per modality that gets any, stamped with the
        excitation's event time and sequence number, its nodes in the order the pairs formed."""
        if exc.modality not in self.clusters:
            self.counters.unknown_modality += 1
            return []
        if exc.cluster_id < 0 or exc.cluster_id in self.clusters[exc.modality].deleted:
            self.counters.stale += 1
            return []
        s = self.settings
        self.counters.excitations += 1
        m_new = exc.modality
        r_new = self._row(m_new, exc.cluster_id)
        if r_new is None:
            return []
        new = self.clusters[m_new]
        feedback: list[tuple[str, int, int, float]] = []  # (modality, node id, cluster id, certainty)
        t_new = exc.t
        window, flat = s.window_s, s.kernel == "flat"
        for old in self.recent:
            m_old = old.modality
            if m_old == m_new:
                continue
            dt = t_new - old.t_ns / NS  # = old.t, without the property's call
            if abs(dt) > window:
                continue
            weight = 1.0 if flat else self.kernel(abs(dt))
            if weight <= 0.0:
                continue
            other = self.clusters[m_old]
            r_old = other.slot.get(old.cluster_id)
            if r_old is None:
                continue
            # the earlier -> later connection grows by `amount`, the reverse backward_gain times as much
            amount = s.cdz_lr * weight * exc.strength * old.strength if self.associating else 0.0
            back = amount if dt == 0 else amount * s.backward_gain
            to_old, to_new = (m_new, m_old), (m_old, m_new)
            best_new, conf_new, best_old, conf_old = self.kernels.pair(
                self.W[to_old], self.age[to_old], self.W[to_new], self.age[to_new], r_new, r_old, new.hi, other.hi,
                amount if dt < 0 else back, amount if dt >= 0 else back, s.age_factor)
            self.counters.pairs += 1
            # each side hears which of its clusters the other side's cluster points to, unless that
            # side teaches nothing (`no_feedback_from`) or points nowhere (e.g. backward_gain = 0)
            if best_new >= 0 and m_old not in self._silent:
                feedback.append((m_new, exc.node_id, int(new.ids[best_new]), conf_new))
            if best_old >= 0 and m_new not in self._silent:
                feedback.append((m_old, old.node_id, int(other.ids[best_old]), conf_old))
        i = len(self.recent)  # kept in event-time order (arrival order when in order): pruning is by event time
        while i and self.recent[i - 1].t_ns / NS > t_new:
            i -= 1
        self.recent.insert(i, exc)
        self.t_max = max(self.t_max, t_new)
        horizon = self.t_max - s.window_s - s.reorder_slack_s
        while self.recent and self.recent[0].t_ns / NS < horizon:
            self.recent.popleft()
        return self._as_messages(exc, feedback) if feedback else []

    @staticmethod
    def _as_messages(exc: Excitation, items: list[tuple[str, int, int, float]]) -> list[Feedback]:
        """One `Feedback` per modality, its nodes in the order the pairs formed."""
        if len(items) == 1 or (len(items) == 2 and items[0][0] != items[1][0]):  # nearly always: one node per sense
            return [Feedback(modality=m, t_ns=exc.t_ns, seq=exc.seq, node_ids=(node,), cluster_ids=(cluster,),
                             certainties=(conf,)) for m, node, cluster, conf in items]
        per: dict[str, tuple[list, list, list]] = {}
        for m, node, cluster, conf in items:
            got = per.get(m)
            if got is None:
                got = per[m] = ([], [], [])
            got[0].append(node)
            got[1].append(cluster)
            got[2].append(conf)
        return [Feedback(modality=m, t_ns=exc.t_ns, seq=exc.seq, node_ids=tuple(n), cluster_ids=tuple(c),
                         certainties=tuple(k)) for m, (n, c, k) in per.items()]

    def set_row(self, a: str, cluster_id: int, b: str, targets: dict[int, float], age: int) -> None:
        """Replace cluster `cluster_id`'s connections towards modality `b` (renormalised).

        The merge rule (`agent.core.merges`) uses it to give the halves of a split cluster
        the connections their own co-occurrences show; `age` sets the row's certainty.
        """
        r = self._row(a, int(cluster_id))
        if r is None:
            return
        cols = {col: w for c, w in targets.items() if w > 0 and (col := self._row(b, int(c))) is not None}
        row = self.W[(a, b)][r]
        row[:] = 0.0
        total = sum(cols.values())
        for col, w in cols.items():
            row[col] = w / total
        self.age[(a, b)][r] = age if total > 0 else 0

    def row_age(self, a: str, cluster_id: int, b: str) -> int:
        r = self.clusters[a].slot.get(int(cluster_id))
        return 0 if r is None else int(self.age[(a, b)][r])

    # ------------------------------------------------------------------ reading (pure)
    def recall(self, modality: str, cluster_id: int) -> dict[str, int | None]:
        """For each other modality, the cluster this one connects to most strongly (None: nothing)."""
        return {b: self.recall_in(modality, cluster_id, b) for b in self.modalities if b != modality}

    def recall_in(self, modality: str, cluster_id: int, b: str) -> int | None:
        """The cluster of modality `b` that this one connects to most strongly (None: nothing); one
        entry of `recall`, for a caller that needs only that one (the stream log, per stimulus)."""
        r = self.clusters[modality].slot.get(int(cluster_id))
        if r is None:
            return None
        hi = self.clusters[b].hi
        if not hi:
            return None
        best, top = self.kernels.strongest(self.W[(modality, b)], r, hi)
        return int(self.clusters[b].ids[best]) if top > 0 else None

    def associates(self, modality: str, cluster_id: int, b: str, min_weight: float) -> list[tuple[int, float]]:
        """The clusters of `b` that cluster `cluster_id` connects to with at least `min_weight`,
        strongest first: all it recalls when one cluster stands for many (a reward for its digits)."""
        r = self.clusters[modality].slot.get(int(cluster_id))
        if r is None or b == modality:
            return []
        row = self.W[(modality, b)][r, : self.clusters[b].hi]
        cols = np.flatnonzero(row >= max(min_weight, 1e-12))
        cols = cols[np.argsort(-row[cols], kind="stable")]
        return [(int(self.clusters[b].ids[c]), float(row[c])) for c in cols]

    def recall_many(self, modality: str, cluster_ids: np.ndarray) -> dict[str, np.ndarray]:
        """Vectorised `recall` for an array of cluster ids; -1 where nothing is recalled."""
        cl = self.clusters[modality]
        uniq = np.unique(cluster_ids)
        rows = np.array([cl.slot.get(int(c), -1) for c in uniq], np.int64)
        out: dict[str, np.ndarray] = {}
        for b in self.modalities:
            if b == modality:
                continue
            w = self.W[(modality, b)][:, : self.clusters[b].hi]
            table = np.full(len(uniq), -1, np.int64)
            known = rows >= 0
            if known.any() and w.shape[1]:
                sub = w[rows[known]]
                best = sub.argmax(axis=1)
                hit = sub[np.arange(len(best)), best] > 0
                table[np.flatnonzero(known)[hit]] = self.clusters[b].ids[best[hit]]
            out[b] = table[np.searchsorted(uniq, cluster_ids)]
        return out

    def weights(self, a: str, b: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(W, row cluster ids, column cluster ids) of live clusters, for plots and tests."""
        ra = np.array(sorted(self.clusters[a].slot.values()), np.int64)
        rb = np.array(sorted(self.clusters[b].slot.values()), np.int64)
        w = self.W[(a, b)][np.ix_(ra, rb)] if ra.size and rb.size else np.zeros((ra.size, rb.size), np.float32)
        return w, self.clusters[a].ids[ra], self.clusters[b].ids[rb]

    # ------------------------------------------------------------------ checkpoint
    def state_dict(self) -> dict[str, np.ndarray]:
        state: dict[str, np.ndarray] = {}
        for m, cl in self.clusters.items():
            state[f"ids.{m}"] = cl.ids[: cl.hi].copy()
            state[f"deleted.{m}"] = np.array(sorted(cl.deleted), np.int64)
        for (a, b), w in self.W.items():
            state[f"W.{a}.{b}"] = w[: self.clusters[a].hi, : self.clusters[b].hi].copy()
            state[f"age.{a}.{b}"] = self.age[(a, b)][: self.clusters[a].hi].copy()
        rec = list(self.recent)
        state["recent.modality"] = np.array([self.modalities.index(e.modality) for e in rec], np.int64)
        state["recent.cluster"] = np.array([e.cluster_id for e in rec], np.int64)
        state["recent.node"] = np.array([e.node_id for e in rec], np.int64)
        state["recent.strength"] = np.array([e.strength for e in rec], np.float64)
        state["recent.t"] = np.array([e.t for e in rec], np.float64)
        state["t_max"] = np.array(self.t_max, np.float64)
        return state

    def check_state(self, state: dict[str, np.ndarray]) -> None:
        """Raise `StateError` unless `state` is a whole, consistent `state_dict` of this CDZ."""
        spec: dict[str, tuple[str, tuple[int | str, ...]]] = {}
        for m in self.modalities:
            spec |= {f"ids.{m}": ("i", (f"C.{m}",)), f"deleted.{m}": ("i", (f"X.{m}",))}
        for a, b in self.pairs:
            spec |= {f"W.{a}.{b}": ("f", (f"C.{a}", f"C.{b}")), f"age.{a}.{b}": ("i", (f"C.{a}",))}
        spec |= {f"recent.{k}": (kind, ("R",)) for k, kind in
                 (("modality", "i"), ("cluster", "i"), ("node", "i"), ("strength", "f"), ("t", "f"))}
        check_arrays(state, spec | {"t_max": ("f", ())}, "cdz")
        for m in self.modalities:
            check_ids(state[f"ids.{m}"], 2**62, f"cluster ids of {m}", "cdz")
            if (state[f"ids.{m}"] >= 0).sum() > self.max_clusters:
                raise StateError(f"cdz: more than {self.max_clusters} clusters of {m}")
        for a, b in self.pairs:  # connections only ever grow from zero and are renormalised
            if state[f"W.{a}.{b}"].size and float(state[f"W.{a}.{b}"].min()) < 0:
                raise StateError(f"cdz: W.{a}.{b} holds negative connections")
        check_range(state["recent.modality"], 0, len(self.modalities), "recent.modality", "cdz")

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        self.check_state(state)  # all or nothing: nothing below runs on a damaged state
        for m in self.modalities:
            ids = state[f"ids.{m}"]
            cl = _Clusters()
            while cl.capacity < len(ids):
                cl.ids = np.full(cl.capacity * 2, -1, np.int64)
            cl.ids[: len(ids)] = ids
            cl.hi = len(ids)
            cl.slot = {int(c): int(r) for r, c in enumerate(ids) if c >= 0}
            cl.free = [int(r) for r in np.flatnonzero(ids < 0)]  # ascending: a valid heap
            cl.deleted = set(int(c) for c in state[f"deleted.{m}"])
            self.clusters[m] = cl
        for a, b in self.pairs:
            w = np.zeros((self.clusters[a].capacity, self.clusters[b].capacity), np.float32)
            saved = state[f"W.{a}.{b}"]
            w[: saved.shape[0], : saved.shape[1]] = saved
            self.W[(a, b)] = w
            age = np.zeros(self.clusters[a].capacity, np.int64)
            age[: len(state[f"age.{a}.{b}"])] = state[f"age.{a}.{b}"]
            self.age[(a, b)] = age
        self.recent = deque(
            Excitation(modality=self.modalities[int(m)], t_ns=to_ns(float(t)), seq=0, cluster_id=int(c),
                       node_id=int(n), strength=float(s))
            for m, c, n, s, t in zip(state["recent.modality"], state["recent.cluster"], state["recent.node"],
                                     state["recent.strength"], state["recent.t"])
        )
        self.t_max = float(state["t_max"])
