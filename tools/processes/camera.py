"""`cdz camera`: digit cards seen by a camera, a video file or a stream, published as visual stimuli
(`sensors.camera`, `sensors.card`)."""

from __future__ import annotations

import argparse

from agent.runtime import flags
from agent.runtime.topology import Process
from tools.command_line import bus_arguments, log_to_stderr

PROCESS = Process(
    "camera", ("camera",), "publish digit cards seen by a camera (or video, or stream) as visual stimuli",
    ("cdz camera --bus tcp://127.0.0.1:5570 --camera 0", "cdz camera --bus tcp://127.0.0.1:5570 --camera cards.mp4"),
    says=("stimulus.visual", "frame.visual"))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    bus_arguments(parser)
    parser.add_argument("--camera", default="0", metavar="INDEX|FILE|URL",
                        help="camera index (0 = first), a video file, or a stream URL (MJPEG/RTSP/HTTP); default 0")
    parser.add_argument("--max-rate", type=flags.NON_NEGATIVE, default=2.0,
                        help="stimuli per second at most while one card stays in view (0: once per card; default 2)")
    parser.add_argument("--steady-frames", type=flags.COUNT, default=3,
                        help="frames a card must hold still before it is sent (default 3)")
    parser.add_argument("--no-realtime", action="store_true",
                        help="video files: read as fast as the pipeline goes (no frame lost) instead of at the "
                             "file's frame rate")
    parser.add_argument("--stall", type=flags.POSITIVE, default=2.0,
                        help="seconds without a new frame before the source is reported as stalled (default 2)")


def run(args: argparse.Namespace) -> int:
    """`cdz camera`: publish cards seen by the camera until stopped (or a video file ends)."""
    from agent.runtime.bus import BusClient
    from sensors.camera import Camera

    log_to_stderr(args.quiet)
    client = BusClient(args.bus, PROCESS.kind, PROCESS.topics(), keys=args.keys)
    camera = None
    try:
        camera = Camera(client, args.camera, max_rate=args.max_rate, steady_frames=args.steady_frames,
                        realtime=not args.no_realtime, stall_s=getattr(args, "stall", 2.0),
                        gen=getattr(args, "gen", 0))
        client.handshake(timeout_s=getattr(args, "connect_timeout", 30.0))
        camera.ready()
        camera.run(timeout_ms=1)
    finally:
        if camera is not None:
            camera.close()
        client.close()
    return 0
