"""agent.core.cortex: seeding, moving nodes, feedback, pruning, growth, mode nodes, checkpoints.

Pure logic on a bare Cortex fed tiny hand-made encodings (docs/LEARNING.md steps 2-4, 6
and maintenance). Maintenance periods are set huge where a test calls `prune_` /
`grow_` itself.
"""

from __future__ import annotations

import numpy as np
import pytest

from agent.core.cdz import CDZ
from agent.core.config import CDZSettings, CortexSettings
from agent.core.cortex import Cortex, StimulusError
from agent.core.kernels import certainty

NEVER = 1e6  # a maintenance period (in epochs) that is never reached


def make(dim: int = 2, epoch: int = 10, **kw) -> Cortex:
    base = dict(initial_nodes=3, prune_every=NEVER, grow_every=NEVER, prune_nodes_after=NEVER,
                prune_clusters_after=NEVER)
    base.update(kw)
    return Cortex("v", dim, CortexSettings(**base), epoch)


def v(*xs: float) -> np.ndarray:
    return np.array(xs, np.float32)


def snapshot(cx: Cortex) -> dict[str, np.ndarray]:
    return {k: np.array(a, copy=True) for k, a in cx.state_dict().items()}


def assert_same_state(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert a[k].dtype == b[k].dtype and a[k].shape == b[k].shape, k
        assert a[k].tobytes() == b[k].tobytes(), k


def link(cx: Cortex, node_id: int, cluster_id: int) -> float:
    return float(cx.link[cx.node_slot[node_id], cx.cluster_slot[cluster_id]])


def pos(cx: Cortex, node_id: int) -> np.ndarray:
    return cx.pos[cx.node_slot[node_id]]


def test_epoch_must_be_positive():
    with pytest.raises(ValueError):
        Cortex("v", 2, CortexSettings(), 0)


# --------------------------------------------------------------------------- seeding
def test_first_initial_nodes_stimuli_each_become_a_node_with_its_own_cluster():
    cx = make(initial_nodes=4)
    pts = [v(0, 0), v(5, 0), v(0, 5), v(5, 5)]
    excs = [cx.excite(p, float(i)) for i, p in enumerate(pts)]
    assert [e.node_id for e in excs] == [0, 1, 2, 3]
    assert len({e.cluster_id for e in excs}) == 4
    assert cx.n_nodes == 4 and cx.n_clusters == 4
    for e, p in zip(excs, pts):
        assert np.array_equal(pos(cx, e.node_id), p)
        assert link(cx, e.node_id, e.cluster_id) == 1.0
        assert cx.mode_node(e.cluster_id) == e.node_id
    changes = cx.drain_changes()
    assert sorted(c for ch in changes for c in ch.created) == sorted(e.cluster_id for e in excs)
    assert cx.drain_changes() == []
    # the next stimulus moves the nearest node instead of seeding
    e = cx.excite(v(4, 4), 4.0)
    assert (e.node_id, e.cluster_id) == (excs[3].node_id, excs[3].cluster_id)
    assert cx.n_nodes == 4 and cx.n_clusters == 4


def test_node_owns_a_copy_of_its_seed_stimulus():
    cx = make(initial_nodes=2)
    z = v(1, 2)
    e = cx.excite(z, 0.0)
    z[:] = 99.0  # the caller reuses its buffer
    assert np.array_equal(pos(cx, e.node_id), v(1, 2))
    cx.excite(v(10, 10), 1.0)
    w = v(1.5, 2.5)
    cx.excite(w, 2.0)  # moves node 0, must not write into w
    assert np.array_equal(w, v(1.5, 2.5))
    assert not np.array_equal(pos(cx, e.node_id), v(1, 2))


def test_nearest_node_moves_by_node_lr_towards_the_stimulus():
    cx = make(initial_nodes=2, node_lr=0.25)
    a = cx.excite(v(0, 0), 0.0)
    b = cx.excite(v(10, 0), 1.0)
    e = cx.excite(v(4, 0), 2.0)
    assert e.node_id == a.node_id and e.cluster_id == a.cluster_id
    assert np.allclose(pos(cx, a.node_id), [1.0, 0.0])
    assert np.array_equal(pos(cx, b.node_id), v(10, 0))
    e = cx.excite(v(6, 0), 3.0)
    assert e.node_id == b.node_id
    assert np.allclose(pos(cx, b.node_id), [9.0, 0.0])


def test_excitation_carries_time_and_strength():
    cx = make(initial_nodes=1)
    e = cx.excite(v(0, 0), 12.5, strength=0.3)
    assert (e.modality, e.t, e.strength) == ("v", 12.5, 0.3)


# --------------------------------------------------------------------------- bad input
@pytest.mark.parametrize("bad", [v(np.nan, 0), v(0, np.inf), v(1, 2, 3), np.zeros((1, 2), np.float32),
                                 np.zeros(0, np.float32)])
def test_bad_encoding_raises_stimulus_error_and_changes_nothing(bad):
    cx = make(initial_nodes=2)
    cx.excite(v(0, 0), 0.0)
    cx.excite(v(5, 5), 1.0)
    before = snapshot(cx)
    with pytest.raises(StimulusError):
        cx.excite(bad, 2.0)
    assert_same_state(before, snapshot(cx))
    assert cx.step == 2


def test_assign_checks_shape_and_needs_nodes():
    cx = make()
    with pytest.raises(RuntimeError):
        cx.assign(np.zeros((1, 2)))
    cx.excite(v(0, 0), 0.0)
    with pytest.raises(StimulusError):
        cx.assign(np.zeros((3, 5)))
    with pytest.raises(StimulusError):
        cx.assign(np.zeros(2))


def test_assign_marks_non_finite_rows():
    cx = make(initial_nodes=2)
    a = cx.excite(v(0, 0), 0.0)
    b = cx.excite(v(9, 9), 1.0)
    nodes, clusters = cx.assign(np.array([[8, 8], [np.nan, 0], [1, 0]], np.float32))
    assert nodes.tolist() == [b.node_id, -1, a.node_id]
    assert clusters.tolist() == [b.cluster_id, -1, a.cluster_id]


def test_assign_in_chunks_matches_one_pass():
    rng = np.random.default_rng(0)
    cx = make(dim=4, initial_nodes=20)
    for i in range(20):
        cx.excite(rng.normal(size=4), float(i))
    z = rng.normal(size=(50, 4))
    one = cx.assign(z)
    chunked = cx.assign(z, chunk=7)
    assert np.array_equal(one[0], chunked[0]) and np.array_equal(one[1], chunked[1])
    # brute force nearest
    ids = np.array(sorted(cx.node_slot))
    p = np.stack([pos(cx, i) for i in ids])
    want = ids[((z[:, None, :] - p[None]) ** 2).sum(-1).argmin(1)]
    assert np.array_equal(one[0], want)


# --------------------------------------------------------------------------- feedback
def test_repeated_feedback_moves_node_into_the_fed_back_cluster():
    cx = make(initial_nodes=2)
    a = cx.excite(v(0, 0), 0.0)
    b = cx.excite(v(10, 0), 1.0)
    probe = np.array([[0.5, 0]], np.float32)
    assert cx.assign(probe)[1].tolist() == [a.cluster_id]
    for _ in range(60):
        assert cx.feedback(a.node_id, b.cluster_id, 0.5)
    row = cx.link[cx.node_slot[a.node_id], : cx.c_hi]
    assert row.sum() == pytest.approx(1.0, abs=1e-5)
    assert link(cx, a.node_id, b.cluster_id) > link(cx, a.node_id, a.cluster_id)
    assert cx.assign(probe)[1].tolist() == [b.cluster_id]
    e = cx.excite(v(0.2, 0), 2.0)  # the node now fires its new class
    assert (e.node_id, e.cluster_id) == (a.node_id, b.cluster_id)
    assert cx.counters.feedback == 60


def test_feedback_increment_follows_the_certainty_rule():
    lr, age_factor, conn = 0.1, 4.0, 0.6
    cx = make(initial_nodes=2, feedback_lr=lr, age_factor=age_factor)
    a = cx.excite(v(0, 0), 0.0)
    b = cx.excite(v(10, 0), 1.0)
    # first feedback: the node is new (age 0) so the bonus is 1: link to b = lr / (1 + lr)
    cx.feedback(a.node_id, b.cluster_id, conn)
    x = lr / (1 + lr)
    assert link(cx, a.node_id, b.cluster_id) == pytest.approx(x, rel=1e-5)
    # second: node certainty = max_w^2 * min(1 / age_factor, 1)
    own = 1 / (1 + lr)
    inc = lr * (1 + own * own * (1 / age_factor) * conn) ** 2
    cx.feedback(a.node_id, b.cluster_id, conn)
    assert link(cx, a.node_id, b.cluster_id) == pytest.approx((x + inc) / (1 + inc), rel=1e-5)
    assert certainty(0.5, 50, 25) == pytest.approx(0.25)
    assert certainty(0.5, 5, 25) == pytest.approx(0.05)


@pytest.mark.parametrize("which", ["node", "cluster", "both"])
def test_feedback_naming_a_deleted_id_is_stale_and_changes_nothing(which):
    cx = make(initial_nodes=3, epoch=10, prune_every=0.1, prune_clusters_after=0.5)
    old = cx.excite(v(0, 0), 0.0)
    keep = cx.excite(v(10, 0), 1.0)
    cx.excite(v(20, 0), 2.0)
    for i in range(10):  # only the middle node is used: the first is pruned with its cluster
        cx.excite(v(10, 0.1), 3.0 + i)
    assert old.node_id not in cx.node_slot and old.cluster_id not in cx.cluster_slot
    before = snapshot(cx)
    node, cluster = {"node": (old.node_id, keep.cluster_id), "cluster": (keep.node_id, old.cluster_id),
                     "both": (old.node_id, old.cluster_id)}[which]
    assert cx.feedback(node, cluster, 1.0) is False
    assert cx.counters.stale_feedback == 1
    assert_same_state(before, snapshot(cx))
    # a never-seen id is stale too
    assert cx.feedback(10_000, keep.cluster_id, 1.0) is False
    assert cx.counters.stale_feedback == 2


# --------------------------------------------------------------------------- mode node
def test_mode_node_is_the_node_that_fired_most_under_the_cluster():
    cx = make(initial_nodes=3)
    a = cx.excite(v(0, 0), 0.0)
    b = cx.excite(v(10, 0), 1.0)
    d = cx.excite(v(20, 0), 2.0)
    assert cx.mode_node(a.cluster_id) == a.node_id
    for _ in range(60):  # b and d join a's cluster
        cx.feedback(b.node_id, a.cluster_id, 1.0)
        cx.feedback(d.node_id, a.cluster_id, 1.0)
    for i in range(150):  # d fires three times as often as b under that cluster
        e = cx.excite(v(20, 0.1) if i % 4 else v(10, 0.1), 3.0 + i)
        assert e.cluster_id == a.cluster_id
    assert cx.mode_node(a.cluster_id) == d.node_id
    mp = cx.mode_position(a.cluster_id)
    assert np.array_equal(mp, pos(cx, d.node_id))
    mp[:] = -1  # a copy
    assert not np.array_equal(pos(cx, d.node_id), mp)
    row = cx.mode_link[cx.cluster_slot[a.cluster_id], : cx.n_hi]
    assert row.sum() == pytest.approx(1.0, abs=1e-5)
    assert cx.mode_node(10_000) is None and cx.mode_position(10_000) is None


def test_mode_link_row_sums_to_one_after_its_mode_node_was_deleted():
    cx = make(initial_nodes=3, epoch=10, prune_every=0.1, prune_nodes_after=1.0, prune_clusters_after=1.0)
    a = cx.excite(v(0, 0), 0.0)  # cluster C (a's own); a is its only mode node
    b = cx.excite(v(10, 0), 1.0)
    cx.excite(v(100, 0), 2.0)
    for i in range(15):  # a goes unused (pruned); b is fed back into C but does not fire
        cx.excite(v(100, 0), 3.0 + i)
        cx.feedback(b.node_id, a.cluster_id, 0.0)
    assert a.node_id not in cx.node_slot and a.cluster_id in cx.cluster_slot
    e = cx.excite(v(10, 0), 20.0)
    assert (e.node_id, e.cluster_id) == (b.node_id, a.cluster_id)
    assert cx.mode_node(a.cluster_id) == b.node_id
    row = cx.mode_link[cx.cluster_slot[a.cluster_id], : cx.n_hi]
    assert row.sum() == pytest.approx(1.0, abs=1e-5)


# --------------------------------------------------------------------------- invariants
def _busy(seed: int = 0, dim: int = 4) -> Cortex:
    """A cortex with random stimuli, random feedback and real maintenance (prune + grow)."""
    rng = np.random.default_rng(seed)
    cx = Cortex("v", dim, CortexSettings(initial_nodes=10, mature_feedbacks=3, split_min_samples=2,
                                         split_threshold=0.05, prune_every=0.25, grow_every=0.3,
                                         prune_nodes_after=1.0, prune_clusters_after=0.5), epoch=100)
    centres = rng.normal(size=(4, dim)) * 5
    for i in range(800):
        e = cx.excite(centres[rng.integers(4)] + rng.normal(size=dim), float(i))
        ids = cx.alive_cluster_ids()
        if rng.random() < 0.8 and ids.size:
            cx.feedback(e.node_id, int(rng.choice(ids[: max(1, ids.size // 2)])), float(rng.random()))
    return cx


def test_link_rows_of_alive_nodes_sum_to_one_and_dead_slots_are_clear():
    cx = _busy()
    assert cx.counters.pruned_clusters > 0 and cx.counters.splits > 0  # maintenance really ran
    hi, chi = cx.n_hi, cx.c_hi
    alive = cx.node_id[:hi] >= 0
    sums = cx.link[:hi, :chi].sum(axis=1)
    assert np.allclose(sums[alive], 1.0, atol=1e-4)
    assert (sums[~alive] == 0).all()
    dead_c = cx.cluster_id[:chi] < 0
    assert (cx.link[:hi, :chi][:, dead_c] == 0).all()
    assert (cx.mode_link[:chi][dead_c] == 0).all()
    assert (cx.link[:hi, :chi] >= 0).all()
    # every alive node's class is an alive cluster
    strongest = cx.link[:hi, :chi].argmax(axis=1)[alive]
    assert (cx.cluster_id[strongest] >= 0).all()


def test_mode_link_rows_sum_to_one_or_zero():
    cx = _busy(seed=1)
    chi, hi = cx.c_hi, cx.n_hi
    sums = cx.mode_link[:chi, :hi].sum(axis=1)
    assert np.all((np.abs(sums - 1) < 1e-4) | (sums == 0)), sums
    dead_n = cx.node_id[:hi] < 0
    assert (cx.mode_link[:chi, :hi][:, dead_n] == 0).all()


def test_slot_maps_agree_with_id_arrays():
    cx = _busy(seed=2)
    for nid, slot in cx.node_slot.items():
        assert cx.node_id[slot] == nid
    for cid, slot in cx.cluster_slot.items():
        assert cx.cluster_id[slot] == cid
    assert set(cx.node_slot) == set(cx.node_id[: cx.n_hi][cx.node_id[: cx.n_hi] >= 0].tolist())
    assert cx.alive_cluster_ids().tolist() == sorted(cx.cluster_slot)


# --------------------------------------------------------------------------- pruning
def test_unused_clusters_are_pruned_after_prune_clusters_after_epochs():
    # epoch 20, clusters unused for more than 0.5 * 20 = 10 stimuli die; prune at every stimulus
    cx = make(initial_nodes=3, epoch=20, prune_every=0.05, prune_clusters_after=0.5)
    a = cx.excite(v(0, 0), 0.0)  # step 0
    b = cx.excite(v(10, 0), 1.0)  # step 1
    d = cx.excite(v(20, 0), 2.0)
    cx.drain_changes()
    while cx.step < 10:
        cx.excite(v(20, 0.1), float(cx.step))
    assert a.cluster_id in cx.cluster_slot  # unused for exactly 10: still alive
    cx.excite(v(20, 0.1), 11.0)  # step 11: a's cluster is 11 stimuli old
    assert a.cluster_id not in cx.cluster_slot and b.cluster_id in cx.cluster_slot
    cx.excite(v(20, 0.1), 12.0)
    assert b.cluster_id not in cx.cluster_slot
    # its node had only that cluster: gone too
    assert a.node_id not in cx.node_slot and b.node_id not in cx.node_slot
    assert cx.alive_cluster_ids().tolist() == [d.cluster_id]
    assert cx.counters.pruned_clusters == 2 and cx.counters.pruned_nodes == 2
    assert cx.mode_node(a.cluster_id) is None
    nodes, clusters = cx.assign(np.array([[0, 0], [10, 0], [30, 0]], np.float32))
    assert set(clusters.tolist()) == {d.cluster_id}
    deleted = [c for ch in cx.drain_changes() for c in ch.deleted]
    assert sorted(deleted) == sorted([a.cluster_id, b.cluster_id])


def test_feedback_keeps_a_cluster_alive():
    # clusters unused for more than 5 stimuli die; a's cluster is only ever fed back (through b)
    cx = make(initial_nodes=3, epoch=10, prune_every=0.1, prune_clusters_after=0.5)
    a = cx.excite(v(0, 0), 0.0)
    b = cx.excite(v(10, 0), 1.0)
    d = cx.excite(v(20, 0), 2.0)
    for i in range(30):
        cx.excite(v(20, 0.1), 3.0 + i)  # only d fires
        if i % 3 == 0:
            cx.feedback(b.node_id, a.cluster_id, 0.0)
    assert a.cluster_id in cx.cluster_slot
    assert b.cluster_id not in cx.cluster_slot  # neither fired nor fed back
    assert d.cluster_id in cx.cluster_slot
    assert link(cx, b.node_id, a.cluster_id) == pytest.approx(1.0)  # b's links renormalised


def test_unused_nodes_are_pruned_after_prune_nodes_after_epochs():
    cx = make(initial_nodes=3, epoch=10, prune_every=0.1, prune_nodes_after=1.0)
    a = cx.excite(v(0, 0), 0.0)
    b = cx.excite(v(10, 0), 1.0)
    cx.excite(v(20, 0), 2.0)
    for i in range(30):  # a's cluster survives through b, but a itself never fires
        cx.feedback(b.node_id, a.cluster_id, 0.0)
        cx.excite(v(10, 0.1), 3.0 + i)
    assert a.cluster_id in cx.cluster_slot
    assert a.node_id not in cx.node_slot
    assert b.node_id in cx.node_slot


def test_pruning_reaches_the_cdz_through_cluster_changes():
    """Cortex -> ClusterChange -> CDZ: the deleted clusters' rows and columns are gone."""
    cx = make(initial_nodes=3, epoch=20, prune_every=0.05, prune_clusters_after=0.5)
    other = Cortex("w", 2, CortexSettings(initial_nodes=1), epoch=10_000)
    cdz = CDZ(("v", "w"), CDZSettings(backward_gain=1.0))
    w0 = other.excite(v(0, 0), 0.0)
    for ch in other.drain_changes():
        cdz.apply(ch)
    t = 0.0
    seen = []
    for z in (v(0, 0), v(10, 0), v(20, 0)):
        seen.append(cx.excite(z, t))
        for ch in cx.drain_changes():
            cdz.apply(ch)
        cdz.excite(seen[-1])
        cdz.excite(other.excite(v(0, 0), t))
        t += 10.0
    assert cdz.weights("w", "v")[2].tolist() == [e.cluster_id for e in seen]
    assert cdz.recall("w", w0.cluster_id)["v"] in {e.cluster_id for e in seen}
    for i in range(20):  # only the last visual node is used from now on
        e = cx.excite(v(20, 0.1), t)
        for ch in cx.drain_changes():
            cdz.apply(ch)
        cdz.excite(e)
        t += 10.0
    dead = {seen[0].cluster_id, seen[1].cluster_id}
    assert not dead & set(cx.cluster_slot)
    mat, rows, cols = cdz.weights("w", "v")
    assert cols.tolist() == [seen[2].cluster_id]
    assert np.allclose(mat.sum(axis=1), 1.0)
    mat, rows, cols = cdz.weights("v", "w")
    assert rows.tolist() == [seen[2].cluster_id]
    assert cdz.recall("w", w0.cluster_id) == {"v": seen[2].cluster_id}
    for c in dead:
        assert cdz.recall("v", c) == {"w": None}


# --------------------------------------------------------------------------- growth
def _ambiguous(cx: Cortex, n: int = 10, seed: int = 0):
    """Seeds a (-10, 0), b (10, 0), x (0, 0); x is fed back towards a's cluster for stimuli
    on its left and towards b's for stimuli on its right."""
    a = cx.excite(v(-10, 0), 0.0)
    b = cx.excite(v(10, 0), 1.0)
    x = cx.excite(v(0, 0), 2.0)
    rng = np.random.default_rng(seed)
    left, right = [], []
    for i in range(n):
        for side, acc, target in ((-1.0, left, a), (1.0, right, b)):
            z = v(side + 0.3 * rng.normal(), 0.3 * rng.normal())
            e = cx.excite(z, 3.0 + i)
            assert e.node_id == x.node_id
            acc.append(z)
            cx.feedback(x.node_id, target.cluster_id, 0.5)
    return a, b, x, np.mean(left, axis=0), np.mean(right, axis=0)


GROW = dict(initial_nodes=3, mature_feedbacks=5, split_min_samples=3, split_threshold=0.01)


def test_ambiguous_node_splits_at_the_means_with_new_clusters():
    cx = make(**GROW)
    a, b, x, left, right = _ambiguous(cx)
    cx.drain_changes()
    seen_nodes, seen_clusters = cx.next_node_id, cx.next_cluster_id
    assert cx.grow_() == 1
    assert cx.counters.splits == 1
    assert x.node_id not in cx.node_slot
    new = sorted(i for i in cx.node_slot if i >= seen_nodes)
    assert len(new) == 2 and cx.n_nodes == 4
    got = sorted((tuple(np.round(pos(cx, i), 4)) for i in new))
    want = sorted((tuple(np.round(m, 4)) for m in (left, right)))
    assert np.allclose(got, want, atol=1e-4)
    created = [c for ch in cx.drain_changes() for c in ch.created]
    assert len(created) == 2 and min(created) >= seen_clusters
    # each child is alone in its own new cluster, and classifies its side
    for i in new:
        row = cx.link[cx.node_slot[i], : cx.c_hi]
        assert row.max() == 1.0 and int(cx.cluster_id[row.argmax()]) in created
    _, cl = cx.assign(np.stack([left, right]))
    assert set(cl.tolist()) == set(created)
    assert cx.grow_() == 0  # statistics were consumed


def test_growth_happens_on_schedule_only_when_enabled():
    results = {}
    for enabled in (True, False):
        # epoch 10, grow every 2.5 epochs = 25 stimuli: 3 seeds + 22 stimuli reach it
        cx = make(epoch=10, grow_every=2.5, **GROW)
        cx.growth_enabled = enabled
        _ambiguous(cx, n=11)
        assert cx.step == 25
        results[enabled] = (cx.counters.splits, cx.n_nodes)
    assert results[True] == (1, 4)
    assert results[False] == (0, 3)


def test_unambiguous_or_young_nodes_do_not_split():
    cx = make(**{**GROW, "mature_feedbacks": 1000})
    _ambiguous(cx)
    assert cx.grow_() == 0
    cx = make(**{**GROW, "split_threshold": 0.99})
    _ambiguous(cx)
    assert cx.grow_() == 0
    cx = make(**{**GROW, "split_min_samples": 50})
    _ambiguous(cx)
    assert cx.grow_() == 0


def test_max_nodes_stops_growth():
    cx = make(**{**GROW, "max_nodes": 3})
    _ambiguous(cx)
    assert cx.grow_() == 0 and cx.n_nodes == 3
    cx = make(**{**GROW, "max_nodes": 4})
    _ambiguous(cx)
    assert cx.grow_() == 1 and cx.n_nodes == 4


def _three_way(cx: Cortex, nodes: list[int], clusters: list[int]) -> None:
    """Feed each node back towards three clusters with distinct encodings (4 each)."""
    for nid in nodes:
        for k, c in enumerate(clusters):
            for j in range(4):
                cx.last_z[cx.node_slot[nid]] = v(k, j)
                cx.feedback(nid, c, 0.0)


def test_max_nodes_never_exceeded_by_three_way_splits():
    def two_candidates(max_nodes: int) -> Cortex:
        cx = make(initial_nodes=4, max_nodes=max_nodes, mature_feedbacks=1, split_min_samples=1,
                  split_threshold=1e-3)
        excs = [cx.excite(v(10 * i, 0), float(i)) for i in range(4)]
        ids = [e.cluster_id for e in excs]
        _three_way(cx, [excs[0].node_id], ids[1:])
        _three_way(cx, [excs[1].node_id], [ids[0], ids[2], ids[3]])
        return cx

    roomy = two_candidates(max_nodes=100)  # without the cap both nodes split three ways: 4 - 2 + 6 = 8
    assert roomy.grow_() == 2 and roomy.n_nodes == 8
    cx = two_candidates(max_nodes=7)
    assert cx.grow_() == 1 and cx.counters.splits == 1  # one split happened; the second would make 8
    assert cx.n_nodes == 6 <= 7


def test_splits_per_round_are_limited():
    # budget = max(frac * epoch, 5) = 5 splits; eight 2-way candidates
    cx = make(initial_nodes=10, mature_feedbacks=1, split_min_samples=1, split_threshold=1e-3,
              split_per_round_frac=1e-3, epoch=100)
    excs = [cx.excite(v(10 * i, 0), float(i)) for i in range(10)]
    for e in excs[:8]:
        for k, c in enumerate((excs[8].cluster_id, excs[9].cluster_id)):
            for j in range(3):
                cx.last_z[cx.node_slot[e.node_id]] = v(10 * e.node_id + k, j)
                cx.feedback(e.node_id, c, 0.0)
    assert cx.grow_() == 5
    assert cx.n_nodes == 15


def test_ids_are_never_reused_after_prune_and_grow():
    cx = _busy(seed=4)
    assert cx.counters.pruned_nodes > 0 and cx.counters.splits > 0
    seen_nodes = set(range(cx.next_node_id))
    seen_clusters = set(range(cx.next_cluster_id))
    alive_nodes, alive_clusters = set(cx.node_slot), set(cx.cluster_slot)
    assert alive_nodes < seen_nodes and alive_clusters < seen_clusters  # some were deleted
    # force another prune + split round on fresh ambiguity
    ids = cx.alive_cluster_ids()
    nid = max(cx.node_slot)
    for k, c in enumerate(ids[:2]):
        for j in range(30):
            cx.last_z[cx.node_slot[nid]] = np.full(cx.dim, k + 0.01 * j, np.float32)
            cx.feedback(nid, int(c), 0.0)
    cx.node_feedbacks[cx.node_slot[nid]] = 100
    cx.prune_()
    assert cx.grow_() >= 1
    new_nodes = set(cx.node_slot) - alive_nodes
    new_clusters = set(cx.cluster_slot) - alive_clusters
    assert new_nodes and new_clusters
    assert min(new_nodes) > max(seen_nodes)
    assert min(new_clusters) > max(seen_clusters)


def test_capacity_grows_beyond_start_size():
    rng = np.random.default_rng(0)
    cx = make(dim=3, initial_nodes=700)
    pts = rng.normal(size=(700, 3)).astype(np.float32) * 10
    for i, p in enumerate(pts):
        cx.excite(p, float(i))
    assert cx.n_nodes == 700 and cx.capacity[0] >= 700 and cx.capacity[1] >= 700
    nodes, clusters = cx.assign(pts)
    assert nodes.tolist() == list(range(700))
    assert clusters.tolist() == [cx.link[cx.node_slot[i]].argmax() for i in range(700)]


# --------------------------------------------------------------------------- reading and checkpoints
def test_assign_and_mode_lookups_change_nothing():
    cx = _busy(seed=5)
    before = snapshot(cx)
    rng = np.random.default_rng(1)
    cx.assign(rng.normal(size=(100, cx.dim)))
    for c in list(cx.cluster_slot) + [-1, 10_000]:
        cx.mode_node(c)
        cx.mode_position(c)
    cx.alive_cluster_ids()
    assert_same_state(before, snapshot(cx))


def _drive(cx: Cortex, seed: int, n: int, t0: float) -> list[tuple]:
    rng = np.random.default_rng(seed)
    centres = np.random.default_rng(99).normal(size=(4, cx.dim)) * 5
    out = []
    for i in range(n):
        e = cx.excite(centres[rng.integers(4)] + rng.normal(size=cx.dim), t0 + i)
        ids = cx.alive_cluster_ids()
        fb = cx.feedback(e.node_id, int(rng.choice(ids[: max(1, ids.size // 2)])), float(rng.random()))
        out.append((e.node_id, e.cluster_id, fb, tuple(c for ch in cx.drain_changes() for c in ch.created + ch.deleted)))
    return out


def test_state_dict_round_trip_behaves_identically():
    src = _busy(seed=6)
    src.drain_changes()
    dst = Cortex("v", src.dim, src.settings, src.epoch)
    dst.load_state_dict(snapshot(src))
    assert_same_state(snapshot(src), snapshot(dst))
    assert (dst.step, dst.next_node_id, dst.next_cluster_id) == (src.step, src.next_node_id, src.next_cluster_id)
    assert _drive(src, 1, 300, 1000.0) == _drive(dst, 1, 300, 1000.0)
    probe = np.random.default_rng(3).normal(size=(64, src.dim)) * 5
    for got, want in zip(dst.assign(probe), src.assign(probe)):
        assert np.array_equal(got, want)


def test_load_state_dict_rejects_other_dimension():
    src = _busy(seed=7)
    with pytest.raises(ValueError):
        Cortex("v", src.dim + 1, src.settings, src.epoch).load_state_dict(snapshot(src))


def _freed_then_split(cx: Cortex):
    p1 = cx.excite(v(50, 50), 0.0)
    p2 = cx.excite(v(-50, 50), 1.0)
    a = cx.excite(v(-10, 0), 2.0)
    b = cx.excite(v(10, 0), 3.0)
    x = cx.excite(v(0, 0), 4.0)
    rng = np.random.default_rng(0)
    for i in range(20):  # every stimulus of x is fed back towards both a's and b's clusters
        e = cx.excite(rng.normal(size=2).astype(np.float32) * 0.5, 5.0 + i)
        assert e.node_id == x.node_id
        cx.feedback(x.node_id, a.cluster_id, 0.5)
        cx.feedback(x.node_id, b.cluster_id, 0.5)
    cx.prune_()  # frees the slots of the unused nodes
    assert p1.node_id not in cx.node_slot and p2.node_id not in cx.node_slot


def test_resume_after_pruning_is_identical_to_uninterrupted_run():
    s = dict(initial_nodes=5, mature_feedbacks=5, split_min_samples=3, split_threshold=0.01,
             prune_nodes_after=1.0, prune_clusters_after=1.0)
    src = make(**s)
    _freed_then_split(src)
    dst = make(**s)
    dst.load_state_dict(snapshot(src))
    assert src.grow_() == dst.grow_() == 1
    child = max(src.node_slot)
    z = pos(src, child).copy()  # both children sit at the same mean: a distance tie
    assert src.excite(z, 100.0) == dst.excite(z, 100.0)
    assert_same_state(snapshot(src), snapshot(dst))


@pytest.mark.parametrize("fed", [0, 1, 3, 40])
def test_next_feedback_bound_is_what_a_fully_certain_connection_adds(fed):
    """The bound the lossless sequencer runs ahead on: exactly the next feedback's addition when the
    connection is fully certain, never less than a less certain one's, and below 4 * feedback_lr."""
    lr = 0.05
    cx = make(initial_nodes=2, feedback_lr=lr, age_factor=25.0)
    a = cx.excite(v(0, 0), 0.0)
    b = cx.excite(v(10, 0), 1.0)
    for _ in range(fed):
        cx.feedback(a.node_id, a.cluster_id, 0.5)
    bound = cx.next_feedback_bound(a.node_id)
    added = {}
    for conn in (1.0, 0.3):
        probe = make(initial_nodes=2, feedback_lr=lr, age_factor=25.0)
        probe.load_state_dict(cx.state_dict())
        before = link(probe, a.node_id, b.cluster_id)
        probe.feedback(a.node_id, b.cluster_id, conn)
        after = link(probe, a.node_id, b.cluster_id)
        added[conn] = (after - before) / (1.0 - after)  # rows sum to 1: after = (before + x) / (1 + x)
    assert added[1.0] == pytest.approx(bound, rel=1e-4)
    assert added[0.3] <= bound + 1e-7 and bound <= 4 * lr
    assert (bound < 2 * lr) == (fed < 5)  # a young node's certainty is small
