"""A process's offset to the hub's clock, measured NTP-style, and the test aid that skews clocks.

Pairing happens in event time within a window B of about a second, and every event time
is stamped from its own machine's wall clock: two machines whose clocks disagree by 300 ms
shift every pair by that much. So a process measures the hub's clock against its own.

One exchange: the process stamps `t0` by its clock and asks; the hub stamps `t1` when the
question arrives and `t2` when it answers; the process stamps `t3` when the answer
arrives. Then

    offset = ((t1 - t0) + (t2 - t3)) / 2     the hub's clock minus ours
    delay  = (t3 - t0) - (t2 - t1)           the round trip, less the hub's own time

The offset is exact when both legs take as long; however they differ, its error is at most
delay / 2. Queues only ever add delay, so of the last `window` exchanges the one with the
least delay is trusted, and delay / 2 is the uncertainty reported. The window slides, so a
drifting clock is followed. A new estimate more precise than the one in use and within
what the two can be off by together is taken at once (a first exchange made while the
machine was busy, then a quick one); one no more precise whose own error bound covers the
difference leaves the offset as it is (a busy process answers late for a while: its
estimates are worse, not a new truth); a difference beyond that bound but within `jump_ms`
is taken at once (drift). A larger one is a jump:
it is logged, taken only once `confirm` exchanges in a row agree on it, and then phased in
over `smooth_s` seconds, so event times never leap on one odd exchange. Nothing here reads
a message; `ClockSync` is fed the four stamps.
"""

from __future__ import annotations

import logging
import os
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

log = logging.getLogger(__name__)

SKEW_ENV = "CDZ_CLOCK_SKEW_MS"


def skews_ms(spec: str | None = None) -> dict[str, float]:
    """The test skews of CDZ_CLOCK_SKEW_MS (or `spec`), e.g. "microphone=700,camera=-400": a process
    named (or of the kind) microphone runs 700 ms ahead, the camera 400 ms behind.

    Raises ValueError naming the fault for a spec that is not `role=milliseconds` pairs."""
    spec = os.environ.get(SKEW_ENV, "") if spec is None else spec
    skews: dict[str, float] = {}
    for item in filter(None, (s.strip() for s in spec.split(","))):
        name, sep, value = item.partition("=")
        try:
            ms = float(value)
        except ValueError:
            ms = float("nan")
        if not sep or not name.strip() or not abs(ms) < 1e9:
            raise ValueError(f"{SKEW_ENV}: expected role=milliseconds pairs, e.g. microphone=700,camera=-400; "
                             f"got {item!r}")
        skews[name.strip()] = ms
    return skews


def local_clock(*names: str) -> Callable[[], int]:
    """A process's wall clock in ns: `time.time_ns`, shifted by the test skew of the first of `names`
    (its name, then its kind: "worker-visual", "worker") that CDZ_CLOCK_SKEW_MS names."""
    skews = skews_ms()
    shift = int(round(next((skews[n] for n in names if n in skews), 0.0) * 1e6))
    if shift == 0:
        return time.time_ns
    return lambda: time.time_ns() + shift


@dataclass(frozen=True)
class Exchange:
    """The four stamps of one question to the hub and its answer (ns)."""

    t0: int  # asked, our clock
    t1: int  # arrived, hub's clock
    t2: int  # answered, hub's clock
    t3: int  # answer arrived, our clock

    @property
    def offset(self) -> float:
        return ((self.t1 - self.t0) + (self.t2 - self.t3)) / 2

    @property
    def delay(self) -> int:
        return (self.t3 - self.t0) - (self.t2 - self.t1)


