"""agent.core.units and the brain's router: the rules behind messages, and docs/LEARNING.md's step order.

The units are tested bare (a cortex or a CDZ and messages, nothing else); the router
is tested by watching what it passes between real units.
"""

from __future__ import annotations

import numpy as np
import pytest

from agent.core.brain import Brain
from agent.core.cdz import CDZ
from agent.core.config import CDZSettings, Config, CortexSettings
from agent.core.cortex import Cortex
from agent.core.messages import ClusterChange, Excitation, Feedback, Stimulus
from agent.core.units import CDZUnit, CortexUnit

DIM = 4
CORTEX = CortexSettings(initial_nodes=2)


def stim(m: str, t_ns: int, seq: int, z: np.ndarray, **kw) -> Stimulus:
    return Stimulus(modality=m, t_ns=t_ns, seq=seq, data=z, **kw)


def z_of(k: float) -> np.ndarray:
    return np.full(DIM, k, np.float32)


def test_a_new_node_s_cluster_is_announced_before_the_excitation_it_fires():
    unit = CortexUnit(Cortex("visual", DIM, CORTEX, epoch=100))
    out = unit.stimulus(stim("visual", 5_000, 7, z_of(1.0)), z_of(1.0))
    assert [type(m) for m in out] == [ClusterChange, Excitation]
    born, exc = out
    assert born.created == (exc.cluster_id,) and exc.cluster_id >= 0 and exc.node_id >= 0
    assert all((m.modality, m.t_ns, m.seq) == ("visual", 5_000, 7) for m in out)  # the stimulus's envelope


def test_an_unusable_stimulus_fires_cluster_minus_one_and_is_counted():
    cortex = Cortex("visual", DIM, CORTEX, epoch=100)
    unit = CortexUnit(cortex)
    for z in (None, np.full(DIM, np.nan, np.float32), np.zeros(DIM + 1, np.float32)):
        out = unit.stimulus(stim("visual", 1, 1, np.zeros(3, np.uint8)), z)
        assert len(out) == 1 and out[0].cluster_id == -1 and out[0].node_id == -1
    assert unit.rejected == 3 and cortex.n_nodes == 0 and "visual" in unit.last_error


def test_a_query_classifies_and_changes_nothing():
    cortex = Cortex("visual", DIM, CORTEX, epoch=100)
    unit = CortexUnit(cortex)
    assert unit.stimulus(stim("visual", 1, 0, z_of(0), learn=False), z_of(0))[0].cluster_id == -1  # no nodes yet
    for k in range(3):
        unit.stimulus(stim("visual", k, k, z_of(k)), z_of(k))
    before = {k: v.copy() for k, v in cortex.state_dict().items()}
    (exc,) = unit.stimulus(stim("visual", 9, 9, z_of(0.1), learn=False), z_of(0.1))
    assert exc.learn is False and exc.cluster_id >= 0
    assert all(np.array_equal(before[k], v) for k, v in cortex.state_dict().items())


def test_the_cdz_unit_answers_a_pair_with_feedback_and_ignores_queries_and_rejections():
    unit = CDZUnit(CDZ(("visual", "audio"), CDZSettings()))
    unit.handle(ClusterChange(modality="visual", created=(3,)))
    unit.handle(ClusterChange(modality="audio", created=(8,)))
    assert unit.handle(Excitation(modality="visual", t_ns=0, seq=0, cluster_id=3,
                                  node_id=30)) == []  # nothing to pair with yet
    assert unit.handle(Excitation(modality="audio", t_ns=10_000_000, seq=1, cluster_id=8, node_id=80,
                                  learn=False)) == []  # a query teaches nothing
    assert unit.handle(Excitation(modality="audio", t_ns=10_000_000, seq=1, cluster_id=-1,
                                  node_id=-1)) == [] and unit.rejected == 1
    out = unit.handle(Excitation(modality="audio", t_ns=20_000_000, seq=2, cluster_id=8, node_id=80))
    assert sorted((f.modality, f.node_ids, f.cluster_ids, f.seq) for f in out) == [
        ("audio", (80,), (8,), 2), ("visual", (30,), (3,), 2)]
    assert unit.recall(Excitation(modality="visual", t_ns=0, seq=0, cluster_id=3, node_id=30)) == {"audio": 8}


class Spy:
    """Wraps a unit and writes down every message it is handed and every one it returns."""

    def __init__(self, unit, name: str, log: list):
        self.unit, self.name, self.log = unit, name, log

    def __getattr__(self, attr):
        inner = getattr(self.unit, attr)
        if not callable(inner):
            return inner

        def spied(*args, **kw):
            msg = args[0]
            self.log.append((self.name, attr, type(msg).__name__, getattr(msg, "modality", None)))
            return inner(*args, **kw)
        return spied


def test_the_router_applies_the_steps_in_algorithm_order():
    """Per stimulus: the cortex fires (steps 2-4); its cluster births reach the CDZ before its
    excitation (step 5); each feedback goes to its own sense's cortex, after the CDZ made it (step 6)."""
    cfg = Config(modalities=("visual", "audio"), cortex=CORTEX)
    brain = Brain(cfg, {"visual": DIM, "audio": DIM}, {"visual": 100, "audio": 100})
    log: list = []
    brain.units = {m: Spy(u, f"cortex.{m}", log) for m, u in brain.units.items()}
    brain.cdz_unit = Spy(brain.cdz_unit, "cdz", log)
    brain.step(stim("visual", 0, 0, z_of(1)), z_of(1))
    assert log == [("cortex.visual", "stimulus", "Stimulus", "visual"), ("cdz", "handle", "ClusterChange", "visual"),
                   ("cdz", "handle", "Excitation", "visual")]
    log.clear()
    exc = brain.step(stim("audio", 10_000_000, 1, z_of(2)), z_of(2))  # within B of the image: a pair
    assert log == [("cortex.audio", "stimulus", "Stimulus", "audio"), ("cdz", "handle", "ClusterChange", "audio"),
                   ("cdz", "handle", "Excitation", "audio"),
                   ("cortex.audio", "feedback", "Feedback", "audio"), ("cortex.visual", "feedback", "Feedback", "visual")]
    assert exc.cluster_id >= 0 and brain.cortices["visual"].counters.feedback == 1
    assert brain.cortices["audio"].counters.feedback == 1


def test_learn_is_step_with_the_stimulus_made_for_it():
    """`Brain.learn` (event time in seconds) and `Brain.step` (a Stimulus) leave identical brains."""
    cfg = Config(modalities=("visual", "audio"), cortex=CORTEX)
    a, b = (Brain(cfg, {"visual": DIM, "audio": DIM}, {"visual": 50, "audio": 50}) for _ in range(2))
    rng = np.random.default_rng(0)
    for k in range(200):
        m = ("visual", "audio")[k % 2]
        z = rng.normal(size=DIM).astype(np.float32)
        a.learn(m, z, k * 0.01)
        b.step(stim(m, k * 10_000_000, 0, z), z)
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys() and all(np.array_equal(sa[k], sb[k]) for k in sa)


@pytest.mark.parametrize("bad",
                         [Feedback(modality="visual", t_ns=0, seq=0, node_ids=(123456,), cluster_ids=(0,),
                                   certainties=(0.5,))])
def test_feedback_for_a_node_that_is_gone_is_counted_stale(bad):
    cortex = Cortex("visual", DIM, CORTEX, epoch=100)
    CortexUnit(cortex).feedback(bad)
    assert cortex.counters.stale_feedback == 1 and cortex.counters.feedback == 0
