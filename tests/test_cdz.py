"""agent.core.cdz: the window, the direction rule, row normalisation, feedback, pruning, recall.

Pure logic on a bare CDZ fed hand-made excitations (docs/LEARNING.md steps 5-7).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
import pytest

from agent.core.cdz import CDZ
from agent.core.config import CDZSettings
from agent.core.messages import ClusterChange, Excitation, Feedback, to_ns

LR = 0.02
B = 1.0


def settings(**kw) -> CDZSettings:
    base = dict(window_s=B, kernel="flat", cdz_lr=LR, backward_gain=0.5, age_factor=25.0, reorder_slack_s=0.5)
    base.update(kw)
    return CDZSettings(**base)


def exc(m: str, c: int, t: float, node: int = 0, s: float = 1.0, seq: int = 0) -> Excitation:
    return Excitation(modality=m, t_ns=to_ns(t), seq=seq, cluster_id=c, node_id=node, strength=s)


class Item(NamedTuple):
    """One node's feedback, read out of the CDZ's per-modality `Feedback`."""

    modality: str
    node_id: int
    cluster_id: int
    certainty: float


def items(feedback: list[Feedback]) -> list[Item]:
    return [Item(f.modality, *x) for f in feedback for x in zip(f.node_ids, f.cluster_ids, f.certainties)]


def w(cdz: CDZ, a: str, ca: int, b: str, cb: int) -> float:
    """W[a->b] between two cluster ids (0 when either is unknown)."""
    ra = cdz.clusters[a].slot.get(ca)
    rb = cdz.clusters[b].slot.get(cb)
    if ra is None or rb is None:
        return 0.0
    return float(cdz.W[(a, b)][ra, rb])


def with_competitors(cdz: CDZ, t0: float = 0.0) -> None:
    """Give rows a:0 and b:0 an existing target (weight 1), so a later increment is visible.

    After this, W[a0 -> b9] = 1 and W[b0 -> a9] = 1; everything happens at t0 and is
    forgotten before the next test pair (t0 + 100).
    """
    cdz.excite(exc("a", 0, t0))
    cdz.excite(exc("b", 9, t0))
    cdz.excite(exc("b", 0, t0 + 10))
    cdz.excite(exc("a", 9, t0 + 10))
    assert w(cdz, "a", 0, "b", 9) == pytest.approx(1.0)
    assert w(cdz, "b", 0, "a", 9) == pytest.approx(1.0)


def snapshot(cdz: CDZ) -> dict[str, np.ndarray]:
    return {k: v.copy() for k, v in cdz.state_dict().items()}


def assert_same_state(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert a[k].dtype == b[k].dtype and a[k].shape == b[k].shape, k
        assert a[k].tobytes() == b[k].tobytes(), k


# --------------------------------------------------------------------------- construction
def test_needs_two_distinct_modalities_and_a_known_kernel():
    with pytest.raises(ValueError):
        CDZ(("a",), settings())
    with pytest.raises(ValueError):
        CDZ(("a", "a"), settings())
    with pytest.raises(ValueError, match="kernel"):
        CDZ(("a", "b"), settings(kernel="box"))


# --------------------------------------------------------------------------- window
def test_a_sense_that_gives_no_feedback_is_still_taught_and_still_connected():
    """`no_feedback_from`: a reward's cluster names no digit, so it tells the other side nothing,
    while the other side still tells it which of its clusters to join."""
    cdz = CDZ(("a", "b"), settings(no_feedback_from=("b",)))
    cdz.excite(exc("a", 3, 0.0, node=30))
    fb = items(cdz.excite(exc("b", 7, 0.2, node=70)))
    assert [(f.modality, f.node_id, f.cluster_id) for f in fb] == [("b", 70, 7)]
    assert cdz.recall("a", 3) == {"b": 7} and cdz.recall("b", 7) == {"a": 3}


@pytest.mark.parametrize("kernel", ["flat", "gaussian"])
def test_pair_outside_window_changes_nothing_and_gives_no_feedback(kernel):
    cdz = CDZ(("a", "b"), settings(kernel=kernel))
    cdz.excite(exc("a", 0, 0.0))
    before = {p: m.copy() for p, m in cdz.W.items()}
    fb = items(cdz.excite(exc("b", 0, B + 1e-3)))
    assert fb == []
    assert cdz.counters.pairs == 0
    for p in cdz.W:
        assert np.array_equal(cdz.W[p], before[p])
    assert cdz.recall("a", 0) == {"b": None}


@pytest.mark.parametrize("kernel", ["flat", "gaussian"])
@pytest.mark.parametrize("dt", [0.0, 0.4, B])
def test_pair_inside_window_connects_and_gives_feedback(kernel, dt):
    cdz = CDZ(("a", "b"), settings(kernel=kernel))
    cdz.excite(exc("a", 3, 0.0, node=30))
    fb = items(cdz.excite(exc("b", 7, dt, node=70)))
    assert cdz.counters.pairs == 1
    assert w(cdz, "a", 3, "b", 7) == pytest.approx(1.0)
    assert cdz.recall("a", 3) == {"b": 7}
    # each side is told which of its own clusters the other side points to
    assert {(f.modality, f.node_id, f.cluster_id) for f in fb} == {("b", 70, 7), ("a", 30, 3)}


def test_pair_in_reverse_arrival_order_is_still_within_window():
    """Late delivery: the earlier excitation arrives second; event time decides."""
    cdz = CDZ(("a", "b"), settings())
    cdz.excite(exc("b", 1, 5.0))
    fb = items(cdz.excite(exc("a", 2, 4.2)))
    assert len(fb) == 2
    assert w(cdz, "a", 2, "b", 1) == pytest.approx(1.0)


def _increment(kernel: str, dt: float) -> float:
    """The raw increment a->b for one pair at distance dt, read back through the normalisation."""
    cdz = CDZ(("a", "b"), settings(kernel=kernel))
    with_competitors(cdz)
    cdz.excite(exc("a", 0, 100.0))
    cdz.excite(exc("b", 0, 100.0 + dt))
    x = w(cdz, "a", 0, "b", 0)  # = inc / (1 + inc)
    return x / (1.0 - x)


def test_gaussian_kernel_gives_smaller_increments_for_larger_dt_than_flat():
    flat_near, flat_far = _increment("flat", 0.2), _increment("flat", 0.9)
    gauss_near, gauss_far = _increment("gaussian", 0.2), _increment("gaussian", 0.9)
    assert flat_near == pytest.approx(LR, rel=1e-4)
    assert flat_far == pytest.approx(LR, rel=1e-4)
    assert gauss_far < gauss_near < flat_near
    sigma = B / 2
    assert gauss_near == pytest.approx(LR * math.exp(-0.5 * (0.2 / sigma) ** 2), rel=1e-4)
    assert gauss_far == pytest.approx(LR * math.exp(-0.5 * (0.9 / sigma) ** 2), rel=1e-4)


def test_kernel_is_zero_outside_window():
    for kernel in ("flat", "gaussian"):
        cdz = CDZ(("a", "b"), settings(kernel=kernel))
        assert cdz.kernel(B * 1.01) == 0.0
        assert cdz.kernel(0.0) == pytest.approx(1.0)
        assert cdz.kernel(B) > 0.0


def test_gaussian_kernel_with_zero_window_pairs_identical_times():
    """The seed's experiment used B = 0: only identical times pair; w(0) must be 1, not a crash."""
    cdz = CDZ(("a", "b"), settings(window_s=0.0, kernel="gaussian"))
    cdz.excite(exc("a", 0, 1.0))
    fb = items(cdz.excite(exc("b", 0, 1.0)))
    assert len(fb) == 2
    assert cdz.recall("a", 0) == {"b": 0}


