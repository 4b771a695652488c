"""`cdz think`: the stream of thought, each recollection fed back as a stimulus of its own sense
(`agent.runtime.thought`). It starts a hub and workers of its own unless --bus names a running
agent; chains start from a file, from noise when idle, or from each real stimulus heard."""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from agent.runtime import flags
from agent.runtime.topology import Process

PROCESS = Process(
    "thinker", ("think",), "stream of thought: recollections fed back as stimuli of their own sense",
    ("cdz think --run runs/latest --from seven.png", "cdz think --run runs/latest --bus tcp://127.0.0.1:5570 --from-live"),
    hears=("recon.", "excite.", "stimulus."), says=("stimulus.{m}",), light=False,
    description="Stream of thought: each recollection is fed back as a stimulus of its own sense.")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--bus", help="join the processes on this bus (default: start a hub and workers of our own)")
    p.add_argument("--keys", metavar="DIR", help="CurveZMQ key folder (required off loopback)")
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
    from agent.runtime.bus import BusClient
    from agent.runtime.thought import ThoughtLoop
    from replay.naming import run_names
    from tools.live import LiveAgent
    from tools.think import think_report

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
        client = BusClient(args.bus or agent.bus, PROCESS.kind, PROCESS.topics(),
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
