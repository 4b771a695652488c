"""`cdz think`: a stream of thought, the agent recalling from its own recollections.

The loop itself is a process of the runtime (`agent.runtime.thought.ThoughtLoop`); this
is its command line, which starts a hub and workers of its own unless `--bus` names a
running agent. Chains start from a file (`--from`), from noise when nothing happens
(`--spontaneous`), or from each real stimulus heard on the bus (`--from-live`).

`think_report` runs the very same step in process on a run's test digits and
measures how long chains stay on the digit they started from.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, NamedTuple

import numpy as np

from agent.runtime import flags
from agent.core.checkpoint import RunFolder
from agent.runtime.bus import BusClient
from agent.runtime.topology import hears

if TYPE_CHECKING:
    from agent.core.autoencoder import Autoencoder
    from agent.core.brain import Brain
    from agent.core.config import Config


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
    from replay.naming import scoring_names
    from replay.pipeline import load_brain

    loaded = load_brain(run)
    names = scoring_names(loaded.config, loaded.enc, loaded.brain)
    coders = {m: load_autoencoder(run.encoder_path(m)) for m in loaded.config.modalities}
    return Mind(loaded.config, loaded.brain, coders, names)


def think_step(mind: Mind, modality: str, x: np.ndarray) -> Step:
    """stimulus -> encode -> classify -> recall the next modality -> decode its mode
    (`agent.core.recollection`, the path the workers and the hub take on the bus)."""
    from agent.core.recollection import next_modality, recollect

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
    from agent.core.recollection import feed_back

    rng = rng or np.random.default_rng(0)
    steps = [think_step(mind, modality, x)]
    while len(steps) <= depth and steps[-1].next_x is not None:
        last = steps[-1]
        steps.append(think_step(mind, last.target, feed_back(last.next_x, noise, rng)))
    return steps


def _outcome(steps: list[Step], digit: int, depth: int, config: Config) -> dict:
    """stay: leading thoughts (depth >= 1) named `digit` (in a reward's steps: named the digit's
    reward class); then stayed, drifted (to what) or ended."""
    from replay.data.senses import sense

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
    from replay.data.splits import load_splits

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


# ---------------------------------------------------------------------- the command
def add_arguments(p: argparse.ArgumentParser) -> None:
    """`cdz think` options; the CLI adds --bus (default: start our own hub and workers), --keys, --quiet."""
    p.add_argument("--run", required=True, help="a trained run folder")
    p.add_argument("--from", dest="seed_file", metavar="FILE", help="start a chain from an image or a .wav")
    p.add_argument("--spontaneous", action="store_true", help="when idle, start chains from noise")
    p.add_argument("--from-live", action="store_true", help="every real stimulus on the bus starts a new chain")
    p.add_argument("--rate", type=flags.POSITIVE, default=2.0, help="thoughts per second at most (default 2)")
    p.add_argument("--max-depth", type=flags.COUNT, default=20, help="thoughts per chain at most (default 20)")
    p.add_argument("--duration", type=flags.POSITIVE, help="stop after this many seconds")
    p.add_argument("--noise", type=flags.NON_NEGATIVE, default=0.0, help="std of noise added to each recollection (default 0)")
    p.add_argument("--learn-from-thoughts", dest="learn", action="store_true",
                   help="let thoughts teach the cortex and the CDZ (default: thinking changes nothing)")
    p.add_argument("--log", metavar="FILE.jsonl", help="one JSON line per thought")
    p.add_argument("--save", action="store_true",
                   help="keep what the agent learns while thinking: checkpoint into RUN (default: RUN is only read; "
                        "the thinking runs on a scratch copy)")
    p.add_argument("--rng-seed", type=flags.SEED, default=0, help="seed of the noise and spontaneous seeds")
    p.add_argument("--report", action="store_true",
                   help="no bus: print think_report (chains from test digits, in process) as JSON and exit")


def _describe(e: dict) -> str:
    end = f"  [{e['end']}]" if "end" in e else ""
    return (f"chain {e['chain']} depth {e['depth']:>2} {e['modality']} cluster {e['cluster']} ({e['name']})"
            f" -> {e['recalled_modality']} {e['recalled']} ({e['recalled_name']}){end}")


def run(args: argparse.Namespace) -> int:
    from agent.core.autoencoder import load_autoencoder
    from agent.runtime.thought import ThoughtLoop
    from replay.naming import run_names
    from tools.live import LiveAgent

    from agent.pack import open_run, open_writable_run

    run_folder = open_writable_run(args.run) if getattr(args, "save", False) else open_run(args.run)
    config = run_folder.config()
    run_folder.load_checkpoint()  # a clear error now if the run was never trained
    if getattr(args, "report", False):
        json.dump(think_report(run_folder), sys.stdout)
        sys.stdout.write("\n")
        return 0
    if not (args.seed_file or args.spontaneous or args.from_live):
        raise ValueError("cdz think needs a seed: --from FILE, --spontaneous or --from-live")
    shapes = {m: tuple(load_autoencoder(run_folder.encoder_path(m)).input_shape) for m in config.modalities}
    scratch = None
    if not args.bus:  # our own hub and workers: they checkpoint into the run only with --save
        lived_in = run_folder
        if not args.save:
            from agent.api import Agent

            scratch = tempfile.TemporaryDirectory(prefix="cdz-think-")
            lived_in = Agent.load(run_folder.path).save(Path(scratch.name) / "run")
    agent = None if args.bus else LiveAgent(lived_in, camera=None, use_mic=False, viewer=False)
    out = open(args.log, "w") if args.log else None
    client = None
    try:
        if agent is not None:
            agent.start()
        client = BusClient(args.bus or agent.bus, "thinker", hears("thinker"),
                           keys=getattr(args, "keys", None) if agent is None else agent.keys)
        client.handshake(timeout_s=30.0)
        quiet = getattr(args, "quiet", False)
        loop = ThoughtLoop(client, tuple(config.modalities), shapes, rate=args.rate, max_depth=args.max_depth,
                           max_duration=args.duration, noise=args.noise, learn_from_thoughts=args.learn,
                           spontaneous=args.spontaneous, from_live=args.from_live, names=run_names(run_folder),
                           log_file=out, seed=args.rng_seed,
                           on_thought=None if quiet else lambda e: print(_describe(e), flush=True))
        if agent is not None:
            loop.hooks.append(_tender(agent))
        if args.seed_file:
            from sensors.files import read_file

            first = read_file(Path(args.seed_file))[0]  # a picture, or the first word of a recording
            loop.seed_stimulus(first.modality, first.x)
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
        if scratch is not None:
            scratch.cleanup()
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
