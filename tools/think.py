"""`cdz think`: a stream of thought, the agent recalling from its own recollections.

A thought is a reconstruction fed back as a stimulus of its own modality: that
modality's worker classifies it (`learn=False`: a query, nothing changes), the hub
recalls the partner cluster in the next modality, that worker decodes the
cluster's mode, and the decoded mode becomes the next thought. Chains start from a
file (`--from`), from noise when nothing happens (`--spontaneous`), or from each
real stimulus heard on the bus (`--from-live`); real input always interrupts a
chain at once.

The hub builds its Recall from an Excitation, which carries no depth, so a Reconstruction's own
`depth`/`internal` fields say nothing: the loop tracks every thought by its
sequence number (a Reconstruction has the seq of the stimulus that caused it), in a range
far above any sensor's.

`think_report` runs the very same step in process on a run's test digits and
measures how long chains stay on the digit they started from.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
import itertools
from collections import Counter, deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Callable, NamedTuple

import numpy as np

from agent.runtime.bus import BusClient
from agent.core.checkpoint import RunFolder
from agent.runtime.service import Service
from agent.core.stream import logged_partner
from agent.core.messages import Excitation, Message, Reconstruction, Stimulus
from agent.runtime.topology import hears

if TYPE_CHECKING:
    from agent.core.autoencoder import Autoencoder
    from agent.core.brain import Brain
    from agent.core.config import Config

log = logging.getLogger(__name__)

SEQ_BASE = 1 << 40  # thoughts' sequence numbers: sensors count from 0 and never get here
_instances = itertools.count()  # each loop of a process gets its own range of 2**20 seqs


def next_modality(modalities: tuple[str, ...], modality: str) -> str:
    """The modality a thought in `modality` recalls (round robin, as the hub logs it)."""
    return logged_partner(modalities)[modality]


def feed_back(recon: np.ndarray, noise: float, rng: np.random.Generator) -> np.ndarray:
    """A reconstruction as the next stimulus: Gaussian noise (std `noise`) lets the chain wander."""
    x = np.asarray(recon, np.float32)
    if noise > 0:
        x = x + rng.normal(0.0, noise, x.shape).astype(np.float32)
    return np.clip(x, 0.0, 1.0).astype(np.float32)


def noise_stimulus(shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    """A spontaneous seed: uniform noise in the stimulus shape, no input behind it."""
    return rng.random(shape, dtype=np.float32)


# ---------------------------------------------------------------------- in process
class Step(NamedTuple):
    """One thought in process: what `x` excited and what that recalls next."""

    modality: str
    cluster: int  # -1: rejected
    name: int | None  # scoring name of `cluster`
    target: str  # the modality recalled
    recalled: int | None  # None: the cluster recalls nothing there
    recalled_name: int | None
    next_x: np.ndarray | None  # the decoded mode: the next thought (None: the chain ends)


@dataclass
class Mind:
    """A run's brain, autoencoders and scoring names, to think without the bus."""

    config: Config
    brain: Brain
    coders: dict[str, Autoencoder]
    names: dict[str, dict[int, int]]

    @property
    def modalities(self) -> tuple[str, ...]:
        return tuple(self.config.modalities)


def load_mind(run: RunFolder) -> Mind:
    from agent.core.autoencoder import load_autoencoder
    from tools.evaluate import scoring_names
    from replay.pipeline import load_brain

    loaded = load_brain(run)
    names = scoring_names(loaded.config, loaded.enc, loaded.brain)
    coders = {m: load_autoencoder(run.encoder_path(m)) for m in loaded.config.modalities}
    return Mind(loaded.config, loaded.brain, coders, names)


def think_step(mind: Mind, modality: str, x: np.ndarray) -> Step:
    """stimulus -> encode -> classify -> recall the next modality -> decode its mode
    (`agent.core.recollection`, the path the workers and the hub take on the bus)."""
    from agent.core.recollection import recollect

    target = next_modality(mind.modalities, modality)
    r = recollect(mind.brain, mind.coders, modality, x)
    got = r.recalled[target]
    name = mind.names[modality].get(r.cluster)
    if r.cluster < 0 or got < 0:
        return Step(modality, r.cluster, name, target, None, None, None)
    return Step(modality, r.cluster, name, target, got, mind.names[target].get(got), r.imagined[target])


