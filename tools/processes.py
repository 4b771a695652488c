"""Entry points of the runtime processes: `cdz bus`, `cdz hub`, `cdz worker`, `cdz play`.

Each is runnable on its own with `--bus ADDRESS`, so the processes can be spread
over machines; `cdz replay --distributed` starts them all on one. Every process
connects, proves its subscriptions work (a hello round trip), loads the newest
complete checkpoint of the run, says `ready`, and runs until a `stop` message,
SIGTERM or Ctrl-C.
"""

from __future__ import annotations

import argparse
import logging
import sys

from agent.bus import DEFAULT_BUS, BusClient, Forwarder, make_keys
from agent.checkpoint import RunFolder


def _logging(quiet: bool) -> None:
    logging.basicConfig(level=logging.WARNING if quiet else logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")


def _client(args: argparse.Namespace, name: str, topics: list[bytes]) -> BusClient:
    client = BusClient(args.bus, name, topics, keys=args.keys)
    client.handshake(timeout_s=args.connect_timeout)
    return client


def _profiled(fn, name: str) -> None:
    """Run `fn`, under cProfile into $CDZ_PROFILE/<name>.prof when that is set (for benchmarks)."""
    import os

    folder = os.environ.get("CDZ_PROFILE")
    if not folder:
        fn()
        return
    import cProfile

    prof = cProfile.Profile()
    try:
        prof.runcall(fn)
    finally:
        os.makedirs(folder, exist_ok=True)
        prof.dump_stats(os.path.join(folder, f"{name}.prof"))


def cmd_bus(args: argparse.Namespace) -> int:
    _logging(args.quiet)
    fwd = Forwarder(args.bus, keys=args.keys)
    print(f"bus: publishers -> {fwd.address.pub}, subscribers -> {fwd.address.sub}"
          f"{' (CurveZMQ)' if fwd.keys else ''}", file=sys.stderr, flush=True)
    try:
        fwd.run()
    except KeyboardInterrupt:
        pass
    finally:
        fwd.close()
    return 0


def cmd_top(args: argparse.Namespace) -> int:
    from tools.top import top

    return top(args.bus, keys=args.keys, once=args.once, wait_s=args.wait, as_json=args.json)


def cmd_keys(args: argparse.Namespace) -> int:
    folder = make_keys(args.folder)
    print(f"CurveZMQ keys in {folder}: give this folder to the bus and to every process (--keys {folder}); "
          "keep *.key_secret private", file=sys.stderr)
    return 0


def _total(args: argparse.Namespace, run: RunFolder) -> int:
    """--total, or for a lossless process started by hand, the length of the run's teaching stream."""
    if args.total or args.live:
        return args.total
    from tools.train import Encodings, build_stream

    config = run.config()
    return len(build_stream(config, Encodings.load(run, config.modalities)))


def cmd_hub(args: argparse.Namespace) -> int:
    from agent.hub import Hub

    _logging(args.quiet)
    run = RunFolder(args.run)
    client = _client(args, "hub", [b"excite.", b"clusters."])
    try:
        hub = Hub.from_run(client, run, lossless=not args.live, total=_total(args, run),
                           checkpoint_every=args.checkpoint_every, gen=args.gen, recall=not args.no_recall)
        hub.ready(step=hub.next_seq)
        _profiled(hub.run, "hub")
    finally:
        client.close()
    return 0


def cmd_worker(args: argparse.Namespace) -> int:
    from agent.worker import EncoderWorker

    _logging(args.quiet)
    run = RunFolder(args.run)
    m = args.modality
    client = _client(args, f"worker-{m}", [f"stimulus.{m}".encode(), f"feedback.{m}".encode(),
                                           f"recall.{m}".encode(), b"credit"])
    try:
        worker = EncoderWorker.from_run(client, run, m, lossless=not args.live, total=_total(args, run),
                                        checkpoint_every=args.checkpoint_every, gen=args.gen,
                                        recon_hz=args.recon_hz, queue_max=args.queue)
        worker.ready(step=worker.fb_next)
        _profiled(lambda: worker.run(timeout_ms=5), f"worker-{m}")
    finally:
        client.close()
    return 0


def cmd_play(args: argparse.Namespace) -> int:
    if args.file:
        from replay.recording import run_play

        if args.run:
            raise ValueError("cdz play takes a recording FILE or --run RUN, not both")
        args.speed = 1.0 if args.speed is None else args.speed
        return run_play(args)
    if not args.run:
        raise ValueError("cdz play needs a recording (cdz play FILE.mcap) or a run (cdz play --run RUN)")
    args.speed = 0.0 if args.speed is None else args.speed
    from replay.player import Player, teaching_playlist

    _logging(args.quiet)
    run = RunFolder(args.run)
    playlist = teaching_playlist(run.config())
    start = 0 if args.wait_go else run.load_checkpoint()[0]  # by hand: go on from where the run stands
    if start >= len(playlist):
        print(f"{run.path} has learned all {len(playlist)} stimuli of its stream: nothing to play", file=sys.stderr)
        return 0
    client = _client(args, "player", [b"credit"])
    try:
        player = Player(client, playlist, lossless=not args.live, speed=args.speed, window=args.window,
                        gen=args.gen, exit_when_done=not args.wait_go, wall_clock=args.live)
        if args.wait_go:
            player.ready()
        else:
            player.start(start)
        player.run(timeout_ms=1)
    finally:
        client.close()
    return 0


def add_parsers(sub: argparse._SubParsersAction, common) -> None:
    """The runtime's subcommands, added to the `cdz` parser."""

    def bus_args(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--bus", default=DEFAULT_BUS,
                        help=f"bus address: tcp://HOST:PORT (uses PORT and PORT+1) or ipc:///path (default {DEFAULT_BUS})")
        sp.add_argument("--keys", metavar="DIR", help="CurveZMQ key folder from `cdz keys` (required off loopback)")
        sp.add_argument("--connect-timeout", type=float, default=30.0, help="seconds to wait for the bus (default 30)")

    def process_args(sp: argparse.ArgumentParser, run_required: bool = True) -> None:
        bus_args(sp)
        sp.add_argument("--run", required=run_required, help="run folder (encoders, config, checkpoints)")
        sp.add_argument("--live", action="store_true",
                        help="live flow: learn on arrival, drop the oldest under overload (default: lossless)")
        sp.add_argument("--total", type=int, default=0,
                        help="stream length, where the last checkpoint is saved (default: the run's teaching stream)")
        sp.add_argument("--checkpoint-every", type=int, default=20_000, help="stimuli between checkpoints")
        sp.add_argument("--gen", type=int, default=0, help="run generation (set by the launcher)")
        common(sp)

    sp = sub.add_parser("bus", help="run the message bus (XSUB/XPUB forwarder) that all processes connect to")
    bus_args(sp)
    common(sp)
    sp.set_defaults(func=cmd_bus)

    sp = sub.add_parser("top", help="live rates, queues, drops and latencies of every runtime process")
    bus_args(sp)
    sp.add_argument("--once", action="store_true", help="print one snapshot and exit (exit code 1: nobody heard)")
    sp.add_argument("--wait", type=float, default=2.5, help="--once: seconds to listen first (default 2.5)")
    sp.add_argument("--json", action="store_true", help="--once: print the snapshot as JSON")
    sp.set_defaults(func=cmd_top)

    from sensors import camera, microphone, speaker
    from tools import viewer

    for name, module, text in (
            ("camera", camera, "publish digit cards seen by a camera (or video, or stream) as visual stimuli"),
            ("mic", microphone, "publish spoken digits from a microphone as audio stimuli"),
            ("viewer", viewer, "live dashboard: what the agent sees, hears, fires and recalls"),
            ("speaker", speaker, "say recalled sounds out loud (or write them as wav files)")):
        sp = sub.add_parser(name, help=text)
        bus_args(sp)
        common(sp)
        module.add_arguments(sp)
        sp.set_defaults(func=module.run)

    from tools import think

    sp = sub.add_parser("think", help="stream of thought: recollections fed back as stimuli of their own sense")
    sp.add_argument("--bus", help="join the processes on this bus (default: start a hub and workers of our own)")
    sp.add_argument("--keys", metavar="DIR", help="CurveZMQ key folder (required off loopback)")
    think.add_arguments(sp)
    common(sp)
    sp.set_defaults(func=think.run)

    from tools import live

    sp = sub.add_parser("live", help="the live agent: camera, microphone, workers, hub, viewer on a trained run")
    live.add_arguments(sp)
    common(sp)
    sp.set_defaults(func=live.run)

    sp = sub.add_parser("keys", help="make CurveZMQ key pairs for a bus off loopback")
    sp.add_argument("folder", help="folder to write bus.key*, client.key* into")
    sp.set_defaults(func=cmd_keys)

    sp = sub.add_parser("hub", help="run the CDZ process (cross-modal weights, feedback, recall)")
    process_args(sp)
    sp.add_argument("--no-recall", action="store_true", help="do not ask workers for reconstructions")
    sp.set_defaults(func=cmd_hub)

    sp = sub.add_parser("worker", help="run the encoder worker of one modality (autoencoder + nodes/clusters)")
    sp.add_argument("modality", help="e.g. visual or audio")
    process_args(sp)
    sp.add_argument("--recon-hz", type=float, default=60.0, help="max reconstructions per second (0: no limit)")
    sp.add_argument("--queue", type=int, default=64, help="live mode: stimuli queued before the oldest is dropped")
    sp.set_defaults(func=cmd_worker)

    from replay import recording

    sp = sub.add_parser("play", help="play a recorded session (FILE.mcap) or a run's teaching stream (--run) "
                                     "onto the bus")
    sp.add_argument("file", nargs="?", help="an MCAP file from `cdz record` (else --run plays the teaching stream)")
    process_args(sp, run_required=False)
    sp.add_argument("--speed", type=float,
                    help="1.0 = the recorded / the stimuli's own timing, 2.0 = twice as fast, 0 = as fast as "
                         "possible (default: 1.0 for a file, 0 for --run)")
    sp.add_argument("--window", type=int, default=256, help="lossless: stimuli in flight before waiting for acks")
    sp.add_argument("--wait-go", action="store_true", help="wait for the launcher's go (set by the launcher)")
    sp.add_argument("--topics", type=recording.parse_topics, default=recording.SENSOR_TOPICS,
                    help="a file: topic prefixes to play, comma-separated (default: what the sensors published)")
    sp.add_argument("--clock", choices=("receive", "event"), default="receive",
                    help="a file: pace by when the recorder received each message (default) or by event time")
    sp.set_defaults(func=cmd_play)

    sp = sub.add_parser("record", help="record bus topics into an MCAP file (open it in Foxglove, play it back)")
    bus_args(sp)
    common(sp)
    recording.add_record_arguments(sp)
    sp.set_defaults(func=recording.run_record)