# --------------------------------------------------------------------------- direction
@pytest.mark.parametrize("late_arrival", [False, True])
def test_earlier_to_later_grows_by_lr_and_reverse_by_backward_gain(late_arrival):
    gain = 0.25
    cdz = CDZ(("a", "b"), settings(backward_gain=gain))
    with_competitors(cdz)
    first, second = exc("a", 0, 100.0, s=0.5), exc("b", 0, 100.3, s=2.0)  # s * s' = 1
    for e in ((second, first) if late_arrival else (first, second)):
        cdz.excite(e)
    fwd = LR * 0.5 * 2.0
    back = fwd * gain
    assert w(cdz, "a", 0, "b", 0) == pytest.approx(fwd / (1 + fwd), rel=1e-5)
    assert w(cdz, "a", 0, "b", 9) == pytest.approx(1 / (1 + fwd), rel=1e-5)
    assert w(cdz, "b", 0, "a", 0) == pytest.approx(back / (1 + back), rel=1e-5)
    assert w(cdz, "b", 0, "a", 9) == pytest.approx(1 / (1 + back), rel=1e-5)


def test_strengths_multiply_the_increment():
    cdz = CDZ(("a", "b"), settings(backward_gain=0.0))
    with_competitors(cdz)
    cdz.excite(exc("a", 0, 100.0, s=3.0))
    cdz.excite(exc("b", 0, 100.1, s=0.5))
    inc = LR * 1.5
    assert w(cdz, "a", 0, "b", 0) == pytest.approx(inc / (1 + inc), rel=1e-5)


