"""`cdz mic`: spoken digits from a microphone, cut into words and published as audio stimuli
(`sensors.microphone`, `sensors.words`)."""

from __future__ import annotations

import argparse
import logging

from agent.runtime.topology import Process
from tools.command_line import bus_arguments, log_to_stderr

log = logging.getLogger(__name__)

PROCESS = Process(
    "microphone", ("mic",), "publish spoken digits from a microphone as audio stimuli",
    ("cdz mic --list", "cdz mic --bus tcp://127.0.0.1:5570 --mic pulse"),
    says=("stimulus.audio",))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    bus_arguments(parser)
    parser.add_argument("--mic", metavar="NAME|INDEX",
                        help="input device: its index or part of its name (default: the system's default input)")
    parser.add_argument("--list", action="store_true", help="print the input devices and exit")


def run(args: argparse.Namespace) -> int:
    """Record from the chosen microphone and publish utterances until SIGTERM, Ctrl-C or `stop`."""
    from agent.runtime.bus import BusClient
    from sensors.errors import SensorError
    from sensors.microphone import Microphone, choose_input, format_devices, list_input_devices

    log_to_stderr(args.quiet)
    if args.list:
        print(f"input devices:\n{format_devices(list_input_devices())}")
        return 0
    device = choose_input(args.mic)
    client = BusClient(args.bus, PROCESS.kind, PROCESS.topics(), keys=args.keys)
    try:
        client.handshake(timeout_s=getattr(args, "connect_timeout", 30.0))
        mic = Microphone(client, device)
        mic.start()
        try:
            if not mic.wait_for_audio(5.0):
                raise SensorError(f"input device {device} ({mic.device_name}) delivered no sound within 5 s: "
                                  "is it muted, in use, or not really a microphone? see --list")
            log.info("%s: listening to %d (%s) at %d Hz", PROCESS.kind, device, mic.device_name, mic.rate)
            mic.ready(device=mic.device_name[:64], rate=mic.rate)
            mic.run()
        finally:
            mic.close()
    finally:
        client.close()
    return 0
