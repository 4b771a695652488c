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
import threading

from agent.runtime import flags
from agent.runtime.bus import DEFAULT_BUS, BusClient, Forwarder, make_keys
from agent.core.checkpoint import RunFolder
from agent.pack import open_run, open_writable_run
from agent.runtime.service import terminate_cleanly
from agent.runtime.topology import hears


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Descriptions and examples kept as written; every option's default shown (unless its help
    already speaks of its default, or there is none to show)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if (default is None or default is False or default == argparse.SUPPRESS or "default" in text
                or not (action.option_strings or action.nargs in (argparse.OPTIONAL, argparse.ZERO_OR_MORE))):
            return text
        return f"{text} (default: %(default)s)"


def describe(description: str, *examples: str) -> dict:
    """add_parser keywords for a subcommand: a one-line description, examples, defaults shown."""
    head = "example:" if len(examples) == 1 else "examples:"
    return {"description": description, "epilog": "\n  ".join((head, *examples)), "formatter_class": HelpFormatter}


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
    """Forward until Ctrl-C or SIGTERM, then close the sockets (and remove an ipc bus's files): exit 0."""
    _logging(args.quiet)
    terminate_cleanly()
    fwd = Forwarder(args.bus, keys=args.keys)  # a busy address (tcp or a live ipc path) is a BusError: exit 2
    print(f"bus: publishers -> {fwd.address.pub}, subscribers -> {fwd.address.sub}"
          f"{' (CurveZMQ)' if fwd.keys else ''}", file=sys.stderr, flush=True)
    print(f"bus at {fwd.address.text}", file=sys.stderr, flush=True)  # the address to give the others (port 0 picked)
    forwarding = threading.Thread(target=fwd.run, name="forwarder", daemon=True)
    forwarding.start()
    try:  # the main thread only waits, so Ctrl-C and SIGTERM (agent.runtime.service.Terminated) are always heard
        while forwarding.is_alive():
            forwarding.join(0.2)
    except KeyboardInterrupt:
        fwd.stop()
        forwarding.join(5.0)
    finally:
        fwd.close()
    print("bus: stopped", file=sys.stderr, flush=True)
    return 0


def cmd_top(args: argparse.Namespace) -> int:
    from tools.top import top

    terminate_cleanly()
    return top(args.bus, keys=args.keys, once=args.once, wait_s=args.wait, as_json=args.json,
               connect_timeout_s=args.connect_timeout)


def cmd_record(args: argparse.Namespace) -> int:
    from replay.recorder import run_record

    terminate_cleanly()
    _logging(args.quiet)
    return run_record(args, lambda name, topics: _client(args, name, topics))


def cmd_keys(args: argparse.Namespace) -> int:
    folder = make_keys(args.folder)
    print(f"CurveZMQ keys in {folder}: give this folder to the bus and to every process (--keys {folder}); "
          "keep *.key_secret private", file=sys.stderr)
    return 0


def _total(args: argparse.Namespace, run: RunFolder) -> int:
    """--total, or for a lossless process started by hand, the length of the run's teaching stream."""
    if args.total or args.live:
        return args.total
    from replay.pipeline import Encodings, build_stream

    config = run.config()
    return len(build_stream(config, Encodings.load(run, config.modalities)))


def cmd_hub(args: argparse.Namespace) -> int:
    from agent.runtime.hub import Hub

    _logging(args.quiet)
    terminate_cleanly()
    run = open_writable_run(args.run)
    client = _client(args, "hub", hears("hub"))
    try:
        hub = Hub.from_run(client, run, lossless=not args.live, total=_total(args, run),
                           checkpoint_every=args.checkpoint_every, gen=args.gen, recall=not args.no_recall,
                           recall_hz=args.recall_hz)
        hub.ready(step=hub.next_seq)
        _profiled(hub.run, "hub")
    finally:
        client.close()
    return 0


def cmd_worker(args: argparse.Namespace) -> int:
    from agent.runtime.worker import EncoderWorker

    _logging(args.quiet)
    terminate_cleanly()
    run = open_writable_run(args.run)
    m = args.modality
    client = _client(args, f"worker-{m}", hears("worker", m))
    try:
        worker = EncoderWorker.from_run(client, run, m, lossless=not args.live, total=_total(args, run),
                                        checkpoint_every=args.checkpoint_every, gen=args.gen,
                                        recon_hz=args.recon_hz, queue_max=args.queue)
        worker.ready(step=worker.sequencer.done)
        _profiled(lambda: worker.run(timeout_ms=5), f"worker-{m}")
    finally:
        client.close()
    return 0


