"""The hub: the process that owns the CDZ (the only owner of cross-modal weights).

It hears every modality's excitations and cluster changes, correlates them within
the window B with the very `CDZ` of the one-process brain, sends feedback to the
cortices and asks the other modalities' workers to reconstruct what they recall.

It hosts the `CDZUnit` of `agent.core.units`. Lossless mode processes excitations
strictly in sequence order (buffering any that arrive early). Once the messages
waiting are handled it sends the feedback of what it learned, one batch per sense,
then a `Credit` saying how far it got: together they are the workers' go-ahead and
what the player paces itself by. Live mode processes excitations on arrival and
sends feedback at once; the CDZ pairs by event time and keeps excitations
`reorder_slack_s` longer, so a late arrival still pairs with what came before it.
A live excitation stamped more than `cdz.max_ahead_s` ahead of the hub's clock is
dropped and counted (`ahead`): one such time would move the window's end, and every
true excitation after it would arrive too late to pair.
"""

from __future__ import annotations

import logging
import time

import numpy as np

from agent.runtime.bus import BusClient
from agent.core.cdz import CDZ
from agent.core.checkpoint import CDZ_PART, LOG_CLUSTER, LOG_RECALLED, REFINEMENTS, RunFolder, as_part, part
from agent.runtime.service import Latency, PartOwner, Rate
from agent.core.stream import logged_partner
from agent.core.units import CDZUnit
from agent.core.messages import ClusterChange, Control, Credit, Excitation, Feedback, Message, Recall, Weights

log = logging.getLogger(__name__)

BATCH = 1024  # lossless: the most feedback messages sent in one batch

HUB_KEYS = (f"{CDZ_PART}.", "log.", REFINEMENTS)  # the checkpoint arrays the hub reads (prefixes)


