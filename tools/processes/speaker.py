"""`cdz speaker`: recalled sounds said out loud, or written as wav files (`sensors.speaker`)."""

from __future__ import annotations

import argparse
import sys

from agent.runtime import flags
from agent.runtime.topology import Process
from tools.command_line import bus_arguments, log_to_stderr

PROCESS = Process(
    "speaker", ("speaker",), "say recalled sounds out loud (or write them as wav files)",
    ("cdz speaker --bus tcp://127.0.0.1:5570", "cdz speaker --bus tcp://127.0.0.1:5570 --wav-dir said/"),
    hears=("recon.audio",))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    bus_arguments(parser)
    parser.add_argument("--speaker", metavar="NAME|INDEX",
                        help="output device: its index or part of its name (default: the system default)")
    parser.add_argument("--wav-dir", metavar="DIR",
                        help="write each utterance as a wav file into DIR (alone: no sound device is used)")
    parser.add_argument("--every", type=flags.POSITIVE, default=1.2, metavar="S",
                        help="at least this many seconds between utterances (default 1.2)")


def make_sinks(args: argparse.Namespace) -> list:
    """--wav-dir alone: files only; --speaker (or neither): the device, plus files if asked."""
    from sensors.speaker import WavSink, open_device

    sinks: list = []
    if args.wav_dir:
        sinks.append(WavSink(args.wav_dir))
    if args.speaker is not None or not args.wav_dir:
        sinks.append(open_device(args.speaker))
    return sinks


def run(args: argparse.Namespace) -> int:
    """`cdz speaker`: reads args.bus, args.keys, args.quiet, args.speaker, args.wav_dir, args.every."""
    from agent.runtime.bus import BusClient
    from sensors.errors import SensorError
    from sensors.speaker import Speaker

    log_to_stderr(args.quiet)
    every = getattr(args, "every", 1.2)
    if not every >= 0:
        raise SensorError(f"--every must be >= 0 seconds, got {every}")
    sinks = make_sinks(args)  # device errors before connecting
    client = BusClient(args.bus, PROCESS.kind, PROCESS.topics(), keys=args.keys)
    speaker = None
    try:
        client.handshake(timeout_s=getattr(args, "connect_timeout", 30.0))
        speaker = Speaker(client, sinks, every_s=every)
        if not args.quiet:
            where = ", ".join(getattr(s, "name", None) or str(getattr(s, "folder", "")) for s in sinks)
            print(f"speaker: saying recalls through {where}", file=sys.stderr)
        speaker.run()
    finally:
        if speaker is not None:
            speaker.close()
        else:
            for s in sinks:
                s.close()
        client.close()
    return 0