def cmd_play(args: argparse.Namespace) -> int:
    terminate_cleanly()
    if args.file:
        from replay.recording_player import run_play

        if args.run:
            raise ValueError("cdz play takes a recording FILE or --run RUN, not both")
        args.speed = 1.0 if args.speed is None else args.speed
        _logging(args.quiet)
        return run_play(args, lambda name, topics: _client(args, name, topics))
    if not args.run:
        raise ValueError("cdz play needs a recording (cdz play FILE.mcap) or a run (cdz play --run RUN)")
    args.speed = 0.0 if args.speed is None else args.speed
    from replay.player import Player, teaching_playlist

    _logging(args.quiet)
    run = open_run(args.run)
    playlist = teaching_playlist(run.config())
    start = 0 if args.wait_go else run.load_checkpoint()[0]  # by hand: go on from where the run stands
    if start >= len(playlist):
        print(f"{run.path} has learned all {len(playlist)} stimuli of its stream: nothing to play", file=sys.stderr)
        return 0
    client = _client(args, "player", hears("player"))
    try:
        player = Player(client, playlist, lossless=not args.live, speed=args.speed, window=args.window,
                        gen=args.gen, exit_when_done=not args.wait_go, wall_clock=args.live)
        if args.wait_go:
            player.ready()
        else:
            player.start(start)
        _profiled(lambda: player.run(timeout_ms=1), "player")
    finally:
        client.close()
    return 0


