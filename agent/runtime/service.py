"""What every runtime process shares: a bus connection, a loop, control and stats.

A service receives messages with a short timeout, hands each to `handle`, runs
`tick` about every 10 ms and publishes its `stats()` on `stats.<name>` about once
a second. SIGTERM and SIGINT end the loop cleanly; so does a `stop` control
message (for everyone, or addressed with args `to`). Messages of an older
generation (from before a rewind) are ignored.

Time: the hub's clock is the bus's. Every other service asks the hub for the time about
once a second (`clock` / `clock_reply` control messages, `agent.runtime.clock`) and
stamps event times on the hub's clock with `bus_ns`; its stats say how far its own clock
is off and how sure that is.
"""

from __future__ import annotations

import gc
import logging
import math
import signal
import time
from collections import deque
from dataclasses import replace

import numpy as np

from agent.runtime.bus import BusClient
from agent.runtime.clock import ClockSync, Exchange, local_clock
from agent.core.checkpoint import PartWriter, RunFolder
from agent.core.messages import Control, Message, Stats

log = logging.getLogger(__name__)

CLOCK_WAIT_S = 0.5  # a sensor waits this long at most for the hub's first answer (`cdz live` starts sensors once the hub is up)


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised like Ctrl-C's KeyboardInterrupt so that the same cleanup runs
    (sockets closed, ipc files removed, recordings finished) instead of dying on the spot."""


def _raise_terminated(signum: int, frame: object) -> None:
    raise Terminated()


def terminate_cleanly() -> None:
    """From now on SIGTERM raises `Terminated` (a KeyboardInterrupt) in the main thread.

    For the runtime's processes: outside `Service.run` (whose loop ends quietly on SIGTERM)
    a SIGTERM while connecting or loading then unwinds through every `finally`, and the
    CLI exits with 143 (128 + SIGTERM) and one line instead of a default death."""
    signal.signal(signal.SIGTERM, _raise_terminated)


def addressed_to(msg: Control, name: str) -> bool:
    """Control messages may name their receiver with args `to`; unnamed ones are for everyone."""
    to = msg.args.get("to")
    return to is None or to == name


class Latency:
    """The last `n` latencies (ms), with percentiles for stats."""

    def __init__(self, n: int = 2000):
        self.values: deque[float] = deque(maxlen=n)

    def add(self, ms: float) -> None:
        if -60_000.0 < ms < 3_600_000.0:  # a stamp from another epoch (or NaN) would only garble the stats
            self.values.append(ms)

    def percentile(self, q: float) -> float:
        if not self.values:
            return 0.0
        ordered = sorted(self.values)
        return ordered[min(len(ordered) - 1, int(q / 100.0 * len(ordered)))]


class Rate:
    """Events per second since the last reading (every process's stats use this one counter).

    `min_window_s`: a reading sooner than this after the last gives the last rate again, so that
    a display polled often does not jump between 0 and bursts."""

    def __init__(self, min_window_s: float = 0.0):
        self.min_window_s = min_window_s
        self.count = 0
        self.since = time.monotonic()
        self.last = 0.0

    def add(self, n: int = 1) -> None:
        self.count += n

    def per_second(self) -> float:
        now = time.monotonic()
        if now - self.since >= self.min_window_s:
            self.last = self.count / max(now - self.since, 1e-9)
            self.count, self.since = 0, now
        return self.last


class Service:
    """Base of the hub, the encoder workers and the players."""

    stats_every_s = 1.0
    clock_every_s = 1.0  # how often the hub is asked for the time
    tells_time = False  # the hub: its clock is the bus's, it answers and never asks
    stamps_events = False  # a sensor: it waits for the hub's first answer before its loop starts

    def __init__(self, bus: BusClient, gen: int = 0):
        self.bus = bus
        self.name = bus.name
        self.gen = gen
        self.local_ns = local_clock(self.name, self.name.partition("-")[0])  # our wall clock (CDZ_CLOCK_SKEW_MS shifts it)
        self.time_sync = ClockSync(name=self.name)
        self._last_clock = -float("inf")
        self._asked: deque[int] = deque(maxlen=4)  # our recent questions' t0: only their answers count
        self.running = True
        self.stale_gen = 0  # messages from before the last rewind, ignored
        self._last_stats = time.monotonic()
        self._started = time.monotonic()
        self.writing: PartWriter | None = None  # a checkpoint part being written in the background

    # ------------------------------------------------------------------ to override
    def handle(self, msg: Message) -> None:
        """One valid message of the current generation."""

    def on_control(self, msg: Control) -> None:
        """A control message (stop is handled before this); `rewind` to a newer generation rewinds."""
        gen, step = msg.args.get("gen"), msg.args.get("step")
        if msg.command == "rewind" and isinstance(gen, int) and gen > self.gen:
            self.rewind(gen)
        elif msg.command == "checkpoint" and isinstance(step, int) and step > 0:
            self.checkpoint(step)

    def checkpoint(self, step: int) -> None:
        """Save this process's part of checkpoint `step` (live mode, when the supervisor says)."""

    def write_part(self, run: RunFolder, step: int, part: str, arrays: dict, keep: int | None = None) -> None:
        """Write `arrays` (copies: the process goes on changing its own) as part `part` of checkpoint
        `step` in the background; `saved` goes out once it is on disk. One part at a time, in order."""
        self.finish_writing()
        self.writing = PartWriter(run, step, part, arrays, keep)
        self.writing.start()

    def finish_writing(self, wait: bool = True) -> None:
        """Say `saved` once the part being written is on disk (without `wait`: only if it already is)."""
        if self.writing is None or (not wait and self.writing.is_alive()):
            return
        writer, self.writing = self.writing, None
        writer.join()
        if writer.error is not None:
            log.error("%s: could not write part %s of checkpoint %d: %s", self.name, writer.part, writer.step,
                      writer.error)
        else:
            self.saved(writer.step, writer.part)

    def saved(self, step: int, part: str) -> None:
        """Tell the supervisor that this process's part of checkpoint `step` is on disk."""
        self.bus.send(Control(command="saved", args={"step": step, "part": part}, source=self.name, gen=self.gen))

    def rewind(self, gen: int) -> None:
        """Another process died: reload the newest complete checkpoint, take up `gen`, say ready.

        A process without a run folder has nothing to reload."""
        self.gen = gen
        self.ready()

    def stamp(self, msg: Message) -> Message:
        """`msg` with this process's envelope: its name as the source, its run generation."""
        return replace(msg, source=self.name, gen=self.gen)

    def send_batch(self, msgs: list[Message]) -> None:
        """Messages of one kind and sense in one send, as this process's (no need to `stamp` each)."""
        self.bus.send_batch(msgs, self.name, self.gen)

    def tick(self) -> None:
        """Periodic work (about every 10 ms, and after every burst of messages)."""

    def stats(self) -> dict:
        return {}

    # ------------------------------------------------------------------ the loop
    def ready(self, **args) -> None:
        self.bus.send(Control(command="ready", args={"gen": self.gen, **args}, source=self.name, gen=self.gen))

    def run(self, timeout_ms: int = 10) -> None:
        old = {s: signal.signal(s, self._signal) for s in (signal.SIGTERM, signal.SIGINT)}
        # Everything made while starting (torch's modules, numba's compiler, the loaded state: about
        # 260,000 objects in a worker) is left out of the collector's full passes, each of which
        # would otherwise stall the live path for a few hundred milliseconds now and then.
        gc.freeze()
        try:
            if self.stamps_events and not self.tells_time:
                self._await_clock(CLOCK_WAIT_S)
            while self.running:
                msg = self.bus.recv(timeout_ms)
                while msg is not None and self.running:
                    self._dispatch(msg)
                    msg = self.bus.recv_ready()
                self.tick()
                if self.writing is not None:
                    self.finish_writing(wait=False)
                now = time.monotonic()
                if not self.tells_time and now - self._last_clock >= self.clock_every_s:
                    self._ask_time()
                if now - self._last_stats >= self.stats_every_s:
                    self._last_stats = now
                    self.publish_stats()
        finally:
            for s, h in old.items():
                signal.signal(s, h)
            self.finish_writing()  # a part still being written lands before the process ends
            log.warning("%s: stopped; last stats %s", self.name, self.stats())

    def _signal(self, signum: int, frame: object) -> None:
        self.running = False

    def _dispatch(self, msg: Message) -> None:
        if isinstance(msg, Control):
            if not addressed_to(msg, self.name):
                return
            if msg.command == "stop":
                self.running = False
            elif not self.on_time(msg) and msg.command != "hello":
                self.on_control(msg)
            return
        if msg.gen < self.gen:
            self.stale_gen += 1
            return
        self.handle(msg)

    # ------------------------------------------------------------------ time
    def _await_clock(self, timeout_s: float) -> None:
        """Before a sensor's loop: ask the hub for the time and wait for the answer (milliseconds when
        a hub runs), so that no event time goes out stamped with an unknown offset."""
        self._ask_time()
        deadline = time.monotonic() + timeout_s
        while self.running and not self.time_sync.exchanges and time.monotonic() < deadline:
            msg = self.bus.recv(10)
            if isinstance(msg, Control):
                self._dispatch(msg)
        if not self.time_sync.exchanges:
            log.warning("%s: no hub told the time within %.1f s; stamping with this machine's clock until one does",
                        self.name, timeout_s)

    def bus_ns(self, t_local: int | None = None) -> int:
        """Now, or a time our clock stamped, on the hub's clock (our own while the offset is unknown)."""
        t = self.local_ns() if t_local is None else t_local
        return t if self.tells_time else self.time_sync.to_hub(t)

    def _ask_time(self) -> None:
        self._last_clock = time.monotonic()
        self._asked.append(self.local_ns())
        self.bus.send(Control(command="clock", args={"t0": self._asked[-1]}, source=self.name, gen=self.gen))

    def on_time(self, msg: Control) -> bool:
        """Answer a question for the time (the hub) or take in an answer; False if `msg` is neither."""
        if msg.command == "clock":
            self._tell_time(msg)
        elif msg.command == "clock_reply":
            self._hear_time(msg)
        else:
            return False
        return True

    def _tell_time(self, msg: Control) -> None:
        if self.tells_time and isinstance(msg.args.get("t0"), int) and msg.source:
            t1 = self.local_ns()
            self.bus.send(Control(command="clock_reply", args={"to": msg.source, "t0": msg.args["t0"], "t1": t1,
                                                               "t2": self.local_ns()}, source=self.name, gen=self.gen))

    def _hear_time(self, msg: Control) -> None:
        t3 = self.local_ns()
        stamps = [msg.args.get(k) for k in ("t0", "t1", "t2")]
        if not self.tells_time and all(isinstance(t, int) for t in stamps) and stamps[0] in self._asked:
            self._asked.remove(stamps[0])  # an answer to a question we asked, once: no stray or replayed one counts
            self.time_sync.add(Exchange(*stamps, t3))

    def publish_stats(self) -> None:
        values = {"uptime_s": round(time.monotonic() - self._started, 3), "gen": self.gen,
                  "stamps_events": self.stamps_events,
                  "bad_messages": self.bus.dropped, "stale_gen": self.stale_gen, **self.stats(),
                  **({"clock_known": True, "clock_offset_ms": 0.0, "clock_uncertainty_ms": 0.0} if self.tells_time
                     else self.time_sync.stats(self.local_ns()))}
        clean = {k: (round(v, 4) if isinstance(v, float) else v) for k, v in values.items()
                 if isinstance(v, (bool, int, float, str)) and not (isinstance(v, float) and not math.isfinite(v))}
        self.bus.send(Stats(values=clean, source=self.name, gen=self.gen, t_ns=self.bus_ns()))


class PartOwner(Service):
    """A process that owns one part of the run's checkpoints: the hub the CDZ's, a worker its cortex's.

    One checkpoint policy for both. A lossless replay saves at fixed stream positions (every
    `checkpoint_every` stimuli and at the stream's end), on the spot, when every stimulus below
    the position is learned: `at_cut`. A live process writes its part when the supervisor says,
    in the background, while it goes on learning: `checkpoint`."""

    def __init__(self, bus: BusClient, part_name: str, *, lossless: bool, run: RunFolder | None, total: int,
                 checkpoint_every: int, gen: int = 0, keep_checkpoints: int | None = None):
        super().__init__(bus, gen)
        self.part_name = part_name
        self.lossless = lossless
        self.run_folder = run
        self.total = total
        self.checkpoint_every = checkpoint_every
        self.keep_checkpoints = keep_checkpoints  # the newest this many are kept (one process prunes for all)

    def snapshot(self, step: int) -> dict[str, np.ndarray]:
        """This process's part of checkpoint `step`, copied: learning may go on while it is written."""
        raise NotImplementedError

    def at_cut(self, step: int) -> None:
        """Lossless: every stimulus below `step` is learned; save if `step` is a checkpoint position."""
        if self.run_folder is None or step == 0:
            return
        if (self.checkpoint_every and step % self.checkpoint_every == 0) or step == self.total:
            self.run_folder.save_part(step, self.part_name, self.snapshot(step))
            if self.keep_checkpoints is not None:
                self.run_folder.drop_old_parts(keep=self.keep_checkpoints)
            self.saved(step, self.part_name)

    def checkpoint(self, step: int) -> None:
        if self.run_folder is not None and not self.lossless:  # lossless runs save at fixed stream positions
            self.write_part(self.run_folder, step, self.part_name, self.snapshot(step), keep=self.keep_checkpoints)
