"""Lossless and live: the two ways the hub and a worker move their messages.

The hub and the workers hold the learning (the CDZ, a cortex) and what a process owns
(checkpoints, reloads, stats); a flow decides how messages come in and go out. Each
host picks one when it starts, and nothing else in it asks which it has.

* **Lossless** (a training replay; bit-identical to the one-process brain): a worker
  learns stimuli in stream order as `agent.runtime.sequencer.LosslessSequencer`
  allows; the hub takes excitations strictly in sequence order, buffering early ones
  and applying each cluster change before the excitation of its seq. Both send what
  they learned in batches; the hub's `Credit` says how far it got (the workers'
  go-ahead, the player's pace); checkpoints are saved at fixed stream positions.
* **Live** (sensors): a worker keeps a bounded queue that drops its oldest under
  overload and counts the drops; everything is sent at once and feedback applies on
  arrival; the hub keeps latency figures and publishes its weights for viewers; the
  supervisor may swap in a slept brain (`swaps`), and a worker then lives again what
  it learned after the slept brain's cut before it takes new input.
"""

from __future__ import annotations

import logging
import time
from collections import deque

import numpy as np

from agent.core.autoencoder import as_input, encode
from agent.core.messages import ClusterChange, Credit, Excitation, Feedback, Message, Stimulus
from agent.runtime.service import PartOwner  # a flow's host, an `EncoderWorker` or the `Hub` (they import this)

log = logging.getLogger(__name__)

WORKER_BATCH = 256  # lossless: the most excitations a worker sends in one batch
HUB_BATCH = 1024  # lossless: the most feedback messages the hub sends in one batch
HUB_RELOAD_WAIT_S = 10.0  # live, after a swap: how long new input waits for the hub's slept CDZ
STALL_ACK_S = 0.2  # lossless: a stalled player hears the hub's progress at least this often


class LosslessWorker:
    """Stimuli learned in stream order; cluster changes and excitations sent in batches."""

    swaps = False  # a replay never takes up a slept brain
    dropped_oldest = 0  # nor drops a stimulus

    def __init__(self, worker: PartOwner):
        self.w = worker
        self.outbox: dict[str, list[Message]] = {"clusters": [], "excite": []}

    def take(self, stim: Stimulus) -> None:
        if not self.w.sequencer.offer(stim):
            self.w.duplicates += 1  # a resend after a stall, or a replay from before a rewind

    def hub_ready(self, reload_id: int | None) -> None:
        """The hub's ready after a rewind: credits say the rest."""

    def credit(self, msg: Credit) -> None:
        if msg.seq > self.w.sequencer.done:
            self._advance(msg.seq, msg.t_ns)

    def feedback(self, fb: Feedback) -> None:
        w = self.w
        if fb.seq < w.sequencer.done:  # the hub answers each seq once: only an old generation repeats
            w.duplicates += 1
            return
        self._advance(fb.seq, fb.t_ns)  # everything before fb.seq is complete: the hub answers in order
        step, z_at = w.sequencer.feedback_context(fb.seq)
        w.unit.feedback(fb, step=step, z_at=z_at)
        self._advance(fb.seq + 1, fb.t_ns)

    def _advance(self, done: int, t_ns: int | None) -> None:
        """The hub has answered every seq below `done`: saving checkpoints at the cuts on the way."""
        for step in self.w.sequencer.answered(done, t_ns):
            self.w.at_cut(step)

    def learn(self) -> None:
        w = self.w
        while (turn := w.sequencer.next(w.encode_batch)) is not None:
            stim, z = turn
            w.sequencer.learned(stim, w.learn(stim, z))
            if len(self.outbox["excite"]) >= WORKER_BATCH:
                self._flush()
            w.dispatch_waiting()  # the hub's answers may already be here
        self._flush()

    def _flush(self) -> None:
        """What was learned since the last flush goes out, cluster changes first (one batch per
        topic; the hub applies each change before the excitation of its seq)."""
        for kind in ("clusters", "excite"):
            self.w.send_batch(self.outbox[kind])
            self.outbox[kind].clear()

    def emit(self, msg: Message) -> None:
        self.outbox[msg.KIND].append(msg)  # stamped as the batch is sent

    def learned(self, stim: Stimulus, exc: Excitation, relived: bool) -> None:
        """Nothing to keep: a replay's stimuli are on disk already."""

    def queued(self) -> int:
        return len(self.w.sequencer.pending)

    def reset(self) -> None:
        for batch in self.outbox.values():
            batch.clear()


