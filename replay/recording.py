"""The MCAP format of a recorded session (`cdz record FILE.mcap`): writing, reading, checking.

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

The recorder and the player of such files are processes of their own (`replay.recorder`,
`replay.recording_player`).
"""

from __future__ import annotations

import json
import logging
import os
import struct
import typing
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

from agent.core.messages import KINDS, Message, Stimulus
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


def frame_view(frame: Any) -> memoryview:
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
        topic = bytes(frame_view(frames[0])).decode("ascii")
        header = frame_view(frames[1])
        payload = frame_view(frames[2]) if len(frames) > 2 else None
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


def parse_topics(text: str) -> tuple[str, ...]:
    return tuple(t.strip() for t in text.split(",") if t.strip())


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
