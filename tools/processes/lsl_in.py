"""`cdz lsl in NAME --sense S`: a Lab Streaming Layer stream taken as one of the agent's senses
(`sensors.lsl_in`): sound cut into words, or frames looked at as the camera does."""

from __future__ import annotations

import argparse
import logging

from agent.runtime import flags
from agent.runtime.service import terminate_cleanly
from agent.runtime.topology import Process
from sensors.lsl import parse_shape
from tools.command_line import bus_arguments, log_to_stderr

log = logging.getLogger(__name__)

PROCESS = Process(
    "lsl_in", ("lsl", "in"), "take an LSL stream as a sense: sound cut into words, or frames looked at as the camera does",
    ("cdz lsl in Microphone --sense audio --bus tcp://127.0.0.1:5570",
     "cdz lsl in Webcam --sense visual --shape 480x640x3 --bus tcp://127.0.0.1:5570"),
    says=("stimulus.{m}",))  # one process per sense, named lsl_in-<sense>


def _shape_flag(text: str) -> tuple[int, int, int]:
    try:
        return parse_shape(text)
    except ValueError as e:  # argparse shows an ArgumentTypeError's own words
        raise argparse.ArgumentTypeError(str(e)) from None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    bus_arguments(parser)
    parser.add_argument("stream", metavar="NAME", help="the LSL stream's name (as LabRecorder lists it)")
    parser.add_argument("--sense", required=True, choices=("audio", "visual"),
                        help="audio: a 1-channel sound stream, cut into words as the microphone does; visual: one "
                             "flattened frame per sample, looked at as the camera does")
    parser.add_argument("--shape", type=_shape_flag, metavar="HxW[xD]",
                        help="visual: the frames' height x width (x depth 3 for RGB), where the stream's desc "
                             "declares none (desc/shape/height, width, depth)")
    parser.add_argument("--pictures", action="store_true",
                        help="visual: every frame is a picture of its own (a stimulus each, as `cdz recall` sees a "
                             "file) instead of a camera's view of cards held up")
    parser.add_argument("--resolve-timeout", type=flags.POSITIVE, default=10.0, metavar="S",
                        help="seconds to look for the stream before giving up")
    parser.add_argument("--stall", type=flags.POSITIVE, default=2.0, metavar="S",
                        help="seconds without samples before a stream with a nominal rate is reported as stalled")


def run(args: argparse.Namespace) -> int:
    """Resolve the stream, then publish its stimuli until SIGTERM, Ctrl-C or `stop`."""
    from agent.runtime.bus import BusClient
    from sensors.lsl import load_pylsl
    from sensors.lsl_in import LslIn, check_stream, open_inlet, resolve

    log_to_stderr(args.quiet)
    terminate_cleanly()
    pylsl = load_pylsl()
    inlet, info = open_inlet(pylsl, resolve(pylsl, args.stream, args.resolve_timeout), args.resolve_timeout)
    client = None
    try:
        check_stream(pylsl, info, args.sense, args.shape)  # before the bus: a wrong stream is one line, exit 2
        client = BusClient(args.bus, f"{PROCESS.kind}-{args.sense}", PROCESS.topics(), keys=args.keys)
        client.handshake(timeout_s=args.connect_timeout)
        bridge = LslIn(client, inlet, info, args.sense, pylsl=pylsl, shape=args.shape, pictures=args.pictures,
                       stall_s=args.stall)
        log.info("%s: hearing LSL stream %r (%d ch, %g Hz), time correction %.3f ms", bridge.name, bridge.stream,
                 info.channel_count(), bridge.rate, bridge.correction * 1e3)
        bridge.ready(stream=bridge.stream[:64])
        bridge.run(timeout_ms=5)
    finally:
        if client is not None:
            client.close()
        inlet.close_stream()
    return 0
