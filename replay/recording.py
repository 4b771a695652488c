"""Session recording and playback in MCAP: `cdz record FILE.mcap` and playing such a file.

A recording stores every message exactly as it travelled, so playing it puts the
same bytes back on the bus, and beside it what Foxglove can show of it:

* one MCAP channel per topic (`stimulus.visual`, `stats.hub`, ...), one schema per
  message kind (`cdz.stimulus`, ...; encoding `jsonschema`, describing the decoded
  fields of `agent.runtime.wire`);
* message encoding `cdz-wire`: the data is msgpack `[header, payload or nil]`, the
  wire frames' own bytes (the topic is the channel's), so `[topic, header, payload]`
  comes back byte-identical;
* the Foxglove views of each message (`replay.foxglove_views`: images of what it
  saw, heard and imagined, JSON of what fired and what was recalled, stats) on
  channels of their own (`/visual/stimulus`, `/audio/fires`, ...);
* log_time = the message's event time `t_ns` (clamped to 0 .. 2**32 s), for every
  channel, so Foxglove's timeline is the agent's; publish_time = when the recorder
  received the message (ns since the epoch); sequence = its `seq` (mod 2**32).

Crash safety: messages go into compressed chunks of `chunk_kb` KiB; every finished
chunk goes straight to the OS (no user-space buffer) and the chunk in progress is
finished every `flush_s` seconds. A recorder killed with SIGKILL therefore leaves a
file whose complete chunks hold everything up to at most `flush_s` before the kill;
it lacks the summary and footer, which `read_recording` does not need (it reads the
file front to back and stops quietly at the cut). A cleanly stopped recorder
(Ctrl-C, SIGTERM, `--duration`, a `stop` message) writes the full summary. (The
library's seeking reader, `mcap.reader.make_reader` on a file, needs that footer: on
a cut file it fails; its NonSeekingReader yields the complete chunks, then raises.)

Playback publishes the stored frames unchanged (by default only `stimulus.` and
`frame.`, standing in for the sensors), paced by the recorded receive times or the
event times. `pause`, `resume` and `stop` control messages steer it; a control
message with args `{"to": NAME}` reaches only that process (the recorder honours
`to` for `stop` too), so stopping the player need not stop everyone.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import struct
import sys
import time
import typing
from collections import Counter
from dataclasses import fields
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import msgpack
import numpy as np
from mcap.exceptions import EndOfFile
from mcap.records import Channel
from mcap.records import Message as McapMessage
from mcap.stream_reader import StreamReader
from mcap.writer import CompressionType, Writer

from agent.runtime import flags
from agent.runtime.bus import BusClient
from agent.runtime.service import Service, addressed_to
from agent.core.messages import KINDS, Control, Excitation, Message, Stimulus
from agent.runtime.wire import WireError, decode, encode
from replay.foxglove_views import View, log_time, views

log = logging.getLogger(__name__)

MESSAGE_ENCODING = "cdz-wire"
RECORD_TOPICS = ("stimulus.", "excite.", "feedback.", "recall.", "recon.", "clusters.", "frame.", "weights.",
                 "stats")
SENSOR_TOPICS = ("stimulus.", "frame.")  # what live sensors publish: what a player stands in for
MCAP_MAGIC = b"\x89MCAP0\r\n"  # the first 8 bytes of every MCAP file


# ---------------------------------------------------------------------- schemas
def kind_schema(cls: type) -> dict:
    """JSON schema of one message kind's decoded fields (the dataclass in agent.runtime.wire)."""
    hints = typing.get_type_hints(cls)
    props = {f.name: _json_type(hints[f.name]) for f in fields(cls)}
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", "title": f"cdz.{cls.KIND}",
            "description": f"{(cls.__doc__ or '').strip()}\n\nStored as msgpack [header, payload or nil]: the "
                           "wire frames of agent.runtime.wire (header: a msgpack map; payload: the raw array bytes). "
                           "These are the fields agent.runtime.wire.decode makes of them.",
            "type": "object", "properties": props}


