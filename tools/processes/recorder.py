"""`cdz record FILE.mcap`: bus topics into an MCAP file (`replay.recorder`, `replay.recording`)."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from mcap.writer import CompressionType

from agent.runtime import flags
from agent.runtime.service import terminate_cleanly
from agent.runtime.topology import Process
from replay.recorder import Recorder
from replay.recording import RECORD_TOPICS, RecordingError, RecordingWriter, parse_topics
from tools.command_line import bus_arguments, connect, log_to_stderr

PROCESS = Process(
    "recorder", ("record",), "record bus topics into an MCAP file (open it in Foxglove, play it back)",
    ("cdz record session.mcap --bus tcp://127.0.0.1:5570 --duration 60",),
    hears=RECORD_TOPICS,  # by default; --topics chooses
    description=("Record bus topics into an MCAP file (open it in Foxglove, play it back with `cdz play`).\n"
                 "Ctrl-C, SIGTERM, --duration or a stop message end it with a complete file; a killed recorder\n"
                 "loses at most --flush seconds."))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    bus_arguments(parser)
    parser.add_argument("file", help="MCAP file to write (an existing one is replaced only with --overwrite)")
    parser.add_argument("--overwrite", action="store_true", help="replace FILE if it exists")
    parser.add_argument("--topics", type=parse_topics, default=RECORD_TOPICS,
                        help=f"comma-separated topic prefixes to record (default {','.join(RECORD_TOPICS)})")
    parser.add_argument("--duration", type=flags.NON_NEGATIVE, default=0.0,
                        help="seconds to record (default: until Ctrl-C, SIGTERM or a stop message)")
    parser.add_argument("--chunk-kb", type=flags.COUNT, default=256, help="KiB of messages per compressed chunk")
    parser.add_argument("--flush", type=flags.POSITIVE, default=1.0,
                        help="seconds between flushes: at most this much is lost if the recorder is killed")
    parser.add_argument("--compression", choices=("auto", "zstd", "lz4", "none"), default="auto",
                        help="chunk compression; auto: zstd, else lz4, else none (what this installation can write)")
    parser.add_argument("--no-views", action="store_true",
                        help="the wire frames only, without what Foxglove shows (smaller files)")


def run(args: argparse.Namespace) -> int:
    terminate_cleanly()
    log_to_stderr(args.quiet)
    compression = None if args.compression == "auto" else CompressionType[args.compression.upper()]
    folder = Path(args.file).parent
    if not folder.is_dir():  # before connecting: say so at once rather than after the handshake
        raise RecordingError(f"cannot write {args.file}: folder {folder} does not exist")
    if Path(args.file).exists() and not getattr(args, "overwrite", False):
        raise RecordingError(f"{args.file} exists; choose another name or pass --overwrite")
    client = connect(args, PROCESS.kind, [t.encode() for t in args.topics])
    try:
        writer = RecordingWriter(args.file, chunk_kb=args.chunk_kb, compression=compression,
                                 metadata={"bus": args.bus, "topics": ",".join(args.topics),
                                           "started_ns": str(time.time_ns())}, views=not args.no_views)
        recorder = Recorder(client, writer, topics=args.topics, duration_s=args.duration, flush_s=args.flush)
        try:
            recorder.ready()
            recorder.run(timeout_ms=5)
        finally:
            recorder.close()
        s = recorder.stats()
        print(f"recorded {s['messages']} messages ({s['bytes'] / 1e6:.1f} MB, file {s['file_bytes'] / 1e6:.1f} MB) "
              f"at {s['msg_per_s']:.0f} msg/s, {s['mb_per_s']:.2f} MB/s; {s['drops']} stimuli lost upstream, "
              f"{client.dropped} bad messages -> {args.file}", file=sys.stderr)
    finally:
        client.close()
    return 0
