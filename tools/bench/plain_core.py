"""The learning core written plainly: the benchmark baseline of `tools.bench.core` only.

This is the per-stimulus step of `agent.core.cortex.Cortex`, `agent.core.cdz.CDZ` and
`agent.core.brain.Brain.learn` (docs/LEARNING.md steps 2-6) written the obvious way, with
Python objects, lists and dicts and no numpy:

* a node is an object holding its position (a list of floats) and its links
  (dict cluster id -> weight); the nearest node is found by a Python loop over
  all nodes, the strongest cluster by a loop over the node's links;
* the CDZ weights are dicts of dicts (`W[(a, b)][cluster of a][cluster of b]`),
  renormalised by Python loops;
* the same seeding, node move, cluster->node (mode) link update, windowed CDZ
  correlation with `backward_gain`, and feedback with certainty.

Maintenance (not per stimulus) is simplified: pruning uses the same rules
(clusters and nodes unused for too long, orphan nodes) and splitting follows
`Cortex.grow_` in a shorter form. What differs from the vectorised core, and why
the two may part ways after a while:

* positions and weights are Python floats (float64), the vectorised core uses
  float32, so a near-tie between two distances or two weights can resolve
  differently; from then on the two runs drift apart (same rules, other state);
* ties are broken by the lowest id. The vectorised core breaks them by storage
  slot, which is the same order until pruning or splitting frees a slot and a
  newer node or cluster reuses it. Exact ties do happen, e.g. two nodes seeded from
  the same training row (stimuli are drawn with replacement) are at distance 0 from
  that row whenever it comes again.

The benchmark's agreement check compares the excited clusters of both over the
same stream prefix; `tests/test_bench.py` checks they agree.
"""

from __future__ import annotations

import math

from agent.core.config import Config
from agent.core.cdz import window_weight
from agent.core.kernels import certainty

# An excitation is a plain tuple: (modality, cluster id, node id, strength, event time).
M, CLUSTER, NODE, STRENGTH, T = range(5)


def _argmax(weights: dict[int, float]) -> tuple[int | None, float]:
    """The key with the largest weight (lowest key on ties) and that weight; (None, 0.0) if empty."""
    best, top = None, 0.0
    for key, w in weights.items():
        if best is None or w > top or (w == top and key < best):
            best, top = key, w
    return best, top


def _normalise(weights: dict[int, float]) -> None:
    total = 0.0
    for w in weights.values():
        total += w
    if total > 0.0:
        for key in weights:
            weights[key] /= total


class Node:
    __slots__ = ("pos", "last_z", "links", "last", "feedbacks")

    def __init__(self, pos: list[float], cluster: int, step: int):
        self.pos = list(pos)  # a copy: moving the node never touches the data
        self.last_z = pos
        self.links = {cluster: 1.0}  # cluster id -> weight, sums to 1
        self.last = step  # step of the last excitation or feedback
        self.feedbacks = 0


