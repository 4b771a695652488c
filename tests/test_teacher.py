"""replay.data.teacher.make_stream: the flash-card parent as a deterministic timed stream."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from agent.core.config import TeacherSettings
from agent.core.stream import Stream
from replay.data.teacher import make_stream

DIGITS = 10


def labels(n: int = 200, seed: int = 0, mods=("visual", "audio")) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {m: rng.integers(0, DIGITS, size=n + 7 * k) for k, m in enumerate(mods)}


def same(a: Stream, b: Stream) -> bool:
    return a.modalities == b.modalities and all(
        np.array_equal(getattr(a, f), getattr(b, f)) for f in ("t", "modality", "index", "event", "label"))


def per_event(s: Stream) -> dict[int, dict[int, int]]:
    """event -> {modality index: stimulus position}."""
    out: dict[int, dict[int, int]] = {}
    for j, (e, m) in enumerate(zip(s.event.tolist(), s.modality.tolist())):
        assert m not in out.setdefault(e, {}), "one stimulus per modality per event"
        out[e][m] = j
    return out


def test_deterministic_per_seed():
    y = labels()
    st = TeacherSettings(p_unpaired=0.2, p_mismatch=0.2)
    assert same(make_stream(y, st, 300, 5), make_stream(y, st, 300, 5))
    assert not same(make_stream(y, st, 300, 5), make_stream(y, st, 300, 6))


def test_times_sorted_and_arrays_aligned():
    s = make_stream(labels(), TeacherSettings(lag_s=(-1.0, 1.0), gap_s=0.5), 400, 1)
    assert np.all(np.diff(s.t) >= 0)
    n = len(s)
    for f in ("t", "modality", "index", "event", "label"):
        assert getattr(s, f).shape == (n,)
    assert s.t.dtype == np.float64
    for f in ("modality", "index", "event", "label"):
        assert getattr(s, f).dtype == np.int64
    assert n == 800
    assert s.count("visual") == s.count("audio") == 400


def test_labels_and_indices_agree_with_the_training_sets():
    y = labels()
    s = make_stream(y, TeacherSettings(p_mismatch=0.3), 500, 2)
    for k, m in enumerate(s.modalities):
        rows = s.modality == k
        assert np.array_equal(y[m][s.index[rows]], s.label[rows])
        assert s.index[rows].max() < len(y[m]) and s.index[rows].min() >= 0


def test_image_on_the_gap_grid_and_lag_within_range():
    gap, lo, hi = 2.0, -0.3, 0.7
    s = make_stream(labels(), TeacherSettings(lag_s=(lo, hi), gap_s=gap), 1000, 3)
    ev = per_event(s)
    assert sorted(ev) == list(range(1000))
    lags = []
    for e, where in ev.items():
        assert s.t[where[0]] == pytest.approx(e * gap)  # the image at k * gap
        lags.append(s.t[where[1]] - s.t[where[0]])
    lags = np.array(lags)
    assert lags.min() >= lo - 1e-9 and lags.max() <= hi + 1e-9
    assert lags.min() < lo + 0.05 and lags.max() > hi - 0.05  # the whole range is used
    assert abs(lags.mean() - (lo + hi) / 2) < 0.05


def test_fixed_lag_and_three_modalities():
    mods = ("visual", "audio", "reward")
    s = make_stream(labels(mods=mods), TeacherSettings(lag_s=(0.25, 0.25), gap_s=1.0), 50, 0)
    assert s.modalities == mods
    for e, where in per_event(s).items():
        assert sorted(where) == [0, 1, 2]
        assert s.t[where[1]] - s.t[where[0]] == pytest.approx(0.25)
        assert s.t[where[2]] - s.t[where[0]] == pytest.approx(0.25)


def test_paired_events_show_the_same_digit_without_mismatch():
    s = make_stream(labels(), TeacherSettings(), 500, 4)
    for where in per_event(s).values():
        assert s.label[where[0]] == s.label[where[1]]


@pytest.mark.parametrize("p", [0.1, 0.4])
def test_unpaired_rate(p):
    n = 8000
    s = make_stream(labels(), TeacherSettings(p_unpaired=p), n, 7)
    ev = per_event(s)
    assert len(ev) == n  # every event shows at least one stimulus
    single = [w for w in ev.values() if len(w) == 1]
    assert abs(len(single) / n - p) < 0.02
    kept = np.array([next(iter(w)) for w in single])
    assert 0.4 < kept.mean() < 0.6  # either modality may be the one shown
    assert len(s) == 2 * n - len(single)


@pytest.mark.parametrize("p", [0.0, 0.15, 0.5])
def test_mismatch_rate(p):
    n = 8000
    s = make_stream(labels(), TeacherSettings(p_mismatch=p), n, 8)
    ev = per_event(s)
    differ = np.mean([s.label[w[0]] != s.label[w[1]] for w in ev.values()])
    assert abs(differ - p) < 0.02


def test_digits_restricted_to_those_all_modalities_share():
    y = {"visual": np.array([1, 2, 3, 3, 2, 1]), "audio": np.array([2, 3, 4, 4, 3])}
    s = make_stream(y, TeacherSettings(p_mismatch=0.5), 300, 0)
    assert set(s.label.tolist()) == {2, 3}


def test_mismatch_with_a_single_shared_digit_stays_matched():
    y = {"visual": np.array([5, 5, 5]), "audio": np.array([5, 5])}
    s = make_stream(y, TeacherSettings(p_mismatch=1.0), 20, 0)
    assert set(s.label.tolist()) == {5}


@pytest.mark.parametrize("change, n_events, mods", [
    (dict(lag_s=(0.5, -0.5)), 10, 2),
    (dict(p_unpaired=1.5), 10, 2),
    (dict(p_unpaired=-0.1), 10, 2),
    (dict(p_mismatch=2.0), 10, 2),
    (dict(p_mismatch=float("nan")), 10, 2),
    (dict(), 0, 2),
    (dict(), -3, 2),
    (dict(), 10, 1),
])
def test_bad_settings_raise_value_error(change, n_events, mods):
    y = labels(mods=("visual", "audio")[:mods])
    with pytest.raises(ValueError):
        make_stream(y, dataclasses.replace(TeacherSettings(), **change), n_events, 0)


def test_no_shared_label_is_a_value_error():
    with pytest.raises(ValueError, match="share no label"):
        make_stream({"visual": np.array([1, 2]), "audio": np.array([3, 4])}, TeacherSettings(), 5, 0)


@pytest.mark.parametrize("gap", [0.0, -1.0])
def test_non_positive_gap_is_a_value_error(gap):
    with pytest.raises(ValueError):
        make_stream(labels(), TeacherSettings(gap_s=gap), 10, 0)
