"""Clock offsets to the hub, estimated from NTP-style exchanges (`agent.runtime.clock`), on
simulated exchanges: a skewed and drifting clock, queues that delay one leg, a stepped clock."""

from __future__ import annotations

import logging
import re
import time

import numpy as np
import pytest

from agent.runtime.clock import ClockSync, Exchange, local_clock, skews_ms


def test_the_skew_aid_names_roles_and_refuses_what_it_cannot_read(monkeypatch):
    assert skews_ms("microphone=700, camera=-400") == {"microphone": 700.0, "camera": -400.0}
    assert skews_ms("") == {}
    for bad in ("microphone:700", "microphone=fast", "=5", "camera=nan"):
        with pytest.raises(ValueError, match="role=milliseconds"):
            skews_ms(bad)
    monkeypatch.setenv("CDZ_CLOCK_SKEW_MS", "microphone=700,worker=-40")
    assert abs(local_clock("microphone")() - time.time_ns() - 700e6) < 50e6
    assert abs(local_clock("worker-audio", "worker")() - time.time_ns() + 40e6) < 50e6
    assert local_clock("camera") is time.time_ns


def simulate(sync: ClockSync, offset_ms, seconds: int, rng: np.random.Generator, every_s: float = 1.0,
             spikes: float = 0.1) -> list[tuple[int, float]]:
    """Exchanges every `every_s` seconds of our clock; the hub's clock is ours plus `offset_ms(t_s)`.
    Each leg takes 0.05-0.5 ms, and now and then (`spikes`) one leg waits 5-40 ms in a queue.
    Returns (our time, error of the corrected time in ms) after each exchange."""
    errors = []
    for k in range(int(seconds / every_s)):
        t = k * every_s + 100.0  # true time = our clock, in s
        legs = rng.uniform(0.05e-3, 0.5e-3, 2) + (rng.random(2) < spikes) * rng.uniform(5e-3, 40e-3, 2)
        hub = lambda s: s + offset_ms(s) / 1e3  # noqa: E731
        t1 = hub(t + legs[0])
        t2 = hub(t + legs[0] + 50e-6)
        t3 = t + legs[0] + 50e-6 + legs[1]
        sync.add(Exchange(int(t * 1e9), int(t1 * 1e9), int(t2 * 1e9), int(t3 * 1e9)))
        now = int(t3 * 1e9)
        errors.append((now, (sync.to_hub(now) - hub(t3) * 1e9) / 1e6))
    return errors


def test_a_skewed_drifting_clock_stays_corrected_over_ten_minutes():
    """+700 ms and 50 ppm of drift (3 ms every minute), queues on the way: within 2 ms throughout."""
    sync = ClockSync()
    errors = simulate(sync, lambda s: 700.0 + 50e-6 * 1e3 * s, 600, np.random.default_rng(0))
    worst = max(abs(e) for _, e in errors)
    assert worst < 2.0, worst
    st = sync.stats(errors[-1][0])
    assert st["clock_known"] and 0 < st["clock_uncertainty_ms"] < 2.0
    assert abs(st["clock_offset_ms"] + (700.0 + 0.05 * 700)) < 2.0  # we run behind the hub: drifted, at t = 700 s
    assert sync.jumps == 0  # drift is followed, never taken for a jump


def test_without_exchanges_the_offset_is_unknown_and_times_pass_unchanged():
    sync = ClockSync()
    assert sync.offset_at(5) is None and sync.to_hub(123) == 123
    assert sync.stats(0) == {"clock_known": False, "clock_offset_ms": 0.0, "clock_uncertainty_ms": 0.0,
                             "clock_jumps": 0, "clock_exchanges": 0}