class ClockSync:
    """The hub's clock minus ours, from a sliding window of exchanges; see the module's docstring."""

    def __init__(self, window: int = 8, jump_ms: float = 5.0, confirm: int = 3, smooth_s: float = 2.0,
                 name: str = ""):
        if window < 1 or confirm < 1 or jump_ms <= 0 or smooth_s < 0:
            raise ValueError("window and confirm must be at least 1, jump_ms positive, smooth_s not negative")
        self.window: deque[Exchange] = deque(maxlen=window)
        self.jump_ns = jump_ms * 1e6
        self.confirm = confirm
        self.smooth_ns = smooth_s * 1e9
        self.name = name
        self.exchanges = 0
        self.refused = 0  # exchanges whose stamps cannot be (negative delay: a clock stepped mid-exchange)
        self.jumps = 0
        self._from: float | None = None  # offset in use before the current phase-in (None: unknown)
        self._to: float | None = None  # the offset being phased in (or in use)
        self._bound = 0.0  # the most the offset being used can be off by (half its exchange's delay)
        self._since = 0  # our clock when the phase-in began
        self._agreeing = 0  # exchanges in a row that agree on a jump
        self._jump: float | None = None  # the jump they agree on

    def add(self, ex: Exchange) -> None:
        """One finished exchange."""
        if ex.delay < 0 or ex.t2 < ex.t1:
            self.refused += 1
            return
        self.exchanges += 1
        self.window.append(ex)
        trusted = min(self.window, key=lambda e: e.delay)
        best, bound = trusted.offset, trusted.delay / 2
        if self._to is None:  # the first estimate: nothing was in use, take it as it is
            self._from = self._to = best
            self._bound, self._since = bound, ex.t3
            return
        moved = abs(best - self._to)
        if (bound < self._bound and moved <= self._bound + bound) or bound < moved <= self.jump_ns:
            # a more precise estimate within what the two can be off by together (a first exchange made
            # while the machine was busy, then a quick one), or a small correction (drift): taken at once
            self._start(ex.t3, best)
            self._bound = bound
            self._agreeing = 0
            return
        if moved <= bound:  # no more precise, and it does not contradict the one in use: that one stays
            self._agreeing = 0
            return
        # a jump: taken only once `confirm` exchanges in a row agree on it, so one odd exchange moves nothing
        agrees = self._jump is not None and abs(best - self._jump) <= self.jump_ns
        self._agreeing = self._agreeing + 1 if agrees else 1
        self._jump = best
        if self._agreeing == 1:
            log.warning("%s: the hub's clock seems to have jumped by %+.1f ms; waiting for %d exchanges to confirm",
                        self.name or "clock", (best - self._to) / 1e6, self.confirm)
        if self._agreeing >= self.confirm:
            self.jumps += 1
            log.warning("%s: clock offset jumped %+.1f ms; phased in over %.1f s", self.name or "clock",
                        (best - self._to) / 1e6, self.smooth_ns / 1e9)
            self._start(ex.t3, best, smooth=True)
            self._bound = bound
            self._agreeing = 0

    def _start(self, now: int, target: float, smooth: bool = False) -> None:
        self._from = self.offset_at(now) if smooth else target
        self._to, self._since = target, now

    def offset_at(self, now: int) -> float | None:
        """The offset in use at our clock's `now` (ns; None while unknown)."""
        if self._to is None or self._from is None:
            return None
        if self.smooth_ns <= 0 or now - self._since >= self.smooth_ns:
            return self._to
        frac = max(0.0, (now - self._since) / self.smooth_ns)
        return self._from + frac * (self._to - self._from)

    @property
    def uncertainty_ns(self) -> float | None:
        """Half the least delay in the window: the most the offset in use can be off by (None while unknown)."""
        return min(e.delay for e in self.window) / 2 if self.window else None

    def to_hub(self, t_ns: int) -> int:
        """An event time of our clock on the hub's clock (unchanged while the offset is unknown)."""
        offset = self.offset_at(t_ns)
        return t_ns if offset is None else int(round(t_ns + offset))

    def stats(self, now: int) -> dict[str, float | int | bool]:
        """For a process's stats: how far our clock runs ahead of the hub's (`clock_offset_ms`, the
        negative of the offset applied) and how sure that is; both 0 with `clock_known` false while unknown."""
        offset, unc = self.offset_at(now), self.uncertainty_ns
        return {"clock_known": offset is not None, "clock_offset_ms": 0.0 if offset is None else -offset / 1e6,
                "clock_uncertainty_ms": 0.0 if unc is None else unc / 1e6, "clock_jumps": self.jumps,
                "clock_exchanges": self.exchanges}
