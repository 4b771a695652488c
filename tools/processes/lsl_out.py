"""`cdz lsl out`: what the agent perceives and recalls, published as Lab Streaming Layer streams stamped
with their event times, for LabRecorder (`sensors.lsl_out`)."""

from __future__ import annotations

import argparse
import socket

from agent.runtime.service import terminate_cleanly
from agent.runtime.topology import Process
from tools.command_line import bus_arguments, log_to_stderr

PROCESS = Process(
    "lsl_out", ("lsl", "out"), "publish excitations, recalls and reconstructions as LSL streams, stamped with their "
                               "event times",
    ("cdz lsl out --bus tcp://127.0.0.1:5570", "cdz lsl out --bus tcp://127.0.0.1:5570 --senses visual,audio,reward"),
    hears=("excite.", "recall.", "recon."))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    bus_arguments(parser)
    parser.add_argument("--senses", default="visual,audio",
                        help="senses whose excitation and recall streams open at start (others open with their "
                             "first message); a recall's cue_sense channel indexes this list")
    parser.add_argument("--source-id", metavar="PREFIX",
                        help="prefix of each stream's LSL source_id, which LabRecorder uses to pick a stream up "
                             "again after a restart (default: cdz@HOST:BUS)")


def run(args: argparse.Namespace) -> int:
    """Publish the bus's excitations, recalls and reconstructions as LSL streams until stopped."""
    from agent.runtime.bus import BusClient
    from sensors.lsl import load_pylsl
    from sensors.lsl_out import LslOut

    log_to_stderr(args.quiet)
    terminate_cleanly()
    senses = tuple(s.strip() for s in args.senses.split(",") if s.strip())
    prefix = args.source_id or f"cdz@{socket.gethostname()}:{args.bus}"
    pylsl = load_pylsl()
    client = BusClient(args.bus, PROCESS.kind, PROCESS.topics(), keys=args.keys)
    try:
        client.handshake(timeout_s=args.connect_timeout)
        bridge = LslOut(client, senses, prefix, pylsl=pylsl)
        bridge.ready()
        bridge.run(timeout_ms=5)
    finally:
        client.close()
    return 0
