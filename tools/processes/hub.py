"""`cdz hub`: the CDZ process (cross-modal weights, feedback to the encoders, recall); `agent.runtime.hub`."""

from __future__ import annotations

import argparse

from agent.runtime import flags
from agent.runtime.topology import Process
from tools.command_line import connect, log_to_stderr, profiled
from tools.processes._learning import learning_arguments, open_learning_run, stream_total

PROCESS = Process(
    "hub", ("hub",), "run the CDZ process (cross-modal weights, feedback, recall)",
    ("cdz hub --bus tcp://127.0.0.1:5570 --run runs/latest --live",),
    hears=("excite.", "clusters."), says=("feedback.{m}", "recall.{m}", "credit", "weights.{m}"), light=False)


def add_arguments(sp: argparse.ArgumentParser) -> None:
    learning_arguments(sp)
    sp.add_argument("--no-recall", action="store_true", help="do not ask workers for reconstructions")
    sp.add_argument("--recall-hz", type=flags.NON_NEGATIVE, default=60.0, metavar="HZ",
                    help="most recalls sent per second to each sense, for its reconstructions (0: no limit; "
                         "default 60)")


def run(args: argparse.Namespace) -> int:
    from agent.runtime.hub import Hub

    log_to_stderr(args.quiet)
    run_folder = open_learning_run(args)
    client = connect(args, PROCESS.kind, PROCESS.topics())
    try:
        hub = Hub.from_run(client, run_folder, lossless=not args.live, total=stream_total(args, run_folder),
                           checkpoint_every=args.checkpoint_every, gen=args.gen, recall=not args.no_recall,
                           recall_hz=args.recall_hz)
        hub.ready(step=hub.next_seq)
        profiled(hub.run, "hub")
    finally:
        client.close()
    return 0
