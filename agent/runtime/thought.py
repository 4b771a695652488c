"""The stream of thought on the bus: a process that feeds each reconstruction back as a stimulus.

A thought is a reconstruction fed back as a stimulus of its own modality: that
modality's worker classifies it (`learn=False`: a query, nothing changes), the hub
recalls the partner cluster in the next modality, that worker decodes the
cluster's mode, and the decoded mode becomes the next thought. Chains start from a
given stimulus, from noise when nothing happens (`spontaneous`), or from each real
stimulus heard on the bus (`from_live`); real input always interrupts a chain at once.

The hub builds its Recall from an Excitation, which carries no depth, so a Reconstruction's own
`depth`/`internal` fields say nothing: the loop tracks every thought by its
sequence number (a Reconstruction has the seq of the stimulus that caused it), in a range
far above any sensor's. `cdz think` (tools/processes/thinker.py) is its command line.
"""

from __future__ import annotations

import itertools
import json
import os
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import IO

import numpy as np

from agent.core.messages import Excitation, Message, Reconstruction, Stimulus
from agent.core.recollection import feed_back, next_modality, noise_stimulus
from agent.runtime.bus import BusClient
from agent.runtime.service import Service

SEQ_BASE = 1 << 40  # thoughts' sequence numbers: sensors count from 0 and never get here
_instances = itertools.count()  # each loop of a process gets its own range of 2**20 seqs


@dataclass
class _Pending:
    chain: int
    depth: int
    modality: str
    entry: dict = field(repr=False)


