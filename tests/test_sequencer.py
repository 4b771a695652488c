"""agent.runtime.sequencer: lossless order for one worker, tested bare (a cortex and stimuli, no bus).

The end-to-end guarantee (a distributed run bit-identical to the one-process brain)
is tests/test_runtime.py's; these pin the sequencer's own promises.
"""

from __future__ import annotations

import numpy as np
import pytest

from agent.core.config import CortexSettings
from agent.core.cortex import Cortex
from agent.core.messages import Excitation, Stimulus
from agent.runtime.sequencer import LosslessSequencer

DIM = 4
MS = 1_000_000


def stim(seq: int, t_ms: int, near: int = 0, value: float | None = None) -> Stimulus:
    value = float(seq % 3) if value is None else value
    return Stimulus(modality="visual", t_ns=t_ms * MS, seq=seq, data=np.full(DIM, value, np.float32), near=near)


def encode(stimuli: list[Stimulus]) -> list[np.ndarray | None]:
    return [s.data for s in stimuli]


def learn(seq: LosslessSequencer, cortex: Cortex) -> list[int]:
    """Learn every stimulus the sequencer lets through now; their seqs."""
    done = []
    while (turn := seq.next(encode)) is not None:
        s, z = turn
        cluster, node = cortex.fire(z)
        seq.learned(s, Excitation(modality="visual", t_ns=s.t_ns, seq=s.seq, cluster_id=cluster, node_id=node))
        done.append(s.seq)
    return done


def make(**kw) -> tuple[LosslessSequencer, Cortex]:
    cortex = Cortex("visual", DIM, CortexSettings(initial_nodes=2), epoch=1000)
    return LosslessSequencer(cortex, **kw), cortex


def test_stimuli_are_learned_in_sequence_order_whatever_order_they_arrive_in():
    seq, cortex = make()
    for s in (2, 0, 1):
        assert seq.offer(stim(s, 10 * s))
    assert learn(seq, cortex) == [0]  # nothing may run ahead before the hub answered anything
    list(seq.answered(1, 0))
    assert learn(seq, cortex) == [1]
    list(seq.answered(2, 10 * MS))
    assert learn(seq, cortex) == [2]


def test_a_stimulus_seen_already_is_refused():
    seq, cortex = make(start=5)
    assert not seq.offer(stim(4, 0))  # from before the start (a rewind's older generation)
    assert seq.offer(stim(5, 0)) and not seq.offer(stim(5, 0))  # a resend while it waits
    learn(seq, cortex)
    assert not seq.offer(stim(5, 0))  # a resend after it was learned, before the hub answered


def test_the_watermark_stops_at_every_checkpoint_on_the_way():
    seq, _ = make(total=25, checkpoint_every=10)
    assert list(seq.answered(23, 0)) == [10, 20, 23]
    assert list(seq.answered(30, 0)) == [25, 30]  # the run's end is a cut too
    assert list(seq.answered(30, 0)) == []


def test_nothing_runs_past_a_checkpoint_before_it_is_answered():
    seq, cortex = make(checkpoint_every=4, window_ns=50 * MS)
    for s in range(8):
        seq.offer(stim(s, 1000 * s))  # far apart in time: no feedback can reach a node
    learn(seq, cortex)
    list(seq.answered(1, 0))
    assert learn(seq, cortex)[-1] == 3  # ran ahead up to the cut at 4, not past it
    list(seq.answered(4, 3000 * MS))
    assert learn(seq, cortex)[-1] == 7


def seeded(window_ns: int = 50 * MS) -> tuple[LosslessSequencer, Cortex]:
    """A sequencer whose cortex has two nodes (at 0 and at 1) and whose hub answered both."""
    seq, cortex = make(window_ns=window_ns)
    for s in (0, 1):
        seq.offer(stim(s, 1000 * s, value=float(s)))
        learn(seq, cortex)
        list(seq.answered(s + 1, 1000 * s * MS))
    return seq, cortex


def test_a_node_that_may_still_get_feedback_waits_for_it():
    """Stimulus 2 moved node "1" with an unknown number of other senses' stimuli near it (near=-1):
    their feedback could still change that node, so stimulus 3, which moves it too, waits."""
    seq, cortex = seeded()
    seq.offer(stim(2, 1010, near=-1, value=0.9))
    seq.offer(stim(3, 1020, value=1.1))
    assert learn(seq, cortex) == [2] and seq.waited == 1
    list(seq.answered(3, 1010 * MS))
    assert learn(seq, cortex) == [3] and seq.ran_ahead == 0


