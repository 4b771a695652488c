"""The hub: the process that owns the CDZ (the only owner of cross-modal weights).

It hears every modality's excitations and cluster changes, correlates them within
the window B with the very `CDZ` of the one-process brain, sends feedback to the
cortices and asks the other modalities' workers to reconstruct what they recall.

It hosts the `CDZUnit` of `agent.core.units`. How excitations come in and feedback
goes out is its flow (`agent.runtime.flows`): lossless, strictly in sequence order with
batched feedback and credits, or live, on arrival. Live, the CDZ pairs by event time and
keeps excitations `reorder_slack_s` longer, so a late arrival still pairs with what came
before it. An excitation stamped more than `cdz.max_ahead_s` ahead of the hub's clock is
dropped and counted (`ahead`): one such time would move the window's end, and every
true excitation after it would arrive too late to pair.
"""

from __future__ import annotations

import logging
import time

import numpy as np

from agent.runtime.bus import BusClient
from agent.runtime.flows import LiveHub, LosslessHub
from agent.core.cdz import CDZ
from agent.core.checkpoint import CDZ_PART, LOG_CLUSTER, LOG_RECALLED, REFINEMENTS, RunFolder, as_part, part
from agent.runtime.service import Latency, PartOwner, Rate
from agent.core.stream import logged_partner
from agent.core.units import CDZUnit
from agent.core.messages import ClusterChange, Control, Excitation, Message, Recall, Weights

log = logging.getLogger(__name__)

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
        self.t_done = 0  # event time (ns) of the last processed stimulus
        self.next_seq = start  # lossless: the seq learned next
        self.processed = 0
        self.duplicates = 0
        self.ahead = 0  # live: excitations dropped for a time too far ahead of this clock
        self._max_ahead_ns = int(cdz.settings.max_ahead_s * 1e9)
        self.recalls = 0
        self.refinements = 0  # refinement phases the brain has had (agent.core.refine); kept in the hub's part
        self.log_cluster = np.full(max(total, 0), -1, np.int64)  # per stimulus, like the in-process StreamLog
        self.log_recalled = np.full(max(total, 0), -1, np.int64)
        self.latency = Latency()  # live: a stimulus's event time -> its recall sent, all modalities
        self.latency_of = {m: Latency() for m in self.modalities}
        self._rate = Rate()
        self.logged_partner = logged_partner(self.modalities)  # the sense whose recall the stream log keeps
        self.flow = LosslessHub(self, start) if lossless else LiveHub(self)

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
            self.flow.excitation(msg)
        elif isinstance(msg, ClusterChange):
            self.flow.cluster_change(msg)

    def too_far_ahead(self, msg: Excitation) -> bool:
        """An event time too far ahead of this clock (a wrong sensor clock); counted, logged once."""
        if msg.relived or msg.t_ns - self.bus_ns() <= self._max_ahead_ns:
            return False
        self.ahead += 1
        if self.ahead == 1:
            log.warning("dropped an excitation of %s stamped %.1f s ahead of this clock (cdz.max_ahead_s = %g); "
                        "further ones are counted as 'ahead' in the stats", msg.modality,
                        (msg.t_ns - self.bus_ns()) / 1e9, self._max_ahead_ns / 1e9)
        return True

    def process(self, msg: Excitation) -> None:
        """Learn one excitation (unless it is a query or a rejection) and answer it."""
        m = msg.modality
        if m not in self.cdz.clusters:
            self.cdz.counters.unknown_modality += 1
            return
        feedback = self.unit.handle(msg)
        self.processed += 1
        self._rate.add()
        self.t_done = msg.t_ns
        recalled = None
        if msg.cluster_id >= 0:  # recall first: a reconstruction waits on it, feedback on nobody live
            recalled = self.unit.recall(msg)
            if self.recall_enabled and not msg.relived:
                now = time.monotonic()
                for other, cluster in recalled.items():
                    if cluster is not None and now - self._last_recall.get(other, -1e9) >= self.recall_interval:
                        self._last_recall[other] = now
                        self.bus.send(Recall(modality=other, t_ns=msg.t_ns, seq=msg.seq, cluster_id=cluster,
                                             cue_modality=m, cue_cluster=msg.cluster_id,
                                             source=self.name, gen=self.gen, internal=msg.internal, depth=msg.depth))
                        self.recalls += 1
        if msg.learn:  # the CDZ's Feedback, one per modality that gets any (workers learn of empty seqs from credits)
            for fb in feedback:
                self.flow.send_feedback(msg, fb)
        self.flow.processed(msg, recalled)

    def on_control(self, msg: Control) -> None:
        if msg.command == "sleep":
            self.sleeping = bool(msg.args.get("on"))
        elif msg.command == "reload" and self.run_folder is not None and self.flow.swaps:
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
        self.next_seq = step
        self.flow.reset(step)
        log.info("hub: rewound to checkpoint %d (generation %d)", step, gen)
        self.ready(step=step)

    def tick(self) -> None:
        self.flow.tick(time.monotonic())

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
                "queue": self.flow.queued(), "duplicates": self.duplicates, "ahead": self.ahead,
                "rejected": self.unit.rejected, "pairs": c.pairs, "stale": c.stale, "refused_clusters": c.refused,
                "recalls": self.recalls, "sleeping": self.sleeping, "reloads": self.reloads,
                "latency_p50_ms": self.latency.percentile(50), "latency_p99_ms": self.latency.percentile(99),
                **{f"latency_p99_ms_{m}": lat.percentile(99) for m, lat in self.latency_of.items() if lat.values}}