def _json_type(hint: Any) -> dict:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is bool:
        return {"type": "boolean"}
    if hint is int:
        return {"type": "integer"}
    if hint is float:
        return {"type": "number"}
    if hint is str:
        return {"type": "string"}
    if hint is np.ndarray:
        return {"type": "object", "description": "the payload frame: raw array bytes in native byte order",
                "properties": {"dtype": {"type": "string", "enum": ["uint8", "int16", "float32"]},
                               "shape": {"type": "array", "items": {"type": "integer"}},
                               "data": {"type": "string", "contentEncoding": "base64"}}}
    if origin is tuple:
        return {"type": "array", "items": _json_type(args[0])}
    if origin is dict:
        return {"type": "object", "additionalProperties": {"type": ["boolean", "integer", "number", "string"]}}
    return {}


# ---------------------------------------------------------------------- writing
class _WriteThrough:
    """A file whose every write goes straight to the OS: a killed process loses no finished chunk."""

    def __init__(self, path: Path | str):
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        self._pos = 0

    def write(self, data: bytes) -> int:
        view = memoryview(data)
        while view.nbytes:
            view = view[os.write(self._fd, view):]
        self._pos += len(data)
        return len(data)

    def tell(self) -> int:
        return self._pos

    def flush(self) -> None:
        pass

    def close(self) -> None:
        os.close(self._fd)


def best_compression() -> CompressionType:
    """zstd, else lz4, else none (whatever this mcap installation can write)."""
    from mcap import writer as w

    if getattr(w, "zstandard", None) is not None:
        return CompressionType.ZSTD
    return CompressionType.LZ4 if getattr(w, "lz4", None) is not None else CompressionType.NONE


def _view(frame: Any) -> memoryview:
    """The bytes of a frame (bytes, zmq.Frame or array) without copying."""
    view = memoryview(getattr(frame, "buffer", frame))
    return view if view.format == "B" and view.ndim == 1 else view.cast("B")


EVENT_LOG_TIME = {"log_time": "event"}  # wire channel metadata: log_time is the event time, publish_time receipt


class RecordingWriter:
    """Writes wire messages into an MCAP file: a channel per topic, a schema per kind, and the
    Foxglove views of each message (`views=False`: the wire channels only)."""

    def __init__(self, path: Path | str, *, chunk_kb: int = 256, compression: CompressionType | None = None,
                 metadata: dict[str, str] | None = None, views: bool = True):
        self.path = Path(path)
        self._file = _WriteThrough(self.path)
        self._mcap = Writer(self._file, chunk_size=chunk_kb * 1024,
                            compression=best_compression() if compression is None else compression)
        self._mcap.start(profile="cdz", library="cdz-agent")
        if metadata:
            self._mcap.add_metadata("cdz.recording", metadata)
        self._schemas: dict[str, int] = {}
        self._channels: dict[str, int] = {}
        self._views = views
        self._view_channels: dict[str, int] = {}
        self.messages = 0
        self.view_messages = 0  # Foxglove view messages written
        self.wire_bytes = 0  # header + payload bytes of the messages written
        self.closed = False

    def write(self, frames: Sequence[Any], log_time_ns: int, msg: Message | None = None) -> int:
        """Store one message's frames; `msg` is their decoding (decoded here if not given: a
        `WireError` means nothing was written). Returns the wire bytes stored."""
        if msg is None:
            msg = decode(frames)
        topic = bytes(_view(frames[0])).decode("ascii")
        header = _view(frames[1])
        payload = _view(frames[2]) if len(frames) > 2 else None
        channel = self._channels.get(topic)
        if channel is None:
            channel = self._channels[topic] = self._mcap.register_channel(
                topic, MESSAGE_ENCODING, self._schema(msg.KIND), {"kind": msg.KIND, **EVENT_LOG_TIME})
        data = msgpack.packb([header, payload], use_bin_type=True)
        self._mcap.add_message(channel, log_time=log_time(msg.t_ns), data=data,
                               publish_time=min(max(0, log_time_ns), 2**64 - 1), sequence=msg.seq % 2**32)
        size = header.nbytes + (payload.nbytes if payload is not None else 0)
        self.messages += 1
        self.wire_bytes += size
        if self._views:
            for view in views(msg):
                self._write_view(view, log_time_ns, msg.seq)
        return size

    def _write_view(self, view: View, receive_ns: int, seq: int) -> None:
        channel = self._view_channels.get(view.topic)
        if channel is None:
            key = f"view:{view.schema.name}"
            if key not in self._schemas:
                self._schemas[key] = self._mcap.register_schema(view.schema.name, view.schema.encoding,
                                                                view.schema.data)
            channel = self._view_channels[view.topic] = self._mcap.register_channel(
                view.topic, view.encoding, self._schemas[key])
        self._mcap.add_message(channel, log_time=view.t_ns, data=view.data,
                               publish_time=min(max(0, receive_ns), 2**64 - 1), sequence=seq % 2**32)
        self.view_messages += 1

    def _schema(self, kind: str) -> int:
        if kind not in self._schemas:
            text = json.dumps(kind_schema(KINDS[kind]), indent=1).encode()
            self._schemas[kind] = self._mcap.register_schema(f"cdz.{kind}", "jsonschema", text)
        return self._schemas[kind]

    @property
    def file_bytes(self) -> int:
        return self._file.tell()

    def flush(self) -> None:
        """Finish the chunk in progress (it is on disk once this returns, barring an OS crash)."""
        self._mcap.flush()

    def close(self, metadata: dict[str, str] | None = None) -> None:
        """Write the summary and footer (with `metadata`, e.g. the recorder's final stats)."""
        if self.closed:
            return
        self.closed = True
        try:
            if metadata:
                self._mcap.flush()
                self._mcap.add_metadata("cdz.recorder", metadata)
            self._mcap.finish()
        finally:
            self._file.close()