class ThoughtLoop(Service):
    """Feeds each reconstruction of a chain back as a stimulus, at most `rate` per second.

    `chain` lists every thought sent (seeds at depth 0 included) as a dict: t, elapsed,
    chain, depth, seq, modality, cluster, name, recalled_modality, recalled,
    recalled_name; the last thought of a chain also says how it ended."""

    def __init__(self, bus: BusClient, modalities: tuple[str, ...], shapes: dict[str, tuple[int, ...]] | None = None,
                 *, rate: float = 2.0, max_depth: int = 20, max_duration: float | None = None, noise: float = 0.0,
                 learn_from_thoughts: bool = False, spontaneous: bool = False, from_live: bool = False,
                 names: dict[str, dict[int, int]] | None = None, log_file: IO[str] | None = None,
                 exit_when_idle: bool | None = None, answer_s: float = 2.0, quiet_s: float = 1.0, seed: int = 0,
                 seq_base: int | None = None, clock: Callable[[], float] = time.monotonic,
                 on_thought: Callable[[dict], None] | None = None):
        super().__init__(bus)
        if rate <= 0 or max_depth < 1:
            raise ValueError("think: rate must be > 0 and max_depth >= 1")
        self.modalities = tuple(modalities)
        self.shapes = shapes or {}
        self.gap_s = 1.0 / rate
        self.max_depth = max_depth
        self.max_duration = max_duration
        self.noise = noise
        self.learn = learn_from_thoughts
        self.spontaneous = spontaneous
        self.from_live = from_live
        self.names = names or {}
        self.log_file = log_file
        self.exit_when_idle = not (spontaneous or from_live) if exit_when_idle is None else exit_when_idle
        self.answer_s = answer_s  # no answer this long after a thought: the chain stalled (nothing recalled)
        self.quiet_s = quiet_s  # spontaneous chains start only this long after the last real input
        self.rng = np.random.default_rng(seed)
        self.clock = clock
        self.on_thought = on_thought
        self.hooks: list[Callable[[], None]] = []  # called every tick (e.g. supervising our own processes)
        self._seq = seq_base if seq_base is not None else \
            SEQ_BASE + (((os.getpid() & 0xFFF) << 8 | next(_instances) & 0xFF) << 20)
        self.seeds: deque[tuple[str, np.ndarray]] = deque()
        self.pending: dict[int, _Pending] = {}  # seq -> the thought it is (its Reconstruction has the same seq)
        self.chain: list[dict] = []
        self.endings: dict[int, str] = {}  # chain id -> how it ended (see _end_chain)
        self.active: int | None = None  # the chain being thought
        self.depth = 0  # depth of the active chain's last thought
        self._answered: dict | None = None  # the active chain's last answered thought, logged when the next is sent
        self._next: tuple[str, np.ndarray, int] | None = None  # (modality, stimulus, depth) waiting for the rate
        self._awaiting: tuple[int, float] | None = None  # (seq, deadline) of the thought whose answer is due
        self._mseq: dict[str, int] = {}  # last real mseq per modality: reusing it is neither a gap nor a skip
        self._t0 = clock()
        self._last_sent = -1e18
        self._last_real = -1e18
        self._recent_sends: deque[float] = deque()
        self.chains = self.thoughts = self.interrupted = self.real_seen = 0
        self.interrupted_at: list[float] = []  # clock time of each interruption

    # ------------------------------------------------------------------ seeds
    def seed_stimulus(self, modality: str, data: np.ndarray) -> None:
        """Queue a chain starting from this stimulus (it starts when no chain runs)."""
        if modality not in self.modalities:
            raise ValueError(f"this run has modalities {self.modalities}, not {modality!r}")
        self.seeds.append((modality, np.ascontiguousarray(data, np.float32)))

    # ------------------------------------------------------------------ messages
    def handle(self, msg: Message) -> None:
        if isinstance(msg, Stimulus):
            self._on_stimulus(msg)
        elif isinstance(msg, Excitation):
            p = self.pending.get(msg.seq)
            if p is not None and msg.modality == p.modality:
                p.entry.update(cluster=msg.cluster_id, name=self._name(p.modality, msg.cluster_id))
                if msg.cluster_id < 0 and p.chain == self.active:
                    self._end_chain("rejected")
        elif isinstance(msg, Reconstruction):
            self._on_recon(msg)

    def _on_stimulus(self, stim: Stimulus) -> None:
        if stim.source == self.name or stim.internal:
            return  # our own thoughts, or another thinker's: not input
        self.real_seen += 1
        self._last_real = self.clock()
        self._mseq[stim.modality] = stim.mseq
        if self.active is not None:
            self.interrupted += 1
            self.interrupted_at.append(self._last_real)
            self._end_chain("interrupted")
        if self.from_live and stim.modality in self.modalities:
            self.seeds.clear()  # the newest input wins
            self.seeds.append((stim.modality, np.array(stim.data, np.float32)))

    def _on_recon(self, recon: Reconstruction) -> None:
        p = self.pending.get(recon.seq)
        if p is None or recon.cue_modality != p.modality or recon.modality != next_modality(self.modalities,
                                                                                              p.modality):
            return
        del self.pending[recon.seq]
        p.entry.update(recalled=recon.cluster_id, recalled_name=self._name(recon.modality, recon.cluster_id))
        if p.chain != self.active:
            return self._finish(p.entry)
        self._awaiting = None
        if p.depth >= self.max_depth:
            return self._end_chain("complete", last=p.entry)
        self._answered = p.entry  # logged once the next is sent, or with how the chain ended
        self._next = (recon.modality, feed_back(recon.data, self.noise, self.rng), p.depth + 1)

    # ------------------------------------------------------------------ the loop
    def tick(self) -> None:
        for hook in self.hooks:
            hook()
        now = self.clock()
        if self.max_duration is not None and now - self._t0 >= self.max_duration:
            self.running = False
            return
        if self._awaiting is not None and now > self._awaiting[1]:
            self._end_chain("stalled")
        if self.active is None and self._next is None:
            if self.seeds:
                self._start(*self.seeds.popleft())
            elif self.spontaneous and now - self._last_real >= self.quiet_s and self.shapes:
                m = self.modalities[int(self.rng.integers(len(self.modalities)))]
                self._start(m, noise_stimulus(self.shapes[m], self.rng))
            elif self.exit_when_idle:
                self.running = False
                return
        if self._next is not None and now - self._last_sent >= self.gap_s:
            self._send(*self._next)

    def _start(self, modality: str, data: np.ndarray) -> None:
        self.active = self.chains
        self.chains += 1
        self.depth = 0
        self._next = (modality, data, 0)

    def _send(self, modality: str, data: np.ndarray, depth: int) -> None:
        now = self.clock()
        if self._answered is not None:
            self._finish(self._answered)
            self._answered = None
        seq, self._seq = self._seq, self._seq + 1
        self.bus.send(Stimulus(modality=modality, t_ns=self.bus_ns(), seq=seq, data=data, source=self.name,
                               gen=self.gen, mseq=self._mseq.get(modality, 0), learn=self.learn, internal=True,
                               depth=depth))
        entry = {"t": time.time(), "elapsed": now - self._t0, "chain": self.active, "depth": depth, "seq": seq,
                 "modality": modality, "cluster": None, "name": None,
                 "recalled_modality": next_modality(self.modalities, modality), "recalled": None,
                 "recalled_name": None}
        self.chain.append(entry)
        self.pending[seq] = _Pending(self.active, depth, modality, entry)
        self._next = None
        self._awaiting = (seq, now + self.answer_s)
        self._last_sent = now
        self.depth = depth
        if depth >= 1:
            self.thoughts += 1
            self._recent_sends.append(now)

    def _end_chain(self, how: str, last: dict | None = None) -> None:
        """Stop the active chain (complete / interrupted / stalled / rejected / stopped): nothing more
        of it is sent, late answers are ignored."""
        if self.active is None:
            return
        mine = sorted((s for s, p in self.pending.items() if p.chain == self.active))
        entries = [self.pending.pop(s).entry for s in mine] + [e for e in (last, self._answered) if e is not None]
        self._answered = None
        entries.sort(key=lambda e: e["seq"])
        if entries:
            entries[-1]["end"] = how
        for e in entries:
            self._finish(e)
        self.endings[self.active] = how
        self.active, self._next, self._awaiting = None, None, None

    def finish(self) -> None:
        """Log the thoughts still under way (the loop ended: duration, Ctrl-C, stop)."""
        self._end_chain("stopped")

    def _finish(self, entry: dict) -> None:
        if self.log_file is not None:
            self.log_file.write(json.dumps(entry) + "\n")
            self.log_file.flush()
        if self.on_thought is not None:
            self.on_thought(entry)

    def _name(self, modality: str, cluster: int) -> int | None:
        return self.names.get(modality, {}).get(int(cluster))

    def stats(self) -> dict:
        now = self.clock()
        while self._recent_sends and self._recent_sends[0] < now - 5.0:
            self._recent_sends.popleft()
        span = min(5.0, max(now - self._t0, 1e-9))
        ends = Counter(self.endings.values())
        return {"role": "thinker", "thoughts": self.thoughts, "chains": self.chains, "interrupted": self.interrupted,
                "depth": self.depth if self.active is not None else 0, "rate": len(self._recent_sends) / span,
                "completed": ends["complete"], "stalled": ends["stalled"], "rejected": ends["rejected"],
                "real_seen": self.real_seen, "pending": len(self.pending)}
