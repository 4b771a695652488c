"""`cdz worker SENSE`: one sense's encoder worker (its autoencoder, nodes and clusters); `agent.runtime.worker`."""

from __future__ import annotations

import argparse

from agent.runtime import flags
from agent.runtime.topology import Process
from tools.command_line import connect, log_to_stderr, profiled
from tools.processes._learning import learning_arguments, open_learning_run, stream_total

PROCESS = Process(
    "worker", ("worker",), "run the encoder worker of one modality (autoencoder + nodes/clusters)",
    ("cdz worker visual --bus tcp://127.0.0.1:5570 --run runs/latest --live",),
    hears=("stimulus.{m}", "feedback.{m}", "recall.{m}", "credit"), says=("excite.{m}", "clusters.{m}", "recon.{m}"),
    light=False)


def add_arguments(sp: argparse.ArgumentParser) -> None:
    sp.add_argument("modality", help="e.g. visual or audio")
    learning_arguments(sp)
    sp.add_argument("--recon-hz", type=flags.NON_NEGATIVE, default=60.0, help="max reconstructions per second (0: no limit)")
    sp.add_argument("--queue", type=flags.COUNT, default=64, help="live mode: stimuli queued before the oldest is dropped")


def run(args: argparse.Namespace) -> int:
    from agent.runtime.worker import EncoderWorker

    log_to_stderr(args.quiet)
    run_folder = open_learning_run(args)
    m = args.modality
    client = connect(args, f"{PROCESS.kind}-{m}", PROCESS.topics(m))
    try:
        worker = EncoderWorker.from_run(client, run_folder, m, lossless=not args.live,
                                        total=stream_total(args, run_folder), checkpoint_every=args.checkpoint_every,
                                        gen=args.gen, recon_hz=args.recon_hz, queue_max=args.queue)
        worker.ready(step=worker.sequencer.done)
        profiled(lambda: worker.run(timeout_ms=5), f"worker-{m}")
    finally:
        client.close()
    return 0