def write_stimuli(path: Path | str, stimuli: Iterable[Stimulus], metadata: dict[str, str] | None = None) -> int:
    """Record stimuli as a session the sensors could have sent (log time = event time), e.g. a
    teaching session that `cdz play --clock event` puts on the bus. Returns messages written."""
    writer = RecordingWriter(path, metadata=metadata)
    try:
        for stim in stimuli:
            writer.write(encode(stim), stim.t_ns, stim)
    finally:
        writer.close()
    return writer.messages


# ---------------------------------------------------------------------- reading
def read_recording(path: Path | str, topics: Sequence[str] | None = None) -> Iterator[tuple[int, str, list[bytes]]]:
    """(receive_ns, topic, frames) of every recorded message in file order, frames as they
    travelled (the Foxglove views are skipped). `topics`: topic prefixes to keep (None: all).
    A file cut short (a killed recorder) yields its complete chunks, then ends with a
    warning instead of raising."""
    prefixes = tuple(topics) if topics else None
    channels: dict[int, Channel] = {}
    count = 0
    with open(path, "rb") as f:
        records = StreamReader(f, validate_crcs=True, record_size_limit=1 << 30).records
        while True:
            try:
                record = next(records)
            except StopIteration:
                return
            except (EndOfFile, struct.error):
                log.warning("%s ends early (no footer: the recorder was killed?): read the %d messages of its "
                            "complete chunks", path, count)
                return
            except Exception as e:  # the mcap library raises several types on a damaged file
                log.warning("%s is damaged after %d messages (%s: %s): stopped there", path, count,
                            type(e).__name__, e)
                return
            if isinstance(record, Channel):
                channels[record.id] = record
            elif isinstance(record, McapMessage):
                channel = channels.get(record.channel_id)
                if channel is None or channel.message_encoding != MESSAGE_ENCODING:
                    continue
                if prefixes is not None and not channel.topic.startswith(prefixes):
                    continue
                frames = _frames(channel.topic, record.data)
                if frames is None:
                    log.warning("%s: skipped a message on %s that is not msgpack [header, payload]", path,
                                channel.topic)
                    continue
                count += 1
                yield record.publish_time, channel.topic, frames


def _frames(topic: str, data: bytes) -> list[bytes] | None:
    try:
        header, payload = msgpack.unpackb(data, raw=False)
    except (ValueError, TypeError, msgpack.UnpackException):
        return None
    if not isinstance(header, bytes) or not (payload is None or isinstance(payload, bytes)):
        return None
    return [topic.encode(), header] if payload is None else [topic.encode(), header, payload]


def decode_recording(path: Path | str, topics: Sequence[str] | None = None) -> Iterator[Message]:
    """The recorded messages, validated by agent.runtime.wire.decode (invalid ones are logged and skipped)."""
    for _, topic, frames in read_recording(path, topics):
        try:
            yield decode(frames)
        except WireError as e:
            log.warning("%s: skipped an invalid message on %s (%s)", path, topic, e)