class LiveWorker:
    """Stimuli learned as they come from a bounded queue; everything sent at once."""

    swaps = True

    def __init__(self, worker: PartOwner, queue_max: int):
        self.w = worker
        self.queue: deque[Stimulus] = deque()  # oldest first, at most `queue_max`
        self.queue_max = queue_max
        self.dropped_oldest = 0
        self.relive: deque[tuple[np.ndarray, int]] = deque()  # after a swap: stimuli learned again first
        self.awaiting_hub: int | None = None  # after a swap: the reload the hub has yet to say ready for
        self._awaiting_since = 0.0

    def take(self, stim: Stimulus) -> None:
        self.queue.append(stim)
        while len(self.queue) > self.queue_max:
            self.queue.popleft()
            self.dropped_oldest += 1

    def credit(self, msg: Credit) -> None:
        """Live processes go at their own pace: nobody waits for credits."""

    def feedback(self, fb: Feedback) -> None:
        self.w.unit.feedback(fb)

    def swapped(self, x: np.ndarray, t_ns: np.ndarray, reload_id: int) -> None:
        """A slept brain was taken up: `x` (learned after its cut, by the old brain) is learned again,
        in order, once the hub says it holds the slept CDZ, and only then new input."""
        self.relive.extend(zip(x, t_ns.tolist()))
        self.awaiting_hub, self._awaiting_since = reload_id, time.monotonic()

    def hub_ready(self, reload_id: int | None) -> None:
        if reload_id == self.awaiting_hub:
            self.awaiting_hub = None  # the hub holds the slept CDZ: what was lived since can be paired again

    def learn(self) -> None:
        w = self.w
        if self.awaiting_hub is not None:
            if time.monotonic() - self._awaiting_since < HUB_RELOAD_WAIT_S:
                return  # new input waits until what was lived since the cut is learned again
            log.warning("%s: no ready from the hub for reload %d; going on", w.name, self.awaiting_hub)
            self.awaiting_hub = None
        if self.relive:  # one batch through the new encoder: the live queue waits for all of it
            t0 = time.perf_counter()
            x = np.stack([x for x, _ in self.relive])  # as they arrived; heard through the session as it is now
            for (_, t_ns), row, z in zip(self.relive, x, encode(w.model, w.heard_again(x))):
                w.learn(Stimulus(modality=w.modality, t_ns=t_ns, seq=0, data=row, source=w.name, gen=w.gen), z,
                        relived=True)
            log.info("%s: lived %d stimuli again in %.0f ms", w.name, len(x), 1000 * (time.perf_counter() - t0))
            self.relive.clear()
        while self.queue:
            stim = self.queue.popleft()
            w.learn(stim, w.encode_heard(stim))
            w.dispatch_waiting()

    def emit(self, msg: Message) -> None:
        self.w.bus.send(self.w.stamp(msg))

    def learned(self, stim: Stimulus, exc: Excitation, relived: bool) -> None:
        """Keep what was learned for sleep (as it arrived: a sleep settles it), off the latency path."""
        w = self.w
        if exc.cluster_id >= 0 and stim.learn and not stim.internal:
            w.experience.add(as_input(stim.data), stim.t_ns)
        if not relived:
            w.latency.add((w.bus_ns() - stim.t_ns) / 1e6)

    def queued(self) -> int:
        return len(self.queue)

    def reset(self) -> None:
        self.queue.clear()