def think_chain(mind: Mind, modality: str, x: np.ndarray, depth: int, noise: float = 0.0,
                rng: np.random.Generator | None = None) -> list[Step]:
    """The seed's step (depth 0), then up to `depth` thoughts (fewer if the chain dies)."""
    rng = rng or np.random.default_rng(0)
    steps = [think_step(mind, modality, x)]
    while len(steps) <= depth and steps[-1].next_x is not None:
        last = steps[-1]
        steps.append(think_step(mind, last.target, feed_back(last.next_x, noise, rng)))
    return steps


def _outcome(steps: list[Step], digit: int, depth: int, config: Config) -> dict:
    """stay: leading thoughts (depth >= 1) named `digit` (in a reward's steps: named the digit's
    reward class); then stayed, drifted (to what) or ended."""
    from replay.senses import sense

    def expected(modality: str) -> int:
        return int(sense(modality).scored(config, np.array([digit]))[0])

    names = [s.name for s in steps[1:]]
    stay = next((k for k, s in enumerate(steps[1:]) if s.name != expected(s.modality)), len(names))
    out = {"stay": stay, "seed_on_digit": steps[0].name == expected(steps[0].modality), "drift_to": None,
           "drift_step": None}
    if stay >= depth:
        out["end"] = "stayed"
    elif stay < len(names):
        out.update(end="drifted", drift_to="none" if names[stay] is None else str(names[stay]), drift_step=stay + 1)
    else:
        out["end"] = "ended"  # the chain died (nothing recalled) while still on the digit
    return out


def _summary(outcomes: list[dict]) -> dict:
    n = len(outcomes)
    ends = Counter(o["end"] for o in outcomes)
    drift_steps = [o["drift_step"] for o in outcomes if o["drift_step"] is not None]
    return {"chains": n, "mean_stay": float(np.mean([o["stay"] for o in outcomes])) if n else 0.0,
            "stayed": ends["stayed"] / n if n else 0.0, "drifted": ends["drifted"] / n if n else 0.0,
            "ended": ends["ended"] / n if n else 0.0,
            "seed_on_digit": sum(o["seed_on_digit"] for o in outcomes) / n if n else 0.0,
            "mean_drift_step": float(np.mean(drift_steps)) if drift_steps else None,
            "drift_to": dict(sorted(Counter(o["drift_to"] for o in outcomes if o["drift_to"] is not None).items()))}


def think_report(run: RunFolder, per_digit: int = 5, depth: int = 10) -> dict:
    """Chains of `depth` thoughts from the first `per_digit` test stimuli of every digit and modality,
    in process and without noise (a pure function of the run): how long they stay on their digit
    (by scoring name), the share that drift off it within `depth` thoughts, and where to."""
    from replay.splits import load_splits

    mind = load_mind(run)
    tests = load_splits(mind.config, "test")
    by_modality: dict[str, list[dict]] = {}
    by_digit: dict[str, list[dict]] = {}
    for m in mind.modalities:
        split = tests[m]
        for d in np.unique(split.y):
            for i in np.flatnonzero(split.y == d)[:per_digit]:
                o = _outcome(think_chain(mind, m, split.x[i], depth), int(d), depth, mind.config)
                by_modality.setdefault(m, []).append(o)
                by_digit.setdefault(str(int(d)), []).append(o)
    everything = [o for os_ in by_modality.values() for o in os_]
    return {"depth": depth, "per_digit": per_digit, **_summary(everything),
            "modalities": {m: _summary(v) for m, v in by_modality.items()},
            "digits": {d: _summary(v) for d, v in sorted(by_digit.items(), key=lambda kv: int(kv[0]))}}


# ---------------------------------------------------------------------- on the bus
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

    def seed_file(self, path: Path | str) -> str:
        """Queue a chain from an image (visual) or a wav (audio); returns the modality."""
        from tools.recall import read_stimulus

        modality, x = read_stimulus(Path(path))
        self.seed_stimulus(modality, x)
        return modality

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
        self._finish(p.entry)
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
        seq, self._seq = self._seq, self._seq + 1
        self.bus.send(Stimulus(modality, time.time_ns(), seq, data, source=self.name, gen=self.gen,
                               mseq=self._mseq.get(modality, 0), learn=self.learn, internal=True, depth=depth))
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
        entries = [self.pending.pop(s).entry for s in mine] + ([last] if last is not None else [])
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


