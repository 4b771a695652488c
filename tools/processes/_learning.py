"""What the hub and the workers share on their command lines: the run, the flow and the checkpoints."""

from __future__ import annotations

import argparse

from agent.core.checkpoint import RunFolder
from agent.runtime import flags
from agent.runtime.service import terminate_cleanly
from tools.command_line import bus_arguments


def learning_arguments(sp: argparse.ArgumentParser) -> None:
    """The bus, the run folder, the flow and the checkpoints."""
    bus_arguments(sp)
    sp.add_argument("--run", required=True, help="run folder (encoders, config, checkpoints)")
    sp.add_argument("--live", action="store_true",
                    help="live flow: learn on arrival, drop the oldest under overload (default: lossless)")
    sp.add_argument("--total", type=flags.NON_NEGATIVE_INT, default=0,
                    help="stream length, where the last checkpoint is saved (default: the run's teaching stream)")
    sp.add_argument("--checkpoint-every", type=flags.COUNT, default=20_000, help="stimuli between checkpoints")
    sp.add_argument("--gen", type=flags.NON_NEGATIVE_INT, default=0, help="run generation (set by the launcher)")


def open_learning_run(args: argparse.Namespace) -> RunFolder:
    """The run folder to learn into (SIGTERM from now on unwinds cleanly)."""
    from agent.pack import open_writable_run

    terminate_cleanly()
    return open_writable_run(args.run)


def stream_total(args: argparse.Namespace, run: RunFolder) -> int:
    """--total, or for a lossless process started by hand, the length of the run's teaching stream."""
    if args.total or args.live:
        return args.total
    from replay.pipeline import Encodings, build_stream

    config = run.config()
    return len(build_stream(config, Encodings.load(run, config.modalities)))