def test_equal_times_grow_both_directions_equally():
    cdz = CDZ(("a", "b"), settings(backward_gain=0.1))
    with_competitors(cdz)
    cdz.excite(exc("a", 0, 100.0))
    cdz.excite(exc("b", 0, 100.0))
    x = w(cdz, "a", 0, "b", 0)
    assert x == pytest.approx(LR / (1 + LR), rel=1e-5)
    assert w(cdz, "b", 0, "a", 0) == pytest.approx(x, rel=1e-6)


def test_backward_gain_zero_is_one_way_recall():
    """Bell (a) before food (b): the bell recalls food; food recalls nothing."""
    cdz = CDZ(("a", "b"), settings(backward_gain=0.0))
    cdz.excite(exc("a", 1, 0.0, node=10))
    fb = items(cdz.excite(exc("b", 2, 0.5, node=20)))
    assert cdz.recall("a", 1) == {"b": 2}
    assert cdz.recall("b", 2) == {"a": None}
    assert w(cdz, "b", 2, "a", 1) == 0.0
    # only the later side is told where it belongs; the earlier side gets nothing
    assert [(f.modality, f.node_id, f.cluster_id) for f in fb] == [("b", 20, 2)]
    many = cdz.recall_many("b", np.array([2]))
    assert many["a"].tolist() == [-1]


def test_backward_gain_zero_reverse_arrival_still_one_way():
    cdz = CDZ(("a", "b"), settings(backward_gain=0.0))
    cdz.excite(exc("b", 2, 0.5, node=20))  # arrives first, happened later
    fb = items(cdz.excite(exc("a", 1, 0.0, node=10)))
    assert cdz.recall("a", 1) == {"b": 2}
    assert cdz.recall("b", 2) == {"a": None}
    assert [(f.modality, f.node_id) for f in fb] == [("b", 20)]


def test_same_modality_excitations_never_pair():
    cdz = CDZ(("a", "b"), settings())
    cdz.excite(exc("a", 0, 0.0))
    assert cdz.excite(exc("a", 1, 0.0)) == []
    assert cdz.counters.pairs == 0


def test_unknown_modality_is_counted_not_fatal():
    cdz = CDZ(("a", "b"), settings())
    before = snapshot(cdz)
    assert cdz.excite(exc("z", 0, 0.0)) == []
    cdz.apply(ClusterChange(modality="z", created=(1,)))
    assert cdz.counters.unknown_modality == 2
    assert_same_state(before, snapshot(cdz))


# --------------------------------------------------------------------------- feedback
def test_feedback_names_the_strongest_cluster_and_its_certainty():
    cdz = CDZ(("a", "b"), settings(age_factor=4.0, backward_gain=1.0))
    fb = []
    for k in range(3):  # a:0 and b:5 together three times
        cdz.excite(exc("a", 0, 10.0 * k, node=1))
        fb = items(cdz.excite(exc("b", 5, 10.0 * k, node=2)))
    to_b = [f for f in fb if f.modality == "b"][0]
    assert (to_b.node_id, to_b.cluster_id) == (2, 5)
    # certainty = max_weight^2 * min(age / age_factor, 1): row a:0 has weight 1 and 3 updates
    assert to_b.certainty == pytest.approx(1.0 * 3 / 4.0)
    for _ in range(5):
        cdz.excite(exc("a", 0, 100.0 + 10 * _, node=1))
        fb = items(cdz.excite(exc("b", 5, 100.0 + 10 * _, node=2)))
    assert [f for f in fb if f.modality == "b"][0].certainty == pytest.approx(1.0)  # age capped


