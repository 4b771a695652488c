"""`cdz record FILE.mcap`: the recorder process, which writes chosen bus topics into a recording
(`replay.recording`) as they pass, every generation included."""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any, Callable, Sequence

from mcap.writer import CompressionType

from agent.runtime import flags
from agent.runtime.bus import BusClient
from agent.runtime.service import Service, addressed_to
from agent.core.messages import Control, Message, Stimulus
from replay.recording import RECORD_TOPICS, RecordingError, RecordingWriter, frame_view, parse_topics

log = logging.getLogger(__name__)

Connect = Callable[[str, list[bytes]], BusClient]  # (process name, topics) -> a client that has shaken hands


class GapCounter:
    """Stimuli lost before reaching us (a full SUB queue, a slow link): gaps in each stream's mseq.

    A stream is (source, modality, generation); a sequence number at or below the last one
    seen (a lossless player re-sending) is no gap."""

    def __init__(self) -> None:
        self.last: dict[tuple[str, str, int], int] = {}
        self.lost: Counter[str] = Counter()  # per modality

    def add(self, msg: Stimulus) -> int:
        key = (msg.source, msg.modality, msg.gen)
        last = self.last.get(key)
        self.last[key] = msg.mseq if last is None else max(last, msg.mseq)
        gap = 0 if last is None else max(0, msg.mseq - last - 1)
        self.lost[msg.modality] += gap
        return gap

    @property
    def total(self) -> int:
        return sum(self.lost.values())


class Recorder(Service):
    """Writes every message of the chosen topic prefixes into a RecordingWriter, every generation
    included (a recorder keeps what was said, stale or not). Stops on SIGTERM/SIGINT, `stop`
    (optionally addressed with args `to`) or after `duration_s`."""

    def __init__(self, bus: BusClient, writer: RecordingWriter, *, topics: Sequence[str] = RECORD_TOPICS,
                 duration_s: float = 0.0, flush_s: float = 1.0):
        super().__init__(bus)
        self.writer = writer
        self.prefixes = tuple(t.encode() for t in topics)
        self.duration_s = duration_s
        self.flush_s = flush_s
        self.gaps = GapCounter()
        self.write_s = 0.0  # time spent storing messages: 1 / (write_s / messages) is the capacity
        self._first = self._last = 0.0
        self._flushed = time.monotonic()

    def _dispatch(self, msg: Message) -> None:
        frames = self.bus.last_frames
        if bytes(frame_view(frames[0])).startswith(self.prefixes):
            self.record(frames, msg)
        if isinstance(msg, Control) and addressed_to(msg, self.name):
            if msg.command == "stop":
                self.running = False
            else:
                self.on_time(msg)

    def record(self, frames: Sequence[Any], msg: Message) -> None:
        t0 = time.perf_counter()
        self.writer.write(frames, self.bus_ns(), msg)
        if isinstance(msg, Stimulus):
            self.gaps.add(msg)
        now = time.monotonic()
        self._first = self._first or now
        self._last = now
        self.write_s += time.perf_counter() - t0

    def tick(self) -> None:
        now = time.monotonic()
        if now - self._flushed >= self.flush_s:
            self._flushed = now
            self.writer.flush()
        if self.duration_s and now - self._started >= self.duration_s:
            self.running = False

    def stats(self) -> dict:
        w = self.writer
        span = max(self._last - self._first, 1e-9) if w.messages > 1 else 0.0
        values = {"role": "recorder", "messages": w.messages, "bytes": w.wire_bytes, "file_bytes": w.file_bytes,
                  "msg_per_s": w.messages / span if span else 0.0,
                  "mb_per_s": w.wire_bytes / 1e6 / span if span else 0.0,
                  "write_us_per_msg": 1e6 * self.write_s / w.messages if w.messages else 0.0,
                  "drops": self.gaps.total, "bad_messages": self.bus.dropped}
        values.update({f"drops_{m}": n for m, n in self.gaps.lost.items()})
        return values

    def close(self) -> None:
        """Finish the file, with the final stats as metadata."""
        self.writer.close({k: str(v) for k, v in self.stats().items()})


# ---------------------------------------------------------------------- player


def add_record_arguments(parser: argparse.ArgumentParser) -> None:
    """`cdz record FILE.mcap [--topics a,b] [--duration S]` (the CLI adds --bus, --keys, --quiet)."""
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


def run_record(args: argparse.Namespace, connect: Connect) -> int:
    """`cdz record`: `connect(name, topics)` gives a bus client that has proved it hears."""
    compression = None if args.compression == "auto" else CompressionType[args.compression.upper()]
    folder = Path(args.file).parent
    if not folder.is_dir():  # before connecting: say so at once rather than after the handshake
        raise RecordingError(f"cannot write {args.file}: folder {folder} does not exist")
    if Path(args.file).exists() and not getattr(args, "overwrite", False):
        raise RecordingError(f"{args.file} exists; choose another name or pass --overwrite")
    client = connect("recorder", [t.encode() for t in args.topics])
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