class Hub(PartOwner):
    """Correlates excitations, sends feedback and recall requests. Its clock is the bus's."""

    tells_time = True

    def __init__(self, bus: BusClient, cdz: CDZ, *, lossless: bool, run: RunFolder | None = None, start: int = 0,
                 total: int = 0, checkpoint_every: int = 0, gen: int = 0, recall: bool = True,
                 recall_hz: float = 60.0):
        super().__init__(bus, CDZ_PART, lossless=lossless, run=run, total=total, checkpoint_every=checkpoint_every,
                         gen=gen, keep_checkpoints=2)
        self.cdz = cdz
        self.unit = CDZUnit(cdz)
        self.modalities = cdz.modalities
        self.recall_enabled = recall
        self.sleeping = False  # live: the supervisor says the agent sleeps (shown by viewers)
        self.reloads = 0  # live: swaps to a slept brain
        self.holds = (start, 0)  # (checkpoint step, stage) of the brain it holds; set by from_run and reloads
        self.recall_interval = 0.0 if recall_hz <= 0 else 1.0 / recall_hz
        self._last_recall: dict[str, float] = {}
        self._acked = start
        self._told = {m: start for m in self.modalities}  # the progress each worker has heard of
        self._t_done = 0  # event time (ns) of the last processed stimulus
        self.next_seq = start
        self.waiting: dict[int, Excitation] = {}  # lossless: excitations that arrived before their turn
        self.outbox: dict[str, list[Feedback]] = {}  # lossless: feedback per sense, sent in one batch per drain
        self.changes: dict[int, list[ClusterChange]] = {}  # cluster changes announced for a seq
        self.processed = 0
        self.duplicates = 0
        self.ahead = 0  # live: excitations dropped for a time too far ahead of this clock
        self._max_ahead_ns = int(cdz.settings.max_ahead_s * 1e9)
        self.recalls = 0
        self._last_ack = time.monotonic()
        self._last_weights = 0.0
        self.refinements = 0  # refinement phases the brain has had (agent.core.refine); kept in the hub's part
        self.log_cluster = np.full(max(total, 0), -1, np.int64)  # per stimulus, like the in-process StreamLog
        self.log_recalled = np.full(max(total, 0), -1, np.int64)
        self.latency = Latency()  # live: a stimulus's event time -> its recall sent, all modalities
        self.latency_of = {m: Latency() for m in self.modalities}
        self._rate = Rate()
        self._next_of = logged_partner(self.modalities)

    @classmethod
    def from_run(cls, bus: BusClient, run: RunFolder, **kw) -> "Hub":
        config = run.config()
        cdz = CDZ(config.modalities, config.cdz, max_clusters=config.cortex.max_nodes, kernels=config.runtime.kernels)
        cdz.kernels.ready()  # compiled now, not on the first excitation
        with run.restoring(only=HUB_KEYS) as (step, state):
            cdz.load_state_dict(part(state, CDZ_PART))
            hub = cls(bus, cdz, run=run, start=step, **kw)
            hub._load_log(state, step)
            hub.holds = (step, int(state.get(REFINEMENTS, 0)))
        return hub

    def _load_log(self, state: dict[str, np.ndarray], step: int) -> None:
        # the refinement count travels with the hub's part, so every complete checkpoint has it
        self.refinements = int(state[REFINEMENTS]) if REFINEMENTS in state else 0
        if LOG_CLUSTER in state and len(self.log_cluster):
            n = min(step, len(state[LOG_CLUSTER]), len(self.log_cluster))
            self.log_cluster[:n] = state[LOG_CLUSTER][:n]
            self.log_recalled[:n] = state[LOG_RECALLED][:n]

    # ------------------------------------------------------------------ messages
    def handle(self, msg: Message) -> None:
        if isinstance(msg, Excitation):
            if self.lossless and msg.learn:
                if msg.seq < self.next_seq or msg.seq in self.waiting:
                    self.duplicates += 1
                    return
                self.waiting[msg.seq] = msg
                self._drain()
            elif self._too_far_ahead(msg):
                return
            else:
                self._process(msg)
        elif isinstance(msg, ClusterChange):
            if self.lossless:
                if msg.seq >= self.next_seq:
                    self.changes.setdefault(msg.seq, []).append(msg)
            else:
                self.unit.handle(msg)

    def _too_far_ahead(self, msg: Excitation) -> bool:
        """Live: an event time too far ahead of this clock (a wrong sensor clock); counted, logged once."""
        if msg.relived or msg.t_ns - self.bus_ns() <= self._max_ahead_ns:
            return False
        self.ahead += 1
        if self.ahead == 1:
            log.warning("dropped an excitation of %s stamped %.1f s ahead of this clock (cdz.max_ahead_s = %g); "
                        "further ones are counted as 'ahead' in the stats", msg.modality,
                        (msg.t_ns - self.bus_ns()) / 1e9, self._max_ahead_ns / 1e9)
        return True

    def _drain(self) -> None:
        while self.next_seq in self.waiting:
            seq = self.next_seq
            exc = self.waiting.pop(seq)
            for change in self.changes.pop(seq, []):
                self.unit.handle(change)
            self._process(exc)
            self.next_seq = seq + 1
            self.at_cut(self.next_seq)

    def _answer(self) -> None:
        """Lossless, once every waiting message is handled: the feedback of what was learned goes out
        (one batch per sense), then, if a worker or the player may be waiting for it, the progress."""
        self._flush()
        # blocked on the next seq: a worker may be waiting for this progress (the player only needs
        # it now and then); workers that just got feedback for the last seq know it already
        if any(told < self.next_seq for told in self._told.values()) or self.next_seq - self._acked >= 64:
            self._ack(time.monotonic())

    def _flush(self) -> None:
        for batch in self.outbox.values():
            self.send_batch(batch)
        self.outbox.clear()

    def _ack(self, now: float) -> None:
        """Every stimulus below `done` is learned and answered (feedback went out before this)."""
        self._last_ack = now
        self._acked = self.next_seq
        self._told = dict.fromkeys(self._told, self.next_seq)
        self.bus.send(Credit(seq=self.next_seq, t_ns=self._t_done, source=self.name, gen=self.gen))

    def _process(self, msg: Excitation) -> None:
        """Learn one excitation (unless it is a query or a rejection) and answer it."""
        m = msg.modality
        if m not in self.cdz.clusters:
            self.cdz.counters.unknown_modality += 1
            return
        feedback = self.unit.handle(msg)
        self.processed += 1
        self._rate.add()
        self._t_done = msg.t_ns
        if msg.cluster_id >= 0:  # recall first: a reconstruction waits on it, feedback on nobody live
            recalled = self.unit.recall(msg)
            if self.lossless and msg.seq < len(self.log_cluster):
                self.log_cluster[msg.seq] = msg.cluster_id
                got = recalled[self._next_of[m]]
                self.log_recalled[msg.seq] = -1 if got is None else got
            if self.recall_enabled and not msg.relived:
                now = time.monotonic()
                for other, cluster in recalled.items():
                    if cluster is not None and now - self._last_recall.get(other, -1e9) >= self.recall_interval:
                        self._last_recall[other] = now
                        self.bus.send(Recall(modality=other, t_ns=msg.t_ns, seq=msg.seq, cluster_id=cluster,
                                             cue_modality=m, cue_cluster=msg.cluster_id,
                                             source=self.name, gen=self.gen, internal=msg.internal, depth=msg.depth))
                        self.recalls += 1
        if msg.learn:
            self._send_feedback(msg, feedback)
        if not self.lossless and not msg.relived:
            ms = (self.bus_ns() - msg.t_ns) / 1e6
            self.latency.add(ms)
            self.latency_of[m].add(ms)

    def _send_feedback(self, msg: Excitation, feedback: list[Feedback]) -> None:
        """The CDZ's Feedback, one per modality that gets any (workers learn of empty seqs from acks)."""
        for fb in feedback:
            self._told[fb.modality] = msg.seq + 1
            if self.lossless:  # sent when the drain ends: one message per sense, not per stimulus
                batch = self.outbox.setdefault(fb.modality, [])
                batch.append(fb)  # stamped as the batch is sent
                if len(batch) >= BATCH:
                    self._flush()
            else:
                self.bus.send(self.stamp(fb))

    def on_control(self, msg: Control) -> None:
        if msg.command == "sleep":
            self.sleeping = bool(msg.args.get("on"))
        elif msg.command == "reload" and self.run_folder is not None and not self.lossless:
            self.reload(int(msg.args.get("id", 0)))
        else:
            super().on_control(msg)

    def reload(self, reload_id: int) -> None:
        """Live: take up the slept brain (the newest checkpoint) in this generation; say ready."""
        self.finish_writing()
        with self.run_folder.restoring(only=HUB_KEYS) as (step, state):
            holds = (step, int(state.get(REFINEMENTS, 0)))
            if holds != self.holds:  # a repeated reload, or a hub started after the sleep, holds it already
                self.cdz.load_state_dict(part(state, CDZ_PART))
                self._load_log(state, step)
                self.holds = holds
                self.reloads += 1
                log.info("hub: reloaded checkpoint %d (swap %d)", step, reload_id)
        self.ready(step=step, reload=reload_id)

    def rewind(self, gen: int) -> None:
        if self.run_folder is None:
            return super().rewind(gen)
        self.finish_writing()
        with self.run_folder.restoring(only=HUB_KEYS) as (step, state):
            self.cdz.load_state_dict(part(state, CDZ_PART))
            self._load_log(state, step)
        self.gen = gen
        self.next_seq = self._acked = step
        self._told = dict.fromkeys(self._told, step)
        self.waiting.clear()
        self.changes.clear()
        self.outbox.clear()
        log.info("hub: rewound to checkpoint %d (generation %d)", step, gen)
        self.ready(step=step)

    weights_every_s = 1.0  # live: how often viewers get the CDZ matrices

    def tick(self) -> None:
        now = time.monotonic()
        if self.lossless and self._acked < self.next_seq:
            self._answer()
        if self.lossless and now - self._last_ack > 0.2:  # keep a stalled player informed
            self._ack(now)
        if not self.lossless and now - self._last_weights >= self.weights_every_s:
            self._last_weights = now
            self.publish_weights()

    def publish_weights(self) -> None:
        """Every modality pair's W over live clusters, for viewers (skipped while empty or huge)."""
        for a, b in self.cdz.pairs:
            w, rows, cols = self.cdz.weights(a, b)
            if 0 < w.size and len(rows) <= 4096 and len(cols) <= 4096:
                self.bus.send(Weights(modality=a, t_ns=self.bus_ns(), seq=self.processed, target=b,
                                      rows=tuple(int(r) for r in rows),
                                      cols=tuple(int(c) for c in cols), data=np.ascontiguousarray(w, np.float32),
                                      source=self.name, gen=self.gen))

    # ------------------------------------------------------------------ checkpoints
    def snapshot(self, step: int) -> dict[str, np.ndarray]:
        """The hub's part of checkpoint `step`, copied: learning may go on while it is written."""
        state = as_part(CDZ_PART, self.cdz.state_dict())  # the CDZ's state_dict is copies already
        state[REFINEMENTS] = np.array(self.refinements, np.int64)
        if len(self.log_cluster):
            state[LOG_CLUSTER] = self.log_cluster[:step].copy()
            state[LOG_RECALLED] = self.log_recalled[:step].copy()
        return state

    def stats(self) -> dict:
        rate = self._rate.per_second()
        c = self.cdz.counters
        return {"role": "hub", "processed": self.processed, "rate_per_s": rate, "next_seq": self.next_seq,
                "queue": len(self.waiting), "duplicates": self.duplicates, "ahead": self.ahead,
                "rejected": self.unit.rejected, "pairs": c.pairs, "stale": c.stale, "refused_clusters": c.refused,
                "recalls": self.recalls, "sleeping": self.sleeping, "reloads": self.reloads,
                "latency_p50_ms": self.latency.percentile(50), "latency_p99_ms": self.latency.percentile(99),
                **{f"latency_p99_ms_{m}": lat.percentile(99) for m, lat in self.latency_of.items() if lat.values}}