def test_feedback_goes_to_the_node_that_fired_even_if_it_points_elsewhere():
    """b:9 is a's strongest partner; a new pairing with b:4 still tells b's node to join b:9."""
    cdz = CDZ(("a", "b"), settings())
    for k in range(5):
        cdz.excite(exc("a", 0, 10.0 * k))
        cdz.excite(exc("b", 9, 10.0 * k))
    cdz.excite(exc("a", 0, 100.0))
    fb = items(cdz.excite(exc("b", 4, 100.0, node=44)))
    to_b = [f for f in fb if f.modality == "b"]
    assert [(f.node_id, f.cluster_id) for f in to_b] == [(44, 9)]


def test_recent_excitations_are_forgotten_beyond_window_and_slack():
    s = settings(window_s=1.0, reorder_slack_s=0.5)
    cdz = CDZ(("a", "b"), s)
    cdz.excite(exc("a", 0, 0.0))
    cdz.excite(exc("a", 1, 1.4))
    assert len(cdz.recent) == 2
    cdz.excite(exc("a", 2, 10.0))
    assert [e.cluster_id for e in cdz.recent] == [2]


def test_one_future_dated_excitation_does_not_stop_the_window_from_forgetting():
    """A clock far ahead once: the window stays bounded by event time, whatever the arrival order."""
    cdz = CDZ(("a", "b"), settings(window_s=1.0, reorder_slack_s=0.5))
    cdz.excite(exc("a", 0, 1e6))
    for k in range(2000):
        cdz.excite(exc("ab"[k % 2], k % 7, 10.0 + 0.25 * k))
    assert len(cdz.recent) <= 2


def test_a_late_excitation_is_kept_in_event_time_order():
    cdz = CDZ(("a", "b"), settings(window_s=1.0, reorder_slack_s=0.5))
    for m, c, t in (("a", 0, 0.0), ("b", 1, 1.0), ("a", 2, 0.6), ("b", 3, 3.0)):
        cdz.excite(exc(m, c, t))
    assert [e.t for e in cdz.recent] == [3.0]  # 0.0, 0.6 and 1.0 fell behind 3.0 - B - slack
    cdz.excite(exc("a", 4, 2.9))
    cdz.excite(exc("b", 5, 2.0))  # late but within the slack: kept, in its place
    assert [e.cluster_id for e in cdz.recent] == [5, 4, 3]


def test_a_flood_of_cluster_ids_is_refused_beyond_the_ceiling_and_counted():
    """Valid messages announcing 65,536 clusters must not grow the matrices past what a cortex holds."""
    cdz = CDZ(("a", "b"), settings(), max_clusters=1500)
    for m in ("a", "b"):
        cdz.apply(ClusterChange(modality=m, created=tuple(range(65536))))
    assert all(w.shape[0] <= 1500 and w.shape[1] <= 1500 for w in cdz.W.values())
    assert cdz.counters.refused == 2 * (65536 - 1500)
    assert not cdz.excite(exc("a", 60000, 1.0)) and cdz.counters.refused == 2 * (65536 - 1500) + 1
    cdz.apply(ClusterChange(modality="a", deleted=(0,)))  # a freed row takes a new cluster again
    cdz.excite(exc("a", 60000, 2.0))
    cdz.excite(exc("b", 1, 2.1))
    assert cdz.W[("a", "b")][cdz.clusters["a"].slot[60000], cdz.clusters["b"].slot[1]] > 0


# --------------------------------------------------------------------------- invariants
def _random_cdz(mods=("a", "b", "c"), n=600, seed=0, deletions=True) -> CDZ:
    rng = np.random.default_rng(seed)
    cdz = CDZ(mods, settings(kernel="gaussian", backward_gain=0.3))
    next_id = {m: 8 for m in mods}
    alive = {m: list(range(8)) for m in mods}
    for m in mods:
        cdz.apply(ClusterChange(modality=m, created=tuple(alive[m])))
    t = 0.0
    for k in range(n):
        t += rng.exponential(0.3)
        m = mods[rng.integers(len(mods))]
        cdz.excite(exc(m, int(rng.choice(alive[m])), t + rng.uniform(-0.4, 0.4), s=float(rng.uniform(0.2, 2.0))))
        if deletions and k % 50 == 49:
            m = mods[rng.integers(len(mods))]
            dead = int(rng.choice(alive[m]))
            alive[m].remove(dead)
            alive[m].append(next_id[m])
            cdz.apply(ClusterChange(modality=m, created=(next_id[m],), deleted=(dead,)))
            next_id[m] += 1
    return cdz


