"""`cdz viewer`: the live dashboard of what the agent sees, hears, fires and recalls, in a window, as
headless video and snapshots, or in Foxglove (`tools.viewer`, `tools.dashboard`)."""

from __future__ import annotations

import argparse
import sys

from agent.runtime import flags
from agent.runtime.topology import Process
from tools.command_line import bus_arguments, log_to_stderr
from tools.foxglove_live import DEFAULT_PORT
from tools.viewer import ViewerError

FOXGLOVE_ONLY = (b"recall.", b"clusters.")  # heard only when serving Foxglove (the window does not draw them)
PROCESS = Process(
    "viewer", ("viewer",), "live dashboard: what the agent sees, hears, fires and recalls",
    ("cdz viewer --bus tcp://127.0.0.1:5570", "cdz viewer --bus tcp://127.0.0.1:5570 --headless shots/"),
    hears=("stimulus.", "excite.", "recon.", "frame.", "weights.", "stats", *(t.decode() for t in FOXGLOVE_ONLY)))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    bus_arguments(parser)
    parser.add_argument("--headless", metavar="DIR",
                        help="no window: write an MJPG video of the dashboard and PNG snapshots into DIR")
    parser.add_argument("--snapshot-every", type=flags.POSITIVE, default=5.0, metavar="S",
                        help="--headless: seconds between PNG snapshots (default 5; one more at exit)")
    parser.add_argument("--video-max-mb", type=flags.POSITIVE, default=1000.0, metavar="MB",
                        help="--headless: stop the video at this size, snapshots go on (default 1000)")
    parser.add_argument("--fps", type=flags.POSITIVE, default=10.0, help="redraws per second (default 10)")
    parser.add_argument("--size", default="960x540", metavar="WxH", help="dashboard size (default 960x540)")
    parser.add_argument("--foxglove", type=flags.PORT, nargs="?", const=DEFAULT_PORT, metavar="PORT",
                        help=f"also serve everything to Foxglove over WebSocket (default port {DEFAULT_PORT}; 0: any "
                             "free port); without a display and --headless, serve only")
    parser.add_argument("--foxglove-host", default="127.0.0.1", metavar="HOST",
                        help="--foxglove: address to bind (default loopback; the server has no authentication, so "
                             "tunnel it rather than bind beyond loopback)")
    parser.add_argument("--run", help="--foxglove: a run folder, to name each cluster (the digit it stands for)")


def _size(text: str) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise ViewerError(f"--size wants WIDTHxHEIGHT like 960x540, got {text!r}") from None
    if w < 64 or h < 48:
        raise ViewerError(f"--size {text} is too small (at least 64x48)")
    return w, h


def run(args: argparse.Namespace) -> int:
    """`cdz viewer`: reads args.bus, args.keys, args.quiet, args.headless, args.snapshot_every."""
    from agent.runtime.bus import BusClient
    from tools.foxglove_live import FoxgloveLive
    from tools.viewer import HeadlessOutput, Viewer, gui_available, open_output

    log_to_stderr(args.quiet)
    size = _size(getattr(args, "size", "960x540"))
    fps = getattr(args, "fps", 10.0)
    if not fps > 0:
        raise ViewerError(f"--fps must be positive, got {fps}")
    port = getattr(args, "foxglove", None)
    if port is not None and not 0 <= port < 65536:
        raise ViewerError(f"--foxglove wants a port 0-65535, got {port}")
    if port is not None and args.headless is None and not gui_available():
        output = None  # nowhere to draw: serve Foxglove only
    else:
        output = open_output(args.headless, fps=fps, snapshot_s=args.snapshot_every,
                             max_video_mb=getattr(args, "video_max_mb", 1000.0))
    live = None
    if port is not None:
        names = None
        if getattr(args, "run", None):
            from agent.pack import open_run
            from replay.naming import run_names

            names = run_names(open_run(args.run))
        live = FoxgloveLive(port, host=args.foxglove_host, names=names)
        print(f"viewer: Foxglove live view on ws://{args.foxglove_host}:{live.port}", file=sys.stderr, flush=True)
    client = BusClient(args.bus, PROCESS.kind, [t for t in PROCESS.topics() if live or t not in FOXGLOVE_ONLY],
                       keys=args.keys)
    viewer = None
    try:
        client.handshake(timeout_s=getattr(args, "connect_timeout", 30.0))
        viewer = Viewer(client, output, fps=fps, size=size, foxglove=live)
        viewer.run()
    finally:
        if viewer is not None:
            viewer.close()
        elif live is not None:
            live.close()
        client.close()
    if not args.quiet:
        print(f"viewer: wrote {output.describe()}" if isinstance(output, HeadlessOutput) else "viewer: closed",
              file=sys.stderr)
    return 0
