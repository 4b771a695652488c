"""The replay player: the teacher's stream (or any stimulus list) as a sensor on the bus.

Lossless mode keeps at most `window` stimuli ahead of the hub's acknowledged
progress (credit-based flow control) and re-sends the unacknowledged ones when
progress stalls, so nothing is ever lost even if a message is dropped somewhere.
Pacing: `speed` 1.0 plays the stimuli at their own timing, 2.0 twice as fast,
0 (the default for training) as fast as the credits allow.

The player starts sending on a `go` control message (the launcher sends it once
every process is ready) and pauses on `rewind` until the next `go`.
"""

from __future__ import annotations

import functools
import logging
import time
from dataclasses import dataclass

import numpy as np

from agent.runtime.bus import BusClient
from agent.runtime.service import Service
from agent.core.messages import Control, Credit, Message, Stimulus

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Playlist:
    """What to play: per stimulus its modality, event time (ns) and raw data row."""

    modalities: tuple[str, ...]
    t_ns: np.ndarray  # (n,) int64 event times
    modality: np.ndarray  # (n,) index into modalities
    index: np.ndarray  # (n,) row into data[modality]
    data: dict[str, np.ndarray]  # raw stimuli per modality
    grow_until: int  # stimuli at or after this index are learned without node growth
    near: np.ndarray | None = None  # (n,) stimuli of other modalities within the CDZ window of each

    def __len__(self) -> int:
        return len(self.t_ns)

    @functools.cached_property
    def mseq(self) -> np.ndarray:
        """(n,) each stimulus's sequence number among its modality's stimuli (a gap is a loss)."""
        out = np.zeros(len(self), np.int64)
        for k in range(len(self.modalities)):
            where = self.modality == k
            out[where] = np.arange(int(where.sum()))
        return out

    def stimulus(self, j: int, *, t_ns: int | None = None, source: str = "", gen: int = 0,
                 learn: bool = True) -> Stimulus:
        """Stimulus j as a sensor sends it (at its stream time unless `t_ns` is given)."""
        m = self.modalities[int(self.modality[j])]
        return Stimulus(modality=m, t_ns=int(self.t_ns[j]) if t_ns is None else t_ns, seq=j,
                        data=self.data[m][int(self.index[j])],
                        source=source, gen=gen, mseq=int(self.mseq[j]), learn=learn, grow=j < self.grow_until,
                        near=-1 if self.near is None else int(self.near[j]))


def count_near(t_ns: np.ndarray, modality: np.ndarray, window_ns: int) -> np.ndarray:
    """For each stimulus, how many stimuli of other modalities lie within `window_ns` of it.

    Each such neighbour can pair with it in the CDZ and send its node one feedback; an
    encoder worker uses this bound to learn ahead of the hub safely (see agent.runtime.worker).
    """
    near = np.zeros(len(t_ns), np.int64)
    for k in np.unique(modality):
        others = np.sort(t_ns[modality != k])
        mine = modality == k
        near[mine] = (np.searchsorted(others, t_ns[mine] + window_ns, side="right")
                      - np.searchsorted(others, t_ns[mine] - window_ns, side="left"))
    return near


def teaching_playlist(run_config, progress: bool = False) -> Playlist:
    """The run's teaching stream over the raw training data (what `cdz train` learns from)."""
    from replay.data.splits import load_splits
    from replay.data.teacher import teaching_stream

    train = load_splits(run_config, "train")
    stream = teaching_stream(run_config, {m: s.y for m, s in train.items()})
    t_ns = np.round(stream.t * 1e9).astype(np.int64)
    window_ns = int(round(run_config.cdz.window_s * 1e9)) + 1_000_000  # B plus 1 ms of margin
    return Playlist(stream.modalities, t_ns, stream.modality, stream.index, {m: s.x for m, s in train.items()},
                    int(run_config.cortex.growth_stop * len(stream)), count_near(t_ns, stream.modality, window_ns))