def test_one_slow_exchange_moves_nothing():
    """One leg held 30 ms in a queue: its offset is 15 ms off, but its delay gives it away."""
    sync = ClockSync()
    simulate(sync, lambda s: -400.0, 5, np.random.default_rng(1), spikes=0.0)
    before = sync.offset_at(10**12)
    sync.add(Exchange(200 * 10**9, 200 * 10**9 + 30_000_000 - 400_000_000, 200 * 10**9 + 30_050_000 - 400_000_000,
                      200 * 10**9 + 30_100_000))
    assert sync.offset_at(10**12) == before and sync.jumps == 0


def test_a_stepped_clock_is_logged_confirmed_and_phased_in(caplog):
    sync = ClockSync(window=4, confirm=3, smooth_s=2.0, name="microphone")
    step_at = 130.0  # the hub's clock is stepped by +50 ms at this time
    with caplog.at_level(logging.WARNING, logger="agent.runtime.clock"):
        errors = simulate(sync, lambda s: 10.0 + (50.0 if s >= step_at else 0.0), 60, np.random.default_rng(2),
                          spikes=0.0)
    after = [e for now, e in errors if now / 1e9 >= step_at]
    assert abs(after[0]) > 40  # not taken at once
    assert all(abs(e) < 2.0 for e in after[10:])  # confirmed and phased in within a few seconds
    assert sync.jumps == 1
    assert re.search(r"seems to have jumped by \+(49\.[5-9]|50\.[0-4])", caplog.text)
    assert re.search(r"offset jumped \+(49\.[5-9]|50\.[0-4]) ms; phased in", caplog.text)


def test_a_phase_in_moves_the_offset_gradually():
    sync = ClockSync(window=1, confirm=1, smooth_s=2.0)
    sync.add(Exchange(0, 0, 0, 0))
    sync.add(Exchange(10**9, 10**9 + 100_000_000, 10**9 + 100_000_000, 10**9))  # +100 ms, confirmed at once
    assert sync.offset_at(10**9) == pytest.approx(0.0)
    assert sync.offset_at(2 * 10**9) == pytest.approx(50e6)
    assert sync.offset_at(4 * 10**9) == pytest.approx(100e6)


def test_an_exchange_with_impossible_stamps_is_refused():
    sync = ClockSync()
    sync.add(Exchange(10, 5, 4, 12))  # the hub answered before it was asked
    sync.add(Exchange(10, 0, 100, 12))  # it took longer than the round trip
    assert sync.refused == 2 and sync.offset_at(0) is None


def test_a_first_exchange_made_on_a_busy_machine_is_bettered_at_once_not_taken_as_a_jump(caplog):
    """The first answer's return leg waited 120 ms (its offset is 60 ms off, and its delay says it may
    be): the next quick exchange corrects it on the spot, without a jump or a warning."""
    sync = ClockSync(name="lsl_in")
    t = 100 * 10**9
    hub = -400_000_000  # the hub's clock minus ours
    sync.add(Exchange(t, t + hub + 100_000, t + hub + 150_000, t + 120_250_000))
    assert abs(sync.offset_at(t) - hub) > 55e6
    with caplog.at_level(logging.WARNING, logger="agent.runtime.clock"):
        t += 10**9
        sync.add(Exchange(t, t + hub + 100_000, t + hub + 150_000, t + 250_000))
    assert abs(sync.offset_at(t + 300_000) - hub) < 0.1e6
    assert sync.jumps == 0 and "jump" not in caplog.text


def test_a_busy_spell_that_answers_late_does_not_move_a_precise_offset():
    """After a quick exchange, eight in a row whose return leg waited 28 ms (each 14 ms off, and
    saying so by its delay) slide it out of the window: the precise offset stays in use."""
    sync = ClockSync(window=8)
    hub = 250_000_000
    t = 100 * 10**9
    sync.add(Exchange(t, t + hub + 100_000, t + hub + 150_000, t + 250_000))
    for k in range(1, 12):
        t += 10**9
        sync.add(Exchange(t, t + hub + 100_000, t + hub + 150_000, t + 28_250_000))
        assert abs(sync.offset_at(t + 30_000_000) - hub) < 0.1e6, k
    assert sync.jumps == 0
