"""agent.core.brain: the one-process brain end to end on tiny synthetic encodings.

Each modality's "training set" is a few gaussian blobs in 8-d (one per class); the
teacher pairs blobs of the same class in time. Labels are read only by the checks.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from agent.core.brain import Brain, learn_stream
from agent.core.config import CDZSettings, Config, CortexSettings, TeacherSettings
from agent.core.messages import Excitation
from replay.data.teacher import make_stream

DIM = 8
PER_CLASS = 40
K = 3
CORTEX = CortexSettings(initial_nodes=10, mature_feedbacks=5, split_threshold=0.05)


def blobs(mods: tuple[str, ...], seed: int = 0) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    enc, lab = {}, {}
    for m in mods:
        centres = rng.normal(size=(K, DIM)) * 4
        y = np.repeat(np.arange(K), PER_CLASS)
        enc[m] = (centres[y] + rng.normal(size=(len(y), DIM)) * 0.5).astype(np.float32)
        lab[m] = y
    return enc, lab


def make_brain(mods=("visual", "audio"), cortex=CORTEX, cdz=CDZSettings()) -> Brain:
    cfg = Config(modalities=mods, cortex=cortex, cdz=cdz)
    return Brain(cfg, {m: DIM for m in mods}, {m: K * PER_CLASS for m in mods})


def trained(mods=("visual", "audio"), seed=0, n_events=600, teacher=TeacherSettings(), **kw):
    enc, lab = blobs(mods, seed)
    brain = make_brain(mods, **kw)
    stream = make_stream(lab, teacher, n_events, seed)
    log = learn_stream(brain, stream, enc, progress=False)
    return brain, enc, lab, stream, log


def frozen(brain: Brain) -> dict[str, tuple]:
    """A byte-exact snapshot of the brain's state (state_dict may hand out views)."""
    return {k: (v.dtype.str, v.shape, v.tobytes()) for k, v in brain.state_dict().items()}


def recall_accuracy(brain: Brain, enc, lab, m: str, o: str) -> float:
    """Share of m's stimuli whose recalled o-cluster is mostly made of o-stimuli of the same class."""
    _, rec = brain.recall(m, enc[m])
    oc = brain.classify(o, enc[o])
    label_of = {int(c): int(np.bincount(lab[o][oc == c]).argmax()) for c in np.unique(oc)}
    return float(np.mean([label_of.get(int(r), -1) == y for r, y in zip(rec[o], lab[m])]))


# --------------------------------------------------------------------------- construction
def test_missing_dims_or_epochs_are_an_error():
    cfg = Config(cortex=CORTEX)
    with pytest.raises(ValueError, match="audio"):
        Brain(cfg, {"visual": DIM}, {"visual": 10, "audio": 10})
    with pytest.raises(ValueError, match="audio"):
        Brain(cfg, {"visual": DIM, "audio": DIM}, {"visual": 10})


def test_unknown_modality_is_a_key_error():
    brain = make_brain()
    with pytest.raises(KeyError, match="touch"):
        brain.learn("touch", np.zeros(DIM), 0.0)


# --------------------------------------------------------------------------- learning
def test_learns_the_pairing_without_labels():
    brain, enc, lab, stream, log = trained()
    for m, o in (("visual", "audio"), ("audio", "visual")):
        assert recall_accuracy(brain, enc, lab, m, o) >= 0.95, (m, o)
        # every class gets its own cluster(s): no two classes share the majority cluster
        cl = brain.classify(m, enc[m])
        majority = [int(np.bincount(cl[lab[m] == y]).argmax()) for y in range(K)]
        assert len(set(majority)) == K
    assert brain.rejected == 0
    assert (log.cluster >= 0).all()
    assert log.cluster.shape == log.recalled.shape == (len(stream),)
    # late in the stream, what was recalled right after learning is class-consistent too: the cluster
    # recalled in the other modality is mostly made of stimuli of the cue's class (labels only checked here)
    late = slice(len(stream) - 100, len(stream))
    assert (log.recalled[late] >= 0).mean() > 0.9
    label_of = {}
    for o in stream.modalities:
        oc = brain.classify(o, enc[o])
        label_of[o] = {int(c): int(np.bincount(lab[o][oc == c]).argmax()) for c in np.unique(oc)}
    mods = stream.modalities
    consistent = [label_of[mods[(mi + 1) % len(mods)]].get(int(r), -1) == y
                  for r, mi, y in zip(log.recalled[late], stream.modality[late], stream.label[late])]
    assert np.mean(consistent) > 0.9, np.mean(consistent)