def add_parsers(sub: argparse._SubParsersAction, common) -> None:
    """The runtime's subcommands, added to the `cdz` parser."""

    def bus_args(sp: argparse.ArgumentParser, connect_timeout: float | None = 30.0) -> None:
        """--bus, --keys and --connect-timeout (hidden where nothing connects: `connect_timeout` None)."""
        sp.add_argument("--bus", default=DEFAULT_BUS,
                        help="bus address: tcp://HOST:PORT (uses PORT and PORT+1) or ipc:///path (uses /path.in, "
                             f"/path.out) (default {DEFAULT_BUS})")
        sp.add_argument("--keys", metavar="DIR", help="CurveZMQ key folder from `cdz keys` (required off loopback)")
        sp.add_argument("--connect-timeout", type=flags.POSITIVE, default=30.0 if connect_timeout is None else connect_timeout,
                        metavar="S", help=argparse.SUPPRESS if connect_timeout is None else
                        "seconds to wait for the bus to answer")

    def process_args(sp: argparse.ArgumentParser) -> None:
        """What the hub and the workers share: the bus, the run folder, the flow and the checkpoints."""
        bus_args(sp)
        sp.add_argument("--run", required=True, help="run folder (encoders, config, checkpoints)")
        sp.add_argument("--live", action="store_true",
                        help="live flow: learn on arrival, drop the oldest under overload (default: lossless)")
        sp.add_argument("--total", type=flags.NON_NEGATIVE_INT, default=0,
                        help="stream length, where the last checkpoint is saved (default: the run's teaching stream)")
        sp.add_argument("--checkpoint-every", type=flags.COUNT, default=20_000, help="stimuli between checkpoints")
        sp.add_argument("--gen", type=flags.NON_NEGATIVE_INT, default=0, help="run generation (set by the launcher)")
        common(sp)

    example_bus = "tcp://127.0.0.1:5570"

    sp = sub.add_parser("bus", help="run the message bus (XSUB/XPUB forwarder) that all processes connect to",
                        **describe("Run the message bus: the XSUB/XPUB forwarder every runtime process connects to.\n"
                                   "Off loopback it needs --keys. An address in use (a tcp port, or the ipc path of "
                                   "a live bus) is refused;\nthe socket files of a bus that died are reused. Ctrl-C "
                                   "or SIGTERM stops it cleanly (an ipc bus\nremoves its files).",
                                   f"cdz bus --bus {example_bus}", "cdz bus --bus ipc:///tmp/cdz-bus"))
    bus_args(sp, connect_timeout=None)
    common(sp)
    sp.set_defaults(func=cmd_bus)

    sp = sub.add_parser("top", help="live rates, queues, drops and latencies of every runtime process",
                        **describe("Live rates, queues, drops and latencies of every runtime process on a bus.\n"
                                   "Exit code 2: no bus answered within --connect-timeout; with --once, 1: the bus "
                                   "answered\nbut no process published stats.",
                                   f"cdz top --bus {example_bus}", f"cdz top --bus {example_bus} --once --json"))
    bus_args(sp, connect_timeout=5.0)
    sp.add_argument("--once", action="store_true",
                    help="print one snapshot and exit (exit code 1: the bus is there but no process was heard)")
    sp.add_argument("--wait", type=flags.POSITIVE, default=2.5, metavar="S", help="--once: seconds to listen first")
    sp.add_argument("--json", action="store_true", help="--once: print the snapshot as JSON")
    sp.set_defaults(func=cmd_top)

    from sensors import camera, microphone, speaker
    from tools import viewer

    for name, module, text, examples in (
            ("camera", camera, "publish digit cards seen by a camera (or video, or stream) as visual stimuli",
             (f"cdz camera --bus {example_bus} --camera 0", f"cdz camera --bus {example_bus} --camera cards.mp4")),
            ("mic", microphone, "publish spoken digits from a microphone as audio stimuli",
             ("cdz mic --list", f"cdz mic --bus {example_bus} --mic pulse")),
            ("viewer", viewer, "live dashboard: what the agent sees, hears, fires and recalls",
             (f"cdz viewer --bus {example_bus}", f"cdz viewer --bus {example_bus} --headless shots/")),
            ("speaker", speaker, "say recalled sounds out loud (or write them as wav files)",
             (f"cdz speaker --bus {example_bus}", f"cdz speaker --bus {example_bus} --wav-dir said/"))):
        sp = sub.add_parser(name, help=text, **describe(text[0].upper() + text[1:] + ".", *examples))
        bus_args(sp)
        common(sp)
        module.add_arguments(sp)
        sp.set_defaults(func=module.run)

    from sensors import lsl_in, lsl_out

    text = "bridge the bus and the Lab Streaming Layer (LabRecorder, EEG, eye trackers)"
    sp = sub.add_parser("lsl", help=text,
                        **describe("Bridge the bus and the Lab Streaming Layer: `out` publishes what the agent "
                                   "perceives and recalls as LSL streams\n(for LabRecorder), `in` takes an LSL "
                                   "stream as one of its senses. Stamps are event times on both sides.",
                                   f"cdz lsl out --bus {example_bus}",
                                   f"cdz lsl in Microphone --sense audio --bus {example_bus}"))
    directions = sp.add_subparsers(dest="direction", required=True, metavar="DIRECTION")
    for name, module, text, examples in (
            ("out", lsl_out, "publish excitations, recalls and reconstructions as LSL streams, stamped with their "
                             "event times",
             (f"cdz lsl out --bus {example_bus}", f"cdz lsl out --bus {example_bus} --senses visual,audio,reward")),
            ("in", lsl_in, "take an LSL stream as a sense: sound cut into words, or frames looked at as the camera "
                           "does",
             (f"cdz lsl in Microphone --sense audio --bus {example_bus}",
              f"cdz lsl in Webcam --sense visual --shape 480x640x3 --bus {example_bus}"))):
        d = directions.add_parser(name, help=text, **describe(text[0].upper() + text[1:] + ".", *examples))
        bus_args(d)
        common(d)
        module.add_arguments(d)
        d.set_defaults(func=module.run)

    from tools import think

    text = "stream of thought: recollections fed back as stimuli of their own sense"
    sp = sub.add_parser("think", help=text,
                        **describe("Stream of thought: each recollection is fed back as a stimulus of its own sense.",
                                   "cdz think --run runs/latest --from seven.png",
                                   f"cdz think --run runs/latest --bus {example_bus} --from-live"))
    sp.add_argument("--bus", help="join the processes on this bus (default: start a hub and workers of our own)")
    sp.add_argument("--keys", metavar="DIR", help="CurveZMQ key folder (required off loopback)")
    think.add_arguments(sp)
    common(sp)
    sp.set_defaults(func=think.run)

    from tools import live

    sp = sub.add_parser("live", help="the live agent: camera, microphone, workers, hub, viewer on a trained run",
                        **describe("The live agent: bus, camera, microphone, encoder workers, hub and viewer on a "
                                   "trained run, supervised.",
                                   "cdz live --run runs/latest",
                                   "cdz live --run runs/latest --camera cards.mp4 --no-mic --headless shots/"))
    live.add_arguments(sp)
    common(sp)
    sp.set_defaults(func=live.run)

    sp = sub.add_parser("keys", help="make CurveZMQ key pairs for a bus off loopback",
                        **describe("Make the CurveZMQ key pairs of a bus off loopback (give the folder to the bus "
                                   "and to every process).", "cdz keys keys/"))
    sp.add_argument("folder", help="folder to write bus.key*, client.key* into")
    sp.set_defaults(func=cmd_keys)

    sp = sub.add_parser("hub", help="run the CDZ process (cross-modal weights, feedback, recall)",
                        **describe("Run the CDZ process: cross-modal weights, feedback to the encoders, recall.",
                                   f"cdz hub --bus {example_bus} --run runs/latest --live"))
    process_args(sp)
    sp.add_argument("--no-recall", action="store_true", help="do not ask workers for reconstructions")
    sp.add_argument("--recall-hz", type=flags.NON_NEGATIVE, default=60.0, metavar="HZ",
                    help="most recalls sent per second to each sense, for its reconstructions (0: no limit; "
                         "default 60)")
    sp.set_defaults(func=cmd_hub)

    sp = sub.add_parser("worker", help="run the encoder worker of one modality (autoencoder + nodes/clusters)",
                        **describe("Run the encoder worker of one modality: its autoencoder, nodes and clusters.",
                                   f"cdz worker visual --bus {example_bus} --run runs/latest --live"))
    sp.add_argument("modality", help="e.g. visual or audio")
    process_args(sp)
    sp.add_argument("--recon-hz", type=flags.NON_NEGATIVE, default=60.0, help="max reconstructions per second (0: no limit)")
    sp.add_argument("--queue", type=flags.COUNT, default=64, help="live mode: stimuli queued before the oldest is dropped")
    sp.set_defaults(func=cmd_worker)

    from replay import recorder, recording

    sp = sub.add_parser("play", help="play a recorded session (FILE.mcap) or a run's teaching stream (--run) "
                                     "onto the bus",
                        **describe("Play a recorded session (FILE.mcap) or a run's teaching stream (--run) onto "
                                   "the bus.",
                                   f"cdz play session.mcap --bus {example_bus} --speed 1",
                                   f"cdz play --run runs/latest --bus {example_bus} --speed 1.0"))
    sp.add_argument("file", nargs="?", help="an MCAP file from `cdz record` (else --run plays the teaching stream)")
    bus_args(sp)
    sp.add_argument("--run", help="a run folder: play its teaching stream instead of a FILE")
    # --run only, not shown: the player's live flow, and the generation the launcher sets
    sp.add_argument("--live", action="store_true", help=argparse.SUPPRESS)
    sp.add_argument("--gen", type=flags.NON_NEGATIVE_INT, default=0, help=argparse.SUPPRESS)
    common(sp)
    sp.add_argument("--speed", type=flags.NON_NEGATIVE,
                    help="1.0 = the recorded / the stimuli's own timing, 2.0 = twice as fast, 0 = as fast as "
                         "possible (default: 1.0 for a file, 0 for --run)")
    sp.add_argument("--window", type=flags.COUNT, default=256,
                    help="--run: stimuli in flight before waiting for the hub's acknowledgements")
    sp.add_argument("--wait-go", action="store_true", help="--run: wait for the launcher's go (set by the launcher)")
    sp.add_argument("--topics", type=recording.parse_topics, default=recording.SENSOR_TOPICS,
                    help="a file: topic prefixes to play, comma-separated (default: what the sensors published, "
                         f"{','.join(recording.SENSOR_TOPICS)})")
    sp.add_argument("--clock", choices=("receive", "event"), default="receive",
                    help="a file: pace by when the recorder received each message (default) or by event time")
    sp.add_argument("--follow", type=flags.NON_NEGATIVE_INT, default=0, metavar="N",
                    help="a file: as fast as the workers learn, at most N stimuli sent and not yet answered by an "
                         "excitation (with --speed 0; default 0: no flow control)")
    sp.set_defaults(func=cmd_play)

    sp = sub.add_parser("record", help="record bus topics into an MCAP file (open it in Foxglove, play it back)",
                        **describe("Record bus topics into an MCAP file (open it in Foxglove, play it back with "
                                   "`cdz play`).\nCtrl-C, SIGTERM, --duration or a stop message end it with a "
                                   "complete file; a killed recorder\nloses at most --flush seconds.",
                                   f"cdz record session.mcap --bus {example_bus} --duration 60"))
    bus_args(sp)
    common(sp)
    recorder.add_record_arguments(sp)
    sp.set_defaults(func=cmd_record)