# ---------------------------------------------------------------------- the command
def add_arguments(p: argparse.ArgumentParser) -> None:
    """`cdz think` options; the CLI adds --bus (default: start our own hub and workers), --keys, --quiet."""
    p.add_argument("--run", required=True, help="a trained run folder")
    p.add_argument("--from", dest="seed_file", metavar="FILE", help="start a chain from an image or a .wav")
    p.add_argument("--spontaneous", action="store_true", help="when idle, start chains from noise")
    p.add_argument("--from-live", action="store_true", help="every real stimulus on the bus starts a new chain")
    p.add_argument("--rate", type=float, default=2.0, help="thoughts per second at most (default 2)")
    p.add_argument("--max-depth", type=int, default=20, help="thoughts per chain at most (default 20)")
    p.add_argument("--duration", type=float, help="stop after this many seconds")
    p.add_argument("--noise", type=float, default=0.0, help="std of noise added to each recollection (default 0)")
    p.add_argument("--learn-from-thoughts", dest="learn", action="store_true",
                   help="let thoughts teach the cortex and the CDZ (default: thinking changes nothing)")
    p.add_argument("--log", metavar="FILE.jsonl", help="one JSON line per thought")
    p.add_argument("--rng-seed", type=int, default=0, help="seed of the noise and spontaneous seeds")
    p.add_argument("--report", action="store_true",
                   help="no bus: print think_report (chains from test digits, in process) as JSON and exit")


def _describe(e: dict) -> str:
    end = f"  [{e['end']}]" if "end" in e else ""
    return (f"chain {e['chain']} depth {e['depth']:>2} {e['modality']} cluster {e['cluster']} ({e['name']})"
            f" -> {e['recalled_modality']} {e['recalled']} ({e['recalled_name']}){end}")


def run(args: argparse.Namespace) -> int:
    from agent.core.autoencoder import load_autoencoder
    from tools.live import LiveAgent, scoring_names

    run_folder = RunFolder(args.run)
    config = run_folder.config()
    run_folder.load_checkpoint()  # a clear error now if the run was never trained
    if getattr(args, "report", False):
        json.dump(think_report(run_folder), sys.stdout)
        sys.stdout.write("\n")
        return 0
    if not (args.seed_file or args.spontaneous or args.from_live):
        raise ValueError("cdz think needs a seed: --from FILE, --spontaneous or --from-live")
    shapes = {m: tuple(load_autoencoder(run_folder.encoder_path(m)).input_shape) for m in config.modalities}
    agent = None if args.bus else LiveAgent(run_folder, camera=None, use_mic=False, viewer=False)
    out = open(args.log, "w") if args.log else None
    client = None
    try:
        if agent is not None:
            agent.start()
        client = BusClient(args.bus or agent.bus, "thinker", hears("thinker"),
                           keys=getattr(args, "keys", None))
        client.handshake(timeout_s=30.0)
        quiet = getattr(args, "quiet", False)
        loop = ThoughtLoop(client, tuple(config.modalities), shapes, rate=args.rate, max_depth=args.max_depth,
                           max_duration=args.duration, noise=args.noise, learn_from_thoughts=args.learn,
                           spontaneous=args.spontaneous, from_live=args.from_live, names=scoring_names(run_folder),
                           log_file=out, seed=args.rng_seed,
                           on_thought=None if quiet else lambda e: print(_describe(e), flush=True))
        if agent is not None:
            loop.hooks.append(_tender(agent))
        if args.seed_file:
            loop.seed_file(args.seed_file)
        loop.run(timeout_ms=10)
        loop.finish()
        s = loop.stats()
        print(f"cdz think: {s['thoughts']} thoughts in {s['chains']} chains ({s['completed']} complete, "
              f"{s['interrupted']} interrupted, {s['stalled']} stalled)", file=sys.stderr)
    finally:
        if client is not None:
            client.close()
        if agent is not None:
            agent.stop()
        if out is not None:
            out.close()
    return 0


def _tender(agent) -> Callable[[], None]:
    """Once a second: restart our own processes if one died, and empty the agent's inbox."""
    last = [0.0]

    def tend() -> None:
        now = time.monotonic()
        if now - last[0] < 1.0:
            return
        last[0] = now
        agent._supervise()
        while agent.client is not None and agent.client.recv_ready() is not None:
            pass

    return tend
