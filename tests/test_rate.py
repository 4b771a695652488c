"""`Rate`, the one events-per-second counter of every process's stats."""

from __future__ import annotations

import time

import pytest

from agent.runtime.service import Rate


def test_rate_counts_since_the_last_reading_and_starts_again():
    rate = Rate()
    rate.add(5)
    time.sleep(0.1)
    first = rate.per_second()
    assert 0 < first <= 5 / 0.1 + 1e-6  # 5 events over at least 0.1 s (a loaded machine may take longer)
    assert rate.per_second() == pytest.approx(0.0)  # nothing since


def test_a_reading_within_the_minimum_window_repeats_the_last_rate():
    rate = Rate(min_window_s=0.2)
    rate.add(4)
    assert rate.per_second() == 0.0  # too soon: no rate yet, and the count is kept
    time.sleep(0.25)
    settled = rate.per_second()
    assert settled > 0
    rate.add(100)
    assert rate.per_second() == settled  # within the window the display holds still
