"""Playing a recording: the process that puts its frames back on the bus (`cdz play FILE.mcap`).

Playback publishes the stored frames unchanged (by default only `stimulus.` and
`frame.`, standing in for the sensors), paced by the recorded receive times or the
event times. `pause`, `resume` and `stop` control messages steer it; a control
message with args `{"to": NAME}` reaches only that process (the recorder honours
`to` for `stop` too), so stopping the player need not stop everyone.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Sequence

from agent.runtime.bus import BusClient
from agent.runtime.service import Service
from agent.core.messages import Control, Excitation, Message
from agent.runtime.wire import WireError, decode
from replay.recording import SENSOR_TOPICS, frame_view, read_recording

log = logging.getLogger(__name__)


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
            is_stimulus = bytes(frame_view(frames[0])).startswith(b"stimulus.")
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