# ---------------------------------------------------------------------- recorder
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
        if bytes(_view(frames[0])).startswith(self.prefixes):
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
class RecordingPlayer(Service):
    """Publishes a recording's frames unchanged, paced by the recorded receive times (`clock`
    "receive", what live sensors did) or by the messages' event times ("event": a teaching stream
    recorded at full speed plays at its own timing). `speed` 1.0: that timing; 2.0: twice as fast;
    0: as fast as possible. Control `pause`, `resume`, `stop` (optionally addressed with args `to`)
    steer it; it exits at the end of the file.

    `follow` N > 0 plays as fast as the workers learn: at most N stimuli are sent whose
    excitation has not come back yet (the bus must carry `excite.` to this player). Live
    workers queue a bounded number of stimuli and drop the oldest, so a recording played
    faster than they learn would lose stimuli; following them loses none. A worker that
    stops answering for `stall_s` (killed, restarting) does not block the player forever:
    what it owes is written off as `unanswered` and playing goes on."""

    def __init__(self, bus: BusClient, path: Path | str, *, topics: Sequence[str] | None = SENSOR_TOPICS,
                 speed: float = 1.0, clock: str = "receive", exit_at_end: bool = True, follow: int = 0,
                 stall_s: float = 5.0):
        super().__init__(bus)
        if clock not in ("receive", "event"):
            raise ValueError(f"clock must be 'receive' or 'event', not {clock!r}")
        if follow < 0:
            raise ValueError(f"follow must be >= 0 (0: no flow control), not {follow}")
        self.follow = follow
        self.stall_s = stall_s
        self.in_flight = 0  # stimuli sent whose excitation has not come back (with follow)
        self.unanswered = 0  # stimuli written off after a stall
        self._answer_at = time.monotonic()
        self.path = Path(path)
        self.speed = speed
        self.clock = clock
        self.exit_at_end = exit_at_end
        self.playing = True
        self.sent = 0
        self.bytes = 0
        self.invalid = 0
        self._t0_wall: float | None = None
        self._t0_rec = 0
        self._paused_at = 0.0
        self._items = read_recording(self.path, topics)
        self._pending: tuple[int, list[bytes]] | None = None  # (recorded time in ns, frames) of the next one
        self._advance()
        self.finished = self._pending is None

    def on_control(self, msg: Control) -> None:
        if msg.command == "pause":
            self.pause()
        elif msg.command == "resume":
            self.resume()

    def handle(self, msg: Message) -> None:
        if isinstance(msg, Excitation) and not msg.relived and not msg.internal and self.in_flight > 0:
            self.in_flight -= 1
            self._answer_at = time.monotonic()

    def pause(self) -> None:
        if self.playing:
            self.playing = False
            self._paused_at = time.monotonic()

    def resume(self) -> None:
        if not self.playing:
            self.playing = True
            if self._t0_wall is not None:  # the recorded spacing goes on from where it paused
                self._t0_wall += time.monotonic() - self._paused_at

    def tick(self) -> None:
        burst = 0
        while self.playing and self._pending is not None and burst < 512:
            at_ns, frames = self._pending
            if self._t0_wall is None:
                self._t0_wall, self._t0_rec = time.monotonic(), at_ns
            if self.speed > 0 and self._t0_wall + (at_ns - self._t0_rec) / 1e9 / self.speed > time.monotonic():
                break
            is_stimulus = bytes(_view(frames[0])).startswith(b"stimulus.")
            if self.follow and is_stimulus and self.in_flight >= self.follow and not self._stalled():
                break
            self.bus.pub.send_multipart(frames)
            if self.follow and is_stimulus:
                if self.in_flight == 0:
                    self._answer_at = time.monotonic()
                self.in_flight += 1
            self.sent += 1
            self.bytes += sum(len(f) for f in frames[1:])
            self._advance()
            burst += 1
        if self._pending is None and not self.finished:
            self.finished = True
            log.info("%s: played all %d messages of %s", self.name, self.sent, self.path)
        if self.finished and self.exit_at_end:
            self.running = False

    def _stalled(self) -> bool:
        """No excitation for `stall_s` while stimuli are in flight: write them off and go on."""
        if time.monotonic() - self._answer_at < self.stall_s:
            return False
        log.warning("%s: no excitation for %.1f s; %d stimuli written off as unanswered", self.name, self.stall_s,
                    self.in_flight)
        self.unanswered += self.in_flight
        self.in_flight = 0
        return True

    def _advance(self) -> None:
        """Take up the next valid message (a damaged file puts nothing invalid on the bus)."""
        for log_ns, topic, frames in self._items:
            try:
                msg = decode(frames)
            except WireError as e:
                self.invalid += 1
                log.warning("%s: skipped an invalid recorded message on %s (%s)", self.name, topic, e)
                continue
            self._pending = (log_ns if self.clock == "receive" else msg.t_ns, frames)
            return
        self._pending = None

    def stats(self) -> dict:
        return {"role": "recording_player", "sent": self.sent, "bytes": self.bytes, "invalid": self.invalid,
                "playing": self.playing, "finished": self.finished, "speed": self.speed, "in_flight": self.in_flight,
                "unanswered": self.unanswered}

    def close(self) -> None:
        self._items.close()