class Player(Service):
    """Publishes a playlist as stimuli, lossless (credit window) or live (paced, never blocking)."""

    def __init__(self, bus: BusClient, playlist: Playlist, *, lossless: bool, speed: float = 0.0,
                 window: int = 256, stall_s: float = 1.0, wall_clock: bool = False, gen: int = 0,
                 learn: bool = True, exit_when_done: bool = False):
        super().__init__(bus, gen)
        self.playlist = playlist
        self.lossless = lossless
        self.speed = speed
        self.window = window
        self.stall_s = stall_s
        self.wall_clock = wall_clock  # stamp stimuli with the send time (for latency), not the stream time
        self.learn = learn
        self.exit_when_done = exit_when_done
        self.outbox: dict[str, list[Stimulus]] = {}  # lossless: stimuli per sense, sent in one batch per burst
        self.next = 0  # next stimulus to send
        self.acked = 0  # the hub has processed every stimulus below this
        self.sent = 0
        self.resent = 0
        self.playing = False  # until `start` (or the launcher's go)
        self._progress_at = time.monotonic()
        self._t0_wall = 0.0
        self._t0_stream = 0

    @property
    def done(self) -> bool:
        n = len(self.playlist)
        return self.next >= n and (not self.lossless or self.acked >= n)

    def start(self, step: int = 0) -> None:
        """Play from stimulus `step` on."""
        self.next = self.acked = step
        self.playing = True
        self._progress_at = time.monotonic()
        self._t0_wall = time.monotonic()
        self._t0_stream = int(self.playlist.t_ns[step]) if step < len(self.playlist) else 0

    def on_control(self, msg: Control) -> None:
        gen = msg.args.get("gen", -1)
        if msg.command == "go" and isinstance(gen, int) and gen >= self.gen:
            self.gen = gen
            self.start(int(msg.args.get("step", 0)))
        elif msg.command == "rewind" and isinstance(gen, int) and gen > self.gen:
            self.gen = gen
            self.playing = False
            self.ready()

    def handle(self, msg: Message) -> None:
        if isinstance(msg, Credit) and msg.seq > self.acked:
            self.acked = min(msg.seq, len(self.playlist))
            self._progress_at = time.monotonic()

    def tick(self) -> None:
        if not self.playing:
            return
        if self.done and self.exit_when_done:
            self.running = False
            return
        n = len(self.playlist)
        now = time.monotonic()
        if self.lossless and self.next > self.acked and now - self._progress_at > self.stall_s:
            self.resent += self.next - self.acked  # something got lost on the way: send it again
            log.warning("player: no progress for %.1f s, re-sending from %d", self.stall_s, self.acked)
            self.next = self.acked
            self._progress_at = now
        limit = min(n, self.acked + self.window) if self.lossless else n
        burst = 0
        while self.next < limit and burst < 512:
            if self.speed > 0:
                due = self._t0_wall + (int(self.playlist.t_ns[self.next]) - self._t0_stream) / 1e9 / self.speed
                if due > time.monotonic():
                    break
            self._send(self.next)
            self.next += 1
            burst += 1
        self._flush()

    def _send(self, j: int) -> None:
        t_ns = self.bus_ns() if self.wall_clock else None
        stim = self.playlist.stimulus(j, t_ns=t_ns, source=self.name, gen=self.gen, learn=self.learn)
        if self.lossless and self.speed <= 0:  # as fast as credits allow: one batch per sense per burst
            self.outbox.setdefault(stim.modality, []).append(stim)
        else:
            self.bus.send(stim)
        self.sent += 1

    def _flush(self) -> None:
        for batch in self.outbox.values():
            self.send_batch(batch)
        self.outbox.clear()

    def stats(self) -> dict:
        return {"role": "player", "sent": self.sent, "next": self.next, "acked": self.acked,
                "total": len(self.playlist), "resent": self.resent, "playing": self.playing}