def test_log_records_the_excited_cluster_of_each_stimulus():
    enc, lab = blobs(("visual", "audio"))
    stream = make_stream(lab, TeacherSettings(), 50, 0)
    brain = make_brain()
    log = learn_stream(brain, stream, enc, progress=False)
    ref = make_brain()
    want = []
    for j in range(len(stream)):
        m = stream.modalities[stream.modality[j]]
        want.append(ref.learn(m, enc[m][stream.index[j]], float(stream.t[j])).cluster_id)
    assert log.cluster.tolist() == want


def test_three_modalities_learn_every_ordered_pair():
    mods = ("visual", "audio", "touch")
    brain, enc, lab, _, _ = trained(mods, seed=2)
    assert sorted(brain.cdz.pairs) == sorted((a, b) for a in mods for b in mods if a != b)
    for a, b in brain.cdz.pairs:
        mat, _, _ = brain.cdz.weights(a, b)
        assert mat.sum() > 0, (a, b)
        sums = mat.sum(axis=1)
        assert np.all((np.abs(sums - 1) < 1e-4) | (sums == 0))
        assert recall_accuracy(brain, enc, lab, a, b) >= 0.9, (a, b)
    _, rec = brain.recall("touch", enc["touch"][:5])
    assert set(rec) == {"visual", "audio"}


def test_cdz_knows_exactly_the_clusters_alive_in_the_cortices():
    """Births and deaths travel as ClusterChange: after pruning and growth, no ghost rows."""
    brain, enc, *_ = trained(seed=1)
    for m, cortex in brain.cortices.items():
        assert cortex.counters.pruned_clusters > 0
        assert set(brain.cdz.clusters[m].slot) == set(cortex.cluster_slot)
        _, rec = brain.recall(m, enc[m])
        for o, got in rec.items():
            assert set(got.tolist()) - {-1} <= set(brain.cortices[o].cluster_slot)


def test_backward_gain_zero_with_sound_always_after_image_is_one_way():
    teacher = TeacherSettings(lag_s=(0.1, 0.5))  # the "bell" (image) always comes first
    brain, enc, lab, _, _ = trained(cdz=CDZSettings(backward_gain=0.0), teacher=teacher)
    _, rec = brain.recall("visual", enc["visual"])
    assert (rec["audio"] >= 0).all()
    _, rec = brain.recall("audio", enc["audio"])
    assert (rec["visual"] == -1).all()
    # the earlier side never hears back; the later side does
    assert brain.cortices["visual"].counters.feedback == 0
    assert brain.cortices["audio"].counters.feedback > 0


def test_pairs_further_apart_than_the_window_teach_nothing():
    teacher = TeacherSettings(lag_s=(0.6, 0.9), gap_s=3.0)
    brain, enc, *_ = trained(cdz=CDZSettings(window_s=0.5), teacher=teacher, n_events=200)
    assert brain.cdz.counters.pairs == 0
    for m in brain.modalities:
        assert brain.cortices[m].counters.feedback == 0
        _, rec = brain.recall(m, enc[m])
        assert all((r == -1).all() for r in rec.values())
    # the same stream inside the window does teach
    brain, *_ = trained(cdz=CDZSettings(window_s=1.0), teacher=teacher, n_events=200)
    assert brain.cdz.counters.pairs > 0


@pytest.mark.parametrize("growth_stop", [0.5, 0.8])
def test_growth_stops_for_the_last_part_of_the_stream(growth_stop):
    cortex = CortexSettings(initial_nodes=10, mature_feedbacks=5, split_threshold=0.05, growth_stop=growth_stop)
    enc, lab = blobs(("visual", "audio"), 1)
    stream = make_stream(lab, TeacherSettings(), 300, 1)
    brain = make_brain(cortex=cortex)
    rounds: list[int] = []  # stimuli learned (all modalities) when a growth round ran
    for c in brain.cortices.values():
        real = c.grow_
        c.grow_ = lambda real=real: rounds.append(sum(x.step for x in brain.cortices.values())) or real()
    learn_stream(brain, stream, enc, progress=False)
    until = int(growth_stop * len(stream))
    assert rounds and max(rounds) <= until  # growth ran, and never in the last part
    assert max(rounds) > until - 100  # ...but right up to it (grow period: 36 stimuli per modality)
    assert not any(c.growth_enabled for c in brain.cortices.values())