class PlainCortex:
    """One modality's nodes and clusters (plain counterpart of `agent.core.cortex.Cortex`)."""

    def __init__(self, modality: str, dim: int, settings, epoch: int):
        self.modality, self.dim, self.settings, self.epoch = modality, dim, settings, epoch
        self.nodes: dict[int, Node] = {}
        self.cluster_last: dict[int, int] = {}
        self.mode: dict[int, dict[int, float]] = {}  # cluster id -> {node id: weight}, sums to 1
        self.fb: dict[int, dict[int, list]] = {}  # node -> cluster -> [sum of encodings, count]
        self.next_node = self.next_cluster = self.step = 0
        self.growth_enabled = True
        self.deleted: list[int] = []  # cluster ids deleted since the CDZ last heard
        self.splits = 0

    def _new_node(self, z: list[float]) -> tuple[int, int]:
        nid, cid = self.next_node, self.next_cluster
        self.next_node += 1
        self.next_cluster += 1
        self.nodes[nid] = Node(z, cid, self.step)
        self.cluster_last[cid] = self.step
        self.mode[cid] = {nid: 1.0}
        return nid, cid

    def excite(self, z: list[float], t: float, strength: float = 1.0) -> tuple | None:
        if len(z) != self.dim or not all(math.isfinite(v) for v in z):
            return None
        s = self.settings
        if self.next_node < s.initial_nodes:  # seeding: the first stimuli become nodes
            nid, cid = self._new_node(z)
            node = self.nodes[nid]
        else:
            nid, best = -1, math.inf
            for key, cand in self.nodes.items():  # nearest node, Euclidean
                d = 0.0
                for p, x in zip(cand.pos, z):
                    d += (p - x) * (p - x)
                if d < best:
                    nid, best = key, d
            node = self.nodes[nid]
            node.pos = [p + s.node_lr * (x - p) for p, x in zip(node.pos, z)]
            cid, _ = _argmax(node.links)  # the node's strongest cluster fires
            row = self.mode[cid]  # grow the cluster -> node link, the row keeps summing to 1
            keep = 1.0 / (1.0 + s.cluster_node_lr)
            for key in row:
                row[key] *= keep
            row[nid] = row.get(nid, 0.0) + s.cluster_node_lr / (1.0 + s.cluster_node_lr)
        node.last_z = z
        node.last = self.step
        self.cluster_last[cid] = self.step
        self.step += 1
        self._maybe_maintain()
        return (self.modality, cid, nid, strength, t)

    def feedback(self, nid: int, cid: int, connection_certainty: float) -> bool:
        node = self.nodes.get(nid)
        if node is None or cid not in self.cluster_last:
            return False  # stale: the node or the cluster is gone
        s = self.settings
        top = max(node.links.values(), default=0.0)
        node_certainty = certainty(top, float(node.feedbacks), s.age_factor)
        node.links[cid] = node.links.get(cid, 0.0) + s.feedback_lr * (1.0 + node_certainty * connection_certainty) ** 2
        _normalise(node.links)
        node.feedbacks += 1
        node.last = self.step
        self.cluster_last[cid] = self.step
        acc = self.fb.setdefault(nid, {}).get(cid)
        if acc is None:
            acc = self.fb[nid][cid] = [[0.0] * self.dim, 0]
        sums = acc[0]
        for i, v in enumerate(node.last_z):
            sums[i] += v
        acc[1] += 1
        return True

    # ---------------------------------------------------------------- maintenance (simplified)
    def _period(self, frac: float) -> int:
        return max(1, int(round(frac * self.epoch)))

    def _maybe_maintain(self) -> None:
        s = self.settings
        if self.step % self._period(s.prune_every) == 0:
            self.prune()
        if self.growth_enabled and self.step % self._period(s.grow_every) == 0:
            self.grow()

    def prune(self) -> None:
        s = self.settings
        dead_c = [c for c, last in self.cluster_last.items() if self.step - last > s.prune_clusters_after * self.epoch]
        for c in dead_c:
            del self.cluster_last[c], self.mode[c]
        if dead_c:
            dead = set(dead_c)
            for nid, node in self.nodes.items():
                if dead.intersection(node.links):
                    node.links = {c: w for c, w in node.links.items() if c not in dead}
                    _normalise(node.links)
                for c in dead.intersection(self.fb.get(nid, ())):
                    del self.fb[nid][c]
            self.deleted.extend(dead_c)
        stale = [n for n, node in self.nodes.items()
                 if self.step - node.last > s.prune_nodes_after * self.epoch or sum(node.links.values()) <= 0.0]
        self._delete_nodes(stale)

    def _delete_nodes(self, nids: list[int]) -> None:
        for n in nids:
            del self.nodes[n]
            self.fb.pop(n, None)
            for row in self.mode.values():
                if n in row:
                    del row[n]
                    _normalise(row)

    def grow(self) -> None:
        """Split ambiguous mature nodes at the mean encodings fed back towards each cluster."""
        s = self.settings
        budget = min(max(int(s.split_per_round_frac * self.epoch), 5), s.max_nodes - len(self.nodes))
        stats, self.fb = self.fb, {}
        if budget <= 0 or not stats:
            return
        period = self._period(s.grow_every)
        candidates = []
        for nid, node in self.nodes.items():
            ambiguity = 1.0 - max(node.links.values(), default=0.0)
            if (node.feedbacks >= s.mature_feedbacks and self.step - node.last <= period
                    and ambiguity > s.split_threshold):
                candidates.append((-ambiguity, nid))
        candidates.sort()
        splits = 0
        for _, nid in candidates:
            groups = [acc for acc in stats.get(nid, {}).values() if acc[1] > s.split_min_samples]
            if len(groups) < 2 or splits + len(groups) - 1 > budget:
                continue
            for sums, count in groups:
                self._new_node([v / count for v in sums])
            self._delete_nodes([nid])
            splits += 1
            if len(self.nodes) >= s.max_nodes:
                break
        self.splits += splits