class LosslessHub:
    """Excitations taken strictly in sequence order; feedback batched per sense, then a `Credit`."""

    swaps = False

    def __init__(self, hub: PartOwner, start: int):
        self.h = hub
        self.waiting: dict[int, Excitation] = {}  # excitations that arrived before their turn
        self.changes: dict[int, list[ClusterChange]] = {}  # cluster changes announced for a seq
        self.outbox: dict[str, list[Feedback]] = {}  # feedback per sense, sent in one batch per drain
        self.acked = start
        self.told = dict.fromkeys(hub.modalities, start)  # the progress each worker has heard of
        self._last_ack = time.monotonic()

    def excitation(self, msg: Excitation) -> None:
        h = self.h
        if not msg.learn:  # a query: answered on arrival
            if not h.too_far_ahead(msg):
                h.process(msg)
            return
        if msg.seq < h.next_seq or msg.seq in self.waiting:
            h.duplicates += 1
            return
        self.waiting[msg.seq] = msg
        while h.next_seq in self.waiting:
            seq = h.next_seq
            exc = self.waiting.pop(seq)
            for change in self.changes.pop(seq, []):
                h.unit.handle(change)
            h.process(exc)
            h.next_seq = seq + 1
            h.at_cut(h.next_seq)

    def cluster_change(self, msg: ClusterChange) -> None:
        if msg.seq >= self.h.next_seq:
            self.changes.setdefault(msg.seq, []).append(msg)

    def send_feedback(self, msg: Excitation, fb: Feedback) -> None:
        """Sent when the drain ends: one message per sense, not per stimulus."""
        self.told[fb.modality] = msg.seq + 1
        batch = self.outbox.setdefault(fb.modality, [])
        batch.append(fb)  # stamped as the batch is sent
        if len(batch) >= HUB_BATCH:
            self._flush()

    def processed(self, msg: Excitation, recalled: dict[str, int | None] | None) -> None:
        """The stream log, per stimulus, as the in-process `StreamLog` keeps it."""
        h = self.h
        if recalled is not None and msg.seq < len(h.log_cluster):
            h.log_cluster[msg.seq] = msg.cluster_id
            got = recalled[h.logged_partner[msg.modality]]
            h.log_recalled[msg.seq] = -1 if got is None else got

    def tick(self, now: float) -> None:
        if self.acked < self.h.next_seq:
            self._answer()
        if now - self._last_ack > STALL_ACK_S:  # keep a stalled player informed
            self._ack(now)

    def _answer(self) -> None:
        """Once every waiting message is handled: the feedback of what was learned goes out (one
        batch per sense), then, if a worker or the player may be waiting for it, the progress."""
        self._flush()
        # blocked on the next seq: a worker may be waiting for this progress (the player only needs
        # it now and then); workers that just got feedback for the last seq know it already
        next_seq = self.h.next_seq
        if any(told < next_seq for told in self.told.values()) or next_seq - self.acked >= 64:
            self._ack(time.monotonic())

    def _flush(self) -> None:
        for batch in self.outbox.values():
            self.h.send_batch(batch)
        self.outbox.clear()

    def _ack(self, now: float) -> None:
        """Every stimulus below `next_seq` is learned and answered (feedback went out before this)."""
        h = self.h
        self._last_ack = now
        self.acked = h.next_seq
        self.told = dict.fromkeys(self.told, h.next_seq)
        h.bus.send(Credit(seq=h.next_seq, t_ns=h.t_done, source=h.name, gen=h.gen))

    def queued(self) -> int:
        return len(self.waiting)

    def reset(self, step: int) -> None:
        self.acked = step
        self.told = dict.fromkeys(self.told, step)
        self.waiting.clear()
        self.changes.clear()
        self.outbox.clear()


class LiveHub:
    """Excitations taken on arrival; feedback sent at once; latency kept; weights published."""

    swaps = True
    weights_every_s = 1.0  # how often viewers get the CDZ matrices

    def __init__(self, hub: PartOwner):
        self.h = hub
        self._last_weights = 0.0

    def excitation(self, msg: Excitation) -> None:
        if not self.h.too_far_ahead(msg):
            self.h.process(msg)

    def cluster_change(self, msg: ClusterChange) -> None:
        self.h.unit.handle(msg)

    def send_feedback(self, msg: Excitation, fb: Feedback) -> None:
        self.h.bus.send(self.h.stamp(fb))

    def processed(self, msg: Excitation, recalled: dict[str, int | None] | None) -> None:
        h = self.h
        if not msg.relived:
            ms = (h.bus_ns() - msg.t_ns) / 1e6
            h.latency.add(ms)
            h.latency_of[msg.modality].add(ms)

    def tick(self, now: float) -> None:
        if now - self._last_weights >= self.weights_every_s:
            self._last_weights = now
            self.h.publish_weights()

    def queued(self) -> int:
        return 0

    def reset(self, step: int) -> None:
        """Nothing waits in a live flow."""