def test_rows_towards_each_target_modality_sum_to_one_or_zero():
    cdz = _random_cdz()
    assert cdz.counters.pairs > 100
    nonempty = 0
    for a, b in cdz.pairs:
        mat, _, _ = cdz.weights(a, b)
        sums = mat.sum(axis=1)
        assert np.all((np.abs(sums - 1) < 1e-4) | (sums == 0)), (a, b, sums)
        assert (mat >= 0).all()
        nonempty += int((sums > 0).sum())
    assert nonempty > 10


def test_every_ordered_pair_of_three_modalities_has_weights():
    cdz = _random_cdz(deletions=False)
    assert sorted(cdz.pairs) == sorted((a, b) for a in "abc" for b in "abc" if a != b)
    for a, b in cdz.pairs:
        mat, rows, cols = cdz.weights(a, b)
        assert mat.shape == (8, 8)
        assert mat.sum() > 0, (a, b)


def test_recall_many_agrees_with_recall():
    cdz = _random_cdz()
    for m in cdz.modalities:
        ids = np.array(list(range(-1, 30)) * 2, np.int64)  # includes unknown and deleted ids, repeats
        many = cdz.recall_many(m, ids)
        for b, got in many.items():
            assert got.shape == ids.shape
            want = [cdz.recall(m, int(c))[b] for c in ids]
            assert got.tolist() == [-1 if x is None else x for x in want]
    assert cdz.recall_many("a", np.array([], np.int64))["b"].shape == (0,)


# --------------------------------------------------------------------------- pruning
def test_deleted_cluster_rows_and_columns_vanish_and_rows_renormalise():
    cdz = CDZ(("a", "b"), settings(backward_gain=1.0))
    for k in range(3):
        cdz.excite(exc("a", 0, 10.0 * k))
        cdz.excite(exc("b", 1, 10.0 * k))
    cdz.excite(exc("a", 0, 50.0))
    cdz.excite(exc("b", 2, 50.0))  # a:0 -> {b:1 strong, b:2 weak}
    assert cdz.recall("a", 0) == {"b": 1}
    cdz.apply(ClusterChange(modality="b", deleted=(1,)))
    mat, rows, cols = cdz.weights("a", "b")
    assert 1 not in cols.tolist()
    assert cdz.recall("a", 0) == {"b": 2}  # the survivor wins, and the row sums to 1 again
    assert w(cdz, "a", 0, "b", 2) == pytest.approx(1.0)
    mat, rows, cols = cdz.weights("b", "a")
    assert 1 not in rows.tolist()
    assert cdz.recall("b", 1) == {"a": None}


def test_cluster_whose_partners_are_all_deleted_recalls_nothing():
    cdz = CDZ(("a", "b"), settings())
    cdz.excite(exc("a", 0, 0.0))
    cdz.excite(exc("b", 1, 0.0))
    cdz.apply(ClusterChange(modality="b", deleted=(1,)))
    assert cdz.recall("a", 0) == {"b": None}
    assert cdz.recall_many("a", np.array([0]))["b"].tolist() == [-1]
    mat, _, _ = cdz.weights("a", "b")
    assert mat.sum() == 0
    # and learning goes on from the empty row
    cdz.excite(exc("a", 0, 10.0))
    cdz.excite(exc("b", 3, 10.0))
    assert cdz.recall("a", 0) == {"b": 3}


def test_deletion_drops_pending_excitations_of_the_deleted_cluster():
    cdz = CDZ(("a", "b"), settings())
    cdz.excite(exc("a", 0, 0.0))
    cdz.apply(ClusterChange(modality="a", deleted=(0,)))
    assert cdz.excite(exc("b", 1, 0.1)) == []
    assert cdz.recall("b", 1) == {"a": None}


def test_new_cluster_in_a_freed_row_starts_empty():
    cdz = CDZ(("a", "b"), settings(backward_gain=1.0))
    cdz.excite(exc("a", 0, 0.0))
    cdz.excite(exc("b", 1, 0.0))
    row = cdz.clusters["a"].slot[0]
    cdz.apply(ClusterChange(modality="a", deleted=(0,)))
    cdz.apply(ClusterChange(modality="a", created=(5,)))
    assert cdz.clusters["a"].slot[5] == row  # the row is reused...
    assert cdz.recall("a", 5) == {"b": None}  # ...but nothing of cluster 0 is inherited
    assert cdz.recall("b", 1) == {"a": None}
    assert cdz.age[("a", "b")][row] == 0