def test_stream_in_pieces_equals_stream_in_one_go():
    enc, lab = blobs(("visual", "audio"), 3)
    stream = make_stream(lab, TeacherSettings(p_unpaired=0.1, p_mismatch=0.1), 400, 3)
    one, two = make_brain(), make_brain()
    log = learn_stream(one, stream, enc, progress=False)
    cut = [0, 137, 500, len(stream)]
    parts = [learn_stream(two, stream, enc, start=a, stop=b, progress=False) for a, b in zip(cut, cut[1:])]
    assert frozen(one) == frozen(two)
    assert np.array_equal(log.cluster, np.concatenate([p.cluster for p in parts]))
    assert np.array_equal(log.recalled, np.concatenate([p.recalled for p in parts]))


# --------------------------------------------------------------------------- purity and determinism
def test_evaluation_changes_nothing():
    brain, enc, *_ = trained()
    before = frozen(brain)
    rng = np.random.default_rng(0)
    probe = np.concatenate([enc["visual"], rng.normal(size=(20, DIM)).astype(np.float32) * 10])
    probe[3] = np.nan
    for m in brain.modalities:
        brain.classify(m, probe)
        brain.recall(m, probe)
        for c in brain.cortices[m].cluster_slot:
            brain.cdz.recall(m, c)
            brain.cortices[m].mode_position(c)
    assert frozen(brain) == before


def test_two_brains_fed_the_same_stream_are_identical():
    a, *_ = trained(seed=4, teacher=TeacherSettings(p_mismatch=0.2))
    b, *_ = trained(seed=4, teacher=TeacherSettings(p_mismatch=0.2))
    assert frozen(a) == frozen(b)
    c, *_ = trained(seed=5, teacher=TeacherSettings(p_mismatch=0.2))
    assert frozen(a) != frozen(c)


def test_state_dict_round_trip_behaves_identically():
    enc, lab = blobs(("visual", "audio"), 6)
    stream = make_stream(lab, TeacherSettings(p_mismatch=0.1), 800, 6)
    src = make_brain()
    learn_stream(src, stream, enc, stop=700, progress=False)
    dst = make_brain()
    dst.load_state_dict({k: np.array(v, copy=True) for k, v in src.state_dict().items()})
    assert frozen(dst) == frozen(src)
    a = learn_stream(src, stream, enc, start=700, progress=False)
    b = learn_stream(dst, stream, enc, start=700, progress=False)
    assert np.array_equal(a.cluster, b.cluster) and np.array_equal(a.recalled, b.recalled)
    for m in src.modalities:
        ca, ra = src.recall(m, enc[m])
        cb, rb = dst.recall(m, enc[m])
        assert np.array_equal(ca, cb)
        for o in ra:
            assert np.array_equal(ra[o], rb[o])


# --------------------------------------------------------------------------- bad input
@pytest.mark.parametrize("bad", [
    np.full(DIM, np.nan, np.float32),
    np.r_[np.zeros(DIM - 1), np.inf].astype(np.float32),
    np.zeros(DIM + 1, np.float32),
    np.zeros((1, DIM), np.float32),
])
def test_bad_encodings_are_counted_and_change_nothing(bad):
    brain, enc, *_ = trained(n_events=100)
    before = frozen(brain)
    assert brain.learn("visual", bad, 1e6) is None
    assert brain.rejected == 1
    after = frozen(brain)
    assert after.pop("rejected") != before.pop("rejected")
    assert after == before
    # and the brain goes on learning
    exc = brain.learn("visual", enc["visual"][0], 1e6 + 1)
    assert isinstance(exc, Excitation)
    assert brain.rejected == 1


def test_rejected_count_survives_a_round_trip():
    brain = make_brain()
    brain.learn("audio", np.full(DIM, np.nan), 0.0)
    brain.learn("audio", np.zeros(3), 0.0)
    other = make_brain()
    other.load_state_dict(brain.state_dict())
    assert other.rejected == 2


@pytest.mark.parametrize("t, strength", [(math.nan, 1.0), (math.inf, 1.0), (0.0, math.nan), (0.0, -1.0)])
def test_bad_time_or_strength_is_rejected_not_learned(t, strength):
    brain = make_brain()
    z = np.zeros(DIM, np.float32)
    assert brain.learn("visual", z, 0.0) is not None
    before = brain.state_dict()
    assert brain.learn("audio", z, t, strength) is None
    assert brain.rejected == 1
    after = brain.state_dict()
    for key in set(before) - {"rejected"}:
        np.testing.assert_array_equal(before[key], after[key], err_msg=key)