# ---------------------------------------------------------------------- command line
def parse_topics(text: str) -> tuple[str, ...]:
    return tuple(t.strip() for t in text.split(",") if t.strip())


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


def _client(cls: type, args: argparse.Namespace, name: str, topics: Sequence[bytes]) -> BusClient:
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    client = cls(args.bus, name, list(topics), keys=args.keys)
    client.handshake(timeout_s=getattr(args, "connect_timeout", 30.0))
    return client


def run_record(args: argparse.Namespace) -> int:
    compression = None if args.compression == "auto" else CompressionType[args.compression.upper()]
    folder = Path(args.file).parent
    if not folder.is_dir():  # before connecting: say so at once rather than after the handshake
        raise RecordingError(f"cannot write {args.file}: folder {folder} does not exist")
    if Path(args.file).exists() and not getattr(args, "overwrite", False):
        raise RecordingError(f"{args.file} exists; choose another name or pass --overwrite")
    client = _client(BusClient, args, "recorder", [t.encode() for t in args.topics])
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


class RecordingError(ValueError):
    """A file that cannot be played: missing, unreadable, or no MCAP recording at all."""


def check_recording(path: Path | str) -> None:
    """Raise RecordingError (one line, naming the file) unless `path` starts like an MCAP file:
    the magic bytes and a readable header record. A file cut short after that (a killed
    recorder) is fine: `read_recording` plays its complete chunks."""
    from mcap.records import Header

    path = Path(path)
    if not path.exists():
        raise RecordingError(f"no recording at {path}")
    if not path.is_file():
        raise RecordingError(f"{path} is not a file")
    try:
        with open(path, "rb") as f:
            head = f.read(len(MCAP_MAGIC))
            if head != MCAP_MAGIC:
                raise RecordingError(f"{path} is not an MCAP recording (it does not start with the MCAP magic "
                                     "bytes; make one with `cdz record`)")
            f.seek(0)
            first = next(StreamReader(f, validate_crcs=True, record_size_limit=1 << 30).records)
    except RecordingError:
        raise
    except OSError as e:
        raise RecordingError(f"cannot read {path}: {e.strerror or e}") from None
    except Exception as e:  # the mcap library raises several types on a damaged file
        raise RecordingError(f"{path} is not a readable MCAP recording ({type(e).__name__}: {e})") from None
    if not isinstance(first, Header):
        raise RecordingError(f"{path} is not a readable MCAP recording (no header record)")


def run_play(args: argparse.Namespace) -> int:
    check_recording(args.file)  # before connecting: a wrong file is an error at once (the CLI exits 2)
    client = _client(BusClient, args, "recording_player", [b"excite."] if args.follow else [])
    try:
        player = RecordingPlayer(client, args.file, topics=args.topics, speed=args.speed, clock=args.clock,
                                 follow=args.follow)
        try:
            player.ready()
            player.run(timeout_ms=1)
        finally:
            player.close()
        print(f"played {player.sent} messages of {args.file}{'' if player.finished else ' (stopped early)'}",
              file=sys.stderr)
    finally:
        client.close()
    return 0
