"""The recorder: writes chosen bus topics into a recording (`replay.recording`) as they pass, every
generation included. `cdz record` (tools/processes/recorder.py) runs it."""

from __future__ import annotations

import logging
import time
from collections import Counter
from typing import Any, Sequence

from agent.runtime.bus import BusClient
from agent.runtime.service import Service, addressed_to
from agent.core.messages import Control, Message, Stimulus
from replay.recording import RECORD_TOPICS, RecordingWriter, frame_view

log = logging.getLogger(__name__)


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