def test_a_stimulus_that_moves_another_node_runs_ahead():
    seq, cortex = seeded()
    seq.offer(stim(2, 1010, near=-1, value=0.9))  # node "1"
    seq.offer(stim(3, 1020, value=0.1))  # node "0": nothing of ours near it in time
    assert learn(seq, cortex) == [2, 3] and seq.ran_ahead == 1


def test_feedback_that_cannot_overtake_the_strongest_link_lets_it_run_ahead():
    """One pending feedback adds at most 4 * feedback_lr; node "1" leads by its whole link (1.0)."""
    seq, cortex = seeded()
    seq.offer(stim(2, 1010, near=1, value=0.9))
    seq.offer(stim(3, 1020, value=1.1))
    assert learn(seq, cortex) == [2, 3] and seq.ran_ahead == 1
    step, z_at = seq.feedback_context(2)  # late feedback on 2 sees the node's encoding from before 3
    node = int(cortex.node_id[1])  # the node seeded by stimulus 1
    assert step == cortex.step - 1 and np.allclose(z_at(node), 0.9) and np.allclose(cortex.last_z[1], 1.1)


def test_recent_excitations_survive_a_checkpoint():
    seq, cortex = make(window_ns=50 * MS)
    for s in range(3):
        seq.offer(stim(s, 10 * s, near=2))
        learn(seq, cortex)
        list(seq.answered(s + 1, 10 * s * MS))
    state = seq.state_dict("worker.visual")
    LosslessSequencer.check_state(state, "worker.visual")
    again, _ = make()
    again.load_state_dict(state, "worker.visual")
    assert list(again.recent_own) == list(seq.recent_own) and len(seq.recent_own) > 0


def test_a_lead_that_two_feedbacks_can_overturn_is_not_run_past():
    """The lead shrinks with every renormalisation: two feedbacks of d = 4 * feedback_lr overturn a
    lead below (1 + d)^2 - 1 = 2d + d^2, not only below 2d. A lead of 2d + d^2/2 must wait."""
    seq, cortex = seeded()
    d = seq.feedback_bound
    lead = 2 * d + d * d / 2
    slot, other = 1, 0  # node "1"'s links: its own cluster leads cluster "0" by `lead`
    cortex.link[slot, : cortex.c_hi] = 0.0
    cortex.link[slot, slot], cortex.link[slot, other] = (1 + lead) / 2, (1 - lead) / 2
    probe = cortex.link[slot, : cortex.c_hi].copy()  # two full feedbacks to the runner-up do overturn it
    for _ in range(2):
        probe[other] += d
        probe /= probe.sum()
    assert probe[other] > probe[slot]
    seq.offer(stim(2, 1010, near=2, value=0.9))
    seq.offer(stim(3, 1020, value=1.1))
    assert learn(seq, cortex) == [2] and seq.waited == 1  # 3 waits for the feedback on 2
    assert seq.overtake(1) == pytest.approx(d) and seq.overtake(2) > 2 * d


def test_one_feedback_is_bounded_by_the_node_as_it_stands_so_a_young_node_runs_ahead():
    """A node that has had no feedback yet has certainty 0: one feedback adds at most feedback_lr,
    not 4 * feedback_lr. A lead between the two runs ahead of one pending feedback, not of two."""
    for pending, ran in ((1, [2, 3]), (2, [2])):
        seq, cortex = seeded()
        lr = cortex.settings.feedback_lr
        lead = 2 * lr  # above what one feedback to this young node can add, below 4 * lr
        slot, other = 1, 0
        cortex.link[slot, : cortex.c_hi] = 0.0
        cortex.link[slot, slot], cortex.link[slot, other] = (1 + lead) / 2, (1 - lead) / 2
        assert cortex.next_feedback_bound(int(cortex.node_id[slot])) == pytest.approx(lr)
        seq.offer(stim(2, 1010, near=pending, value=0.9))
        seq.offer(stim(3, 1020, value=1.1))
        assert learn(seq, cortex) == ran