class PlainCDZ:
    """Cross-modal weights as dicts of dicts (plain counterpart of `agent.core.cdz.CDZ`)."""

    def __init__(self, modalities: tuple[str, ...], settings):
        self.settings = settings
        pairs = [(a, b) for a in modalities for b in modalities if a != b]
        self.W: dict[tuple[str, str], dict[int, dict[int, float]]] = {p: {} for p in pairs}
        self.age: dict[tuple[str, str], dict[int, int]] = {p: {} for p in pairs}
        self.recent: list[tuple] = []  # excitations that may still pair, by arrival
        self.t_max = -math.inf

    def excite(self, exc: tuple) -> list[tuple]:
        """Correlate with the recent excitations of other modalities; return feedback tuples."""
        s = self.settings
        out: list[tuple] = []
        for old in self.recent:
            if old[M] == exc[M]:
                continue
            dt = exc[T] - old[T]
            weight = window_weight(abs(dt), self.settings.window_s, self.settings.kernel)
            if weight <= 0.0:
                continue
            first, second = (old, exc) if dt >= 0 else (exc, old)
            amount = s.cdz_lr * weight * exc[STRENGTH] * old[STRENGTH]
            self._grow(first, second, amount)  # earlier -> later
            self._grow(second, first, amount if dt == 0 else amount * s.backward_gain)
            self._feedback(exc, old, out)
            self._feedback(old, exc, out)
        self.recent.append(exc)
        self.t_max = max(self.t_max, exc[T])
        horizon = self.t_max - s.window_s - s.reorder_slack_s
        drop = 0
        while drop < len(self.recent) and self.recent[drop][T] < horizon:
            drop += 1
        if drop:
            del self.recent[:drop]
        return out

    def _grow(self, a: tuple, b: tuple, amount: float) -> None:
        if amount <= 0.0:
            return
        pair = (a[M], b[M])
        row = self.W[pair].setdefault(a[CLUSTER], {})
        row[b[CLUSTER]] = row.get(b[CLUSTER], 0.0) + amount
        _normalise(row)  # targets in one modality compete
        ages = self.age[pair]
        ages[a[CLUSTER]] = ages.get(a[CLUSTER], 0) + 1

    def _feedback(self, target: tuple, partner: tuple, out: list[tuple]) -> None:
        pair = (partner[M], target[M])
        best, top = _argmax(self.W[pair].get(partner[CLUSTER], {}))
        if best is None or top <= 0.0:
            return  # the partner recalls nothing here
        conf = certainty(top, float(self.age[pair].get(partner[CLUSTER], 0)), self.settings.age_factor)
        out.append((target[M], target[NODE], best, conf))

    def delete(self, modality: str, cluster_ids: list[int]) -> None:
        dead = set(cluster_ids)
        for (a, b), rows in self.W.items():
            if a == modality:
                for c in dead:
                    rows.pop(c, None)
                    self.age[(a, b)].pop(c, None)
            elif b == modality:
                for row in rows.values():
                    if dead.intersection(row):
                        for c in dead.intersection(row):
                            del row[c]
                        _normalise(row)
        self.recent = [e for e in self.recent if not (e[M] == modality and e[CLUSTER] in dead)]

    def recall(self, modality: str, cluster_id: int, target: str) -> int:
        best, top = _argmax(self.W[(modality, target)].get(cluster_id, {}))
        return -1 if best is None or top <= 0.0 else best


class PlainBrain:
    """Plain counterpart of `agent.core.brain.Brain` (learning only)."""

    def __init__(self, config: Config, dims: dict[str, int], epochs: dict[str, int]):
        self.config = config
        self.modalities = tuple(config.modalities)
        self.cortices = {m: PlainCortex(m, dims[m], config.cortex, epochs[m]) for m in self.modalities}
        self.cdz = PlainCDZ(self.modalities, config.cdz)
        self.rejected = 0

    def learn(self, modality: str, z: list[float], t: float, strength: float = 1.0) -> tuple | None:
        cortex = self.cortices[modality]
        exc = cortex.excite(z, t, strength)
        if exc is None:
            self.rejected += 1
            return None
        if cortex.deleted:
            self.cdz.delete(modality, cortex.deleted)
            cortex.deleted = []
        for m, nid, cid, conf in self.cdz.excite(exc):
            self.cortices[m].feedback(nid, cid, conf)
        return exc

    def set_growth(self, enabled: bool) -> None:
        for cortex in self.cortices.values():
            cortex.growth_enabled = enabled


def as_lists(encodings: dict) -> dict[str, list[list[float]]]:
    """Encodings (modality -> (n, dim) array) as lists of Python float lists."""
    return {m: [list(map(float, row)) for row in z.tolist()] for m, z in encodings.items()}


def plain_learn_stream(brain: PlainBrain, stream, encodings: dict[str, list[list[float]]], start: int = 0,
                       stop: int | None = None) -> tuple[list[int], list[int]]:
    """Plain `agent.core.brain.learn_stream`: (excited cluster ids, recalled cluster ids), -1 for none."""
    stop = len(stream) if stop is None else stop
    mods = stream.modalities
    nxt = {m: mods[(k + 1) % len(mods)] for k, m in enumerate(mods)}
    growth_until = int(brain.config.cortex.growth_stop * len(stream))
    ts, ms, idx = stream.t.tolist(), stream.modality.tolist(), stream.index.tolist()
    clusters, recalled = [], []
    brain.set_growth(start < growth_until)
    for j in range(start, stop):
        if j == growth_until:
            brain.set_growth(False)
        m = mods[ms[j]]
        exc = brain.learn(m, encodings[m][idx[j]], ts[j])
        if exc is None:
            clusters.append(-1)
            recalled.append(-1)
        else:
            clusters.append(exc[CLUSTER])
            recalled.append(brain.cdz.recall(m, exc[CLUSTER], nxt[m]))
    return clusters, recalled
