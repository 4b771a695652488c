"""Lossless order for one sense's worker: which stimulus it learns next, and when it may run ahead.

In a lossless replay (training) the runtime must end bit-identical to the one-process
brain, where every stimulus's feedback is applied before the next stimulus is learned.
Waiting for the hub's answer to every stimulus would cost a bus round trip each, so
stimulus `s` may be learned before the feedback on earlier stimuli has arrived when
that feedback cannot matter:

* no pruning or growth round is due (they read every node), and no checkpoint lies
  between (checkpoints are consistent cuts: every process saves "after stimulus S-1");
* the node `s` moves can receive no pending feedback (none of this sense's
  excitations of it lies within B of an unanswered stimulus), or so little that its
  strongest cluster link cannot be overtaken (`overtake`; the player tells how many
  stimuli of other senses lie within B of each stimulus).

Otherwise it waits. Feedback applied late carries the cortex step and the encoding
it belongs to, so it changes exactly what it would have changed in order.
The hub answers every sequence number in order (feedback, or a `Credit` for those
that gave none); `answered` moves the watermark.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator

import numpy as np

from agent.core.cortex import Cortex, StimulusError
from agent.core.messages import Excitation, Stimulus
from agent.core.state_check import check_arrays

Encode = Callable[[list[Stimulus]], list[np.ndarray | None]]  # stimuli -> their encodings (None: unusable)


class LosslessSequencer:
    """Stimuli in sequence order for one cortex, learned early only where that changes nothing."""

    def __init__(self, cortex: Cortex, *, start: int = 0, total: int = 0, checkpoint_every: int = 0,
                 window_ns: int = 0):
        self.cortex = cortex
        self.total = total
        self.checkpoint_every = checkpoint_every
        self.window_ns = window_ns  # B in ns plus a margin; 0 never runs ahead
        self.feedback_bound = 4.0 * cortex.settings.feedback_lr  # the most one feedback adds to a link
        self.pending: dict[int, Stimulus] = {}  # seq -> stimulus, learned in seq order
        self.codes: dict[int, np.ndarray | None] = {}  # seq -> encoding, computed ahead in batches
        self.recent_own: deque[tuple[int, int, int]] = deque()  # (t_ns, node id, near) of recent excitations
        self.ran_ahead = 0
        self.waited = 0
        self.reset(start)

    def reset(self, step: int) -> None:
        """Start again at stimulus `step` (a rewind to a checkpoint): nothing waits, nothing is ahead."""
        self.done = step  # the hub has answered every seq below this, and its feedback is applied
        self.t_answered: int | None = None  # event time (ns) of seq done - 1, once known
        self.ahead: deque[tuple[int, int]] = deque()  # (seq, cortex step after it) learned at or past `done`
        self.ahead_seqs: set[int] = set()  # the seqs in `ahead`: a resent copy must not be learned twice
        self.applied_step = self.cortex.step  # cortex step as of seq done - 1 in stream order
        self.z_before: dict[int, deque[tuple[int, np.ndarray]]] = {}  # node -> (seq, its encoding before seq)
        self.pending.clear()
        self.codes.clear()

    # ------------------------------------------------------------------ input
    def offer(self, stim: Stimulus) -> bool:
        """Take a stimulus to learn in its turn; False for one seen already (a resend, or from before a rewind)."""
        if stim.seq < self.done or stim.seq in self.pending or stim.seq in self.ahead_seqs:
            return False
        self.pending[stim.seq] = stim
        return True

    def answered(self, done: int, t_ns: int | None) -> Iterator[int]:
        """The hub has answered every seq below `done`: move the watermark, yielding each step it reaches
        on the way (every checkpoint step between, then `done`), so the worker can save at each cut."""
        while self.done < done:
            nxt = min(done, self.next_checkpoint(self.done))
            self._step_at(nxt - 1)
            self.done = nxt
            self.t_answered = t_ns if nxt == done else None
            yield nxt

    def feedback_context(self, seq: int) -> tuple[int, Callable[[int], np.ndarray | None]]:
        """For feedback on stimulus `seq`: the cortex step it belongs to, and each node's encoding as of then."""
        return self._step_at(seq), lambda node: self._z_at(node, seq)

    # ------------------------------------------------------------------ learning
    def next(self, encode: Encode) -> tuple[Stimulus, np.ndarray | None] | None:
        """The lowest waiting stimulus and its encoding, if it may be learned now; else None."""
        if not self.pending:
            return None
        seq = min(self.pending)
        if seq not in self.codes:
            self._encode_pending(encode)
        if seq != self.done and not self._safe_ahead(self.pending[seq], self.codes[seq]):
            self.waited += 1
            return None
        if seq != self.done:
            self.ran_ahead += 1
        return self.pending.pop(seq), self.codes.pop(seq, None)

    def learned(self, stim: Stimulus, exc: Excitation) -> None:
        """The cortex has learned `stim` (its excitation `exc`): remember where, for the feedback to come."""
        self.ahead.append((stim.seq, self.cortex.step))
        self.ahead_seqs.add(stim.seq)
        if stim.learn and exc.cluster_id >= 0:
            self.recent_own.append((stim.t_ns, exc.node_id, stim.near))

    def overtake(self, feedbacks: int, node: int | None = None) -> float:
        """The largest lead of a node's strongest cluster link that `feedbacks` feedbacks can overturn.

        Each adds at most d = 4 * feedback_lr to one link, then the row is divided by its new
        sum (1 + d), which shrinks the lead too: k of them to the runner-up overturn any lead
        below (1 + d)^k - 1, more than k * d from the second on. A single one meets the node as
        it stands now (every other feedback on it is in), so its bound is the cortex's for that
        node (`Cortex.next_feedback_bound`), far below d while the node is young or unsure."""
        if feedbacks == 1 and node is not None:
            return self.cortex.next_feedback_bound(node)
        return (1.0 + self.feedback_bound) ** feedbacks - 1.0

    def next_checkpoint(self, after: int) -> int:
        """The first checkpoint step above `after` (a barrier nothing may run past)."""
        k = self.checkpoint_every
        nxt = (after // k + 1) * k if k else 1 << 62
        return min(nxt, self.total) if self.total > after else nxt

    def _encode_pending(self, encode: Encode) -> None:
        seqs = [s for s in sorted(self.pending) if s not in self.codes]
        for s, z in zip(seqs, encode([self.pending[s] for s in seqs])):
            self.codes[s] = z  # None: learned as a rejection (the hub still hears about it)

    def _safe_ahead(self, stim: Stimulus, z: np.ndarray | None) -> bool:
        """Whether learning `stim` now gives what it gives once all earlier feedback is in."""
        if self.t_answered is None or self.window_ns <= 0 or stim.seq >= self.next_checkpoint(self.done):
            return False
        cortex = self.cortex
        cortex.growth_enabled = stim.grow
        if z is None or not stim.learn:
            return True
        if cortex.maintenance_due:
            return False
        try:
            node = cortex.peek_node(z)
        except StimulusError:
            return True  # it will be rejected, which depends on nothing
        if node is None:
            return True  # seeding a new node depends on no other node
        horizon = self.t_answered - self.window_ns
        while self.recent_own and self.recent_own[0][0] < horizon - self.window_ns:
            self.recent_own.popleft()
        pending = 0  # the most feedbacks that may still reach this node from earlier stimuli
        for t, n, near in self.recent_own:
            if n == node and t >= horizon:
                if near < 0:
                    return False
                pending += near
        if pending == 0:
            return True
        if cortex.link_margin(node) <= self.overtake(pending, node) + 1e-4:
            return False  # those feedbacks could change which cluster the node excites
        slot = cortex.node_slot[node]  # late feedback must see the encoding from before this one
        self.z_before.setdefault(node, deque()).append((stim.seq, cortex.last_z[slot].copy()))
        return True

    def _z_at(self, node: int, seq: int) -> np.ndarray | None:
        """The encoding that had last excited `node` as of stimulus `seq` (None: the current one)."""
        past = self.z_before.get(node)
        if not past:
            return None
        while past and past[0][0] <= self.done:
            past.popleft()  # every feedback before that excitation is in: no longer needed
        for s, z in past:
            if s > seq:
                return z
        return None

    def _step_at(self, seq: int) -> int:
        """The cortex step count right after stimulus `seq` in stream order."""
        while self.ahead and self.ahead[0][0] <= seq:
            done, self.applied_step = self.ahead.popleft()
            self.ahead_seqs.discard(done)
        return self.applied_step

    # ------------------------------------------------------------------ checkpoint
    def state_dict(self, prefix: str) -> dict[str, np.ndarray]:
        """The recent excitations running ahead reads (a checkpoint is taken with nothing ahead)."""
        return {f"{prefix}.recent_{name}": np.array([e[k] for e in self.recent_own], np.int64)
                for k, name in enumerate(("t", "node", "near"))}

    @staticmethod
    def check_state(state: dict[str, np.ndarray], prefix: str) -> None:
        keys = {f"{prefix}.recent_{name}" for name in ("t", "node", "near")}
        check_arrays(state, dict.fromkeys(keys, ("i", ("R",))), prefix, optional=frozenset(keys))

    def load_state_dict(self, state: dict[str, np.ndarray], prefix: str) -> None:
        t, n, near = (state.get(f"{prefix}.recent_{name}") for name in ("t", "node", "near"))
        ok = t is not None and n is not None and near is not None
        self.recent_own = deque(zip(t.tolist(), n.tolist(), near.tolist())) if ok else deque()
        self.z_before.clear()