def test_capacity_grows_beyond_start_size():
    cdz = CDZ(("a", "b"), settings())
    n = 600  # more than the 512 starting rows
    for k in range(n):
        cdz.excite(exc("a", k, 10.0 * k))
        cdz.excite(exc("b", 10_000 + k, 10.0 * k))
    for k in (0, 300, n - 1):
        assert cdz.recall("a", k) == {"b": 10_000 + k}
        assert cdz.recall("b", 10_000 + k) == {"a": k}


# --------------------------------------------------------------------------- checkpoint
def test_state_dict_round_trip_behaves_identically():
    src = _random_cdz(n=400, seed=3)
    dst = CDZ(src.modalities, src.settings)
    dst.load_state_dict(snapshot(src))
    assert_same_state(snapshot(src), snapshot(dst))
    rng = np.random.default_rng(9)
    t = src.t_max
    for k in range(200):
        t += rng.exponential(0.3)
        m = "abc"[rng.integers(3)]
        e = exc(m, int(rng.integers(0, 12)), t, node=k)
        assert src.excite(e) == dst.excite(e)
    assert_same_state(snapshot(src), snapshot(dst))
    for m in "abc":
        ids = np.arange(-1, 20)
        for b, got in src.recall_many(m, ids).items():
            assert np.array_equal(got, dst.recall_many(m, ids)[b])


def test_reading_changes_nothing():
    cdz = _random_cdz(n=300)
    before = snapshot(cdz)
    for m in cdz.modalities:
        for c in range(-1, 20):
            cdz.recall(m, c)
        cdz.recall_many(m, np.arange(-1, 20))
        for b in cdz.modalities:
            if b != m:
                cdz.weights(m, b)
    assert_same_state(before, snapshot(cdz))



def test_late_excitation_of_a_deleted_cluster_is_ignored_and_counted():
    cdz = CDZ(("visual", "audio"), settings())
    cdz.excite(exc("visual", 1, 0.0))
    cdz.excite(exc("audio", 2, 0.1))
    cdz.apply(ClusterChange(modality="visual", deleted=(1,)))
    before = snapshot(cdz)
    assert cdz.excite(exc("visual", 1, 0.2)) == []  # arrives after its deletion
    assert cdz.excite(exc("visual", -1, 0.2)) == []  # never a valid id
    assert cdz.counters.stale == 2
    assert_same_state(before, snapshot(cdz))
    cdz.apply(ClusterChange(modality="visual", created=(1,)))  # a stale "created" cannot revive it either
    assert 1 not in cdz.clusters["visual"].slot


def test_a_vanishing_strength_never_makes_nan_weights():
    cdz = CDZ(("visual", "audio"), settings())
    cdz.excite(exc("visual", 1, 0.0, s=1e-30))
    cdz.excite(exc("audio", 2, 0.1, s=1e-30))  # amount 0.02 * 1e-60 underflows in float32
    for (a, b) in cdz.pairs:
        assert np.isfinite(cdz.W[(a, b)]).all()
    assert cdz.recall("visual", 1)["audio"] is None  # nothing was learned, nothing is recalled


def test_feedback_comes_as_one_message_per_sense_stamped_with_the_excitation():
    """The CDZ's output is the wire's `Feedback` itself: one per sense that gets any, carrying the
    event time and sequence number of the excitation that caused it, nodes in the order pairs formed."""
    cdz = CDZ(("a", "b", "c"), settings())
    cdz.excite(exc("a", 3, 0.0, node=30, seq=0))
    cdz.excite(exc("c", 8, 0.05, node=80, seq=1))
    out = cdz.excite(exc("b", 7, 0.1, node=70, seq=2))
    assert all(isinstance(f, Feedback) for f in out)
    assert sorted(f.modality for f in out) == ["a", "b", "c"]
    assert {(f.t_ns, f.seq) for f in out} == {(to_ns(0.1), 2)}
    by = {f.modality: f for f in out}
    assert by["b"].node_ids == (70, 70) and by["b"].cluster_ids == (7, 7)  # told once by a, once by c
    assert by["a"].node_ids == (30,) and by["c"].node_ids == (80,)
    assert all(0.0 <= c <= 1.0 for f in out for c in f.certainties)
