"""A show-and-tell session played through the live runtime as fast as it learns (for `cdz bench adapt`).

The session is written as an MCAP recording of the stimuli the sensors would have
sent (`replay.recording.write_stimuli`) and played by a `cdz play --follow` child
into a `cdz live` agent without sensors: bus, hub and one worker per sense, in
live mode, learning online and buffering their experience exactly as with a
camera and a microphone. The player sends the next stimulus once the last one's
excitation came back, so the live queues never overflow and the hub takes the
excitations in event-time order.

`sleep_awake` then sleeps as `cdz live --sleep-every` does (a checkpoint cut, `cdz
sleep` in a child, a swap of every process to the slept brain) while a live feed of
wall-clock stimuli goes on, and measures what the swap costs: capture-to-recall
latency during the sleep and stimuli lost.
"""

from __future__ import annotations

import subprocess
import threading
import time
from pathlib import Path

import numpy as np

from agent.runtime.bus import BusClient
from agent.runtime.launcher import Child
from agent.core.messages import Excitation, Recall, Stimulus
from replay.player import Playlist
from replay.recording import write_stimuli
from tools.live import LiveAgent

FOLLOW = 1  # one stimulus at a time: see play_session
FEED_SEQ0 = 1 << 40  # the live feed's sequence numbers start here, apart from the session's
FEED_HZ = (30.0, 2.0)  # the first sense at a camera's rate, the others at an utterance rate (as `bench live`)


class SessionTally:
    """The bench's ear on the bus (a `tools.live.EventSink`): stimuli learned, and the
    capture-to-recall latency of the live feed's stimuli while `measuring`."""

    def __init__(self) -> None:
        self.learned: set[tuple[str, int]] = set()  # (sense, seq) of stimuli excited (not relived)
        self.latency_ms: list[float] = []
        self.measuring = False
        self.last_at = time.monotonic()

    def add(self, msg: Excitation | Recall) -> None:
        if isinstance(msg, Excitation):
            if msg.learn and not msg.relived and not msg.internal:
                self.learned.add((msg.modality, msg.seq))
                self.last_at = time.monotonic()
        elif self.measuring and msg.seq >= FEED_SEQ0:
            self.latency_ms.append((time.time_ns() - msg.t_ns) / 1e6)

    def flush(self, everything: bool = False) -> None:
        """Nothing waits: every message is counted as it comes."""

    def count(self, live: bool) -> int:
        """Stimuli learned from the live feed (True) or from the played session (False)."""
        return sum((seq >= FEED_SEQ0) == live for _, seq in self.learned)


def play_session(agent: LiveAgent, playlist: Playlist, path: Path, tally: SessionTally,
                 timeout_s: float = 1800.0) -> dict:
    """Record `playlist` as `path` (MCAP) and play it into the running `agent` with `cdz play
    --follow`; returns the stimuli played and learned, and the seconds it took.

    One stimulus at a time (FOLLOW = 1): the hub pairs excitations within B of event time
    and takes them at most `cdz.reorder_slack_s` late, and a recording played fast puts many
    seconds of event time in flight at once; with more in flight, the sense whose worker
    runs behind would reach the hub too late to pair, by a margin that depends on timing."""
    write_stimuli(path, (playlist.stimulus(j, source="session") for j in range(len(playlist))),
                  metadata={"what": "show-and-tell session", "stimuli": str(len(playlist))})
    keyed = [] if agent.keys is None else ["--keys", str(agent.keys)]
    player = Child("session-player", ["play", str(path), "--bus", agent.bus, *keyed, "--speed", "0", "--clock",
                                      "event", "--follow", str(FOLLOW), "--quiet"],
                   agent.run.path / "logs" / "session-player.log")
    n = len(playlist)
    t0 = time.monotonic()
    player.start()
    try:
        agent.run_for(timeout_s, tally, until=lambda: tally.count(live=False) >= n or (
            not player.alive() and time.monotonic() - tally.last_at > 5.0))
    finally:
        try:
            player.proc.wait(5.0)  # it exits by itself once the file is played
        except subprocess.TimeoutExpired:
            player.stop()
    return {"played": n, "learned": tally.count(live=False), "seconds": time.monotonic() - t0,
            "player_code": player.proc.returncode}


class LiveFeed(threading.Thread):
    """Stimuli stamped with the wall clock at live rates, on its own bus client (the sensors)."""

    def __init__(self, bus: str, stimuli: dict[str, np.ndarray], first_mseq: dict[str, int], seed: int = 0,
                 keys: Path | None = None):
        super().__init__(daemon=True)
        self.bus, self.keys, self.stimuli, self.first_mseq = bus, keys, stimuli, first_mseq
        self.rng = np.random.default_rng(seed)
        self.sent = dict.fromkeys(stimuli, 0)
        self.stopping = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            client = BusClient(self.bus, "feed", [], keys=self.keys)
            try:
                client.handshake(timeout_s=20)
                self._feed(client)
            finally:
                client.close()
        except BaseException as e:  # reported by the bench, which must not hang on it
            self.error = e

    def _feed(self, client: BusClient) -> None:
        hz = {m: FEED_HZ[min(k, len(FEED_HZ) - 1)] for k, m in enumerate(self.stimuli)}
        due = dict.fromkeys(self.stimuli, time.monotonic())
        seq = FEED_SEQ0
        while not self.stopping.is_set():
            now = time.monotonic()
            for m, x in self.stimuli.items():
                if now >= due[m]:
                    due[m] += 1.0 / hz[m]
                    row = x[int(self.rng.integers(len(x)))]
                    client.send(Stimulus(modality=m, t_ns=time.time_ns(), seq=seq, data=row, source="feed",
                                         mseq=self.first_mseq[m] + self.sent[m]))
                    self.sent[m] += 1
                    seq += 1
            time.sleep(max(0.0, min(due.values()) - time.monotonic()))


def sleep_awake(agent: LiveAgent, tally: SessionTally, feed_stimuli: dict[str, np.ndarray],
                first_mseq: dict[str, int], timeout_s: float = 600.0, after_s: float = 3.0) -> dict:
    """Sleep while awake under a live feed; the sleep's length, the latency during it and what was lost."""
    feed = LiveFeed(agent.bus, feed_stimuli, first_mseq, keys=agent.keys)
    feed.start()
    agent.run_for(0.5, tally)  # the feed is running (reading the bus all along: a pause here would count)
    agent.sleep_every_s = agent.sleep_every_s or 1e9  # one sleep, asked for here
    tally.measuring = True
    t0 = time.monotonic()
    agent.fall_asleep()
    agent.run_for(timeout_s, tally, until=lambda: agent.sleeper is None)  # the sleep, then the swap
    slept_s = time.monotonic() - t0
    agent.run_for(after_s, tally)  # the first seconds on the slept brain
    tally.measuring = False
    feed.stopping.set()
    feed.join(10)
    sent = sum(feed.sent.values())
    agent.run_for(10.0, tally, until=lambda: tally.count(live=True) >= sent)
    lat = np.array(tally.latency_ms) if tally.latency_ms else np.zeros(1)
    return {"sleep_s": slept_s, "sleeps": list(agent.sleeps), "feed_sent": sent,
            "feed_learned": tally.count(live=True), "lost": sent - tally.count(live=True),
            "latency_ms": {"p50": float(np.percentile(lat, 50)), "p99": float(np.percentile(lat, 99)),
                           "max": float(lat.max()), "samples": len(tally.latency_ms)},
            "feed_error": None if feed.error is None else repr(feed.error)}
