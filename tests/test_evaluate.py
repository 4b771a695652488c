"""Scoring helpers: judge reuse across runs."""

from __future__ import annotations

import numpy as np
import pytest

import tools.scoring.evaluate as evaluate
from agent.core.checkpoint import RunFolder
from replay.data.datasets import Split


@pytest.fixture
def tiny_split() -> Split:
    rng = np.random.default_rng(0)
    y = np.repeat([0, 1], 20)
    x = np.zeros((40, 28, 28), np.float32)
    x[y == 0, 5:10, 5:23] = 1.0  # a bar at the top
    x[y == 1, 18:23, 5:23] = 1.0  # a bar at the bottom
    x += rng.random(x.shape).astype(np.float32) * 0.1
    return Split("visual", np.clip(x, 0, 1), y, tuple(f"s{i}" for i in range(40)), None)


def test_a_judge_is_trained_once_per_data_and_seed(tmp_path, monkeypatch, tiny_split):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    first = evaluate._judge_for(RunFolder(tmp_path / "a"), "visual", tiny_split, seed=1, progress=False)
    assert RunFolder(tmp_path / "a").judge_path("visual").exists()

    def no_training(*args, **kwargs):
        raise AssertionError("the cached judge should have been reused")

    monkeypatch.setattr(evaluate, "train_judge", no_training)
    second = evaluate._judge_for(RunFolder(tmp_path / "b"), "visual", tiny_split, seed=1, progress=False)
    np.testing.assert_array_equal(evaluate.predict(first, tiny_split.x), evaluate.predict(second, tiny_split.x))
    with pytest.raises(AssertionError):  # another seed is another judge
        evaluate._judge_for(RunFolder(tmp_path / "c"), "visual", tiny_split, seed=2, progress=False)


def test_a_damaged_cached_judge_is_retrained(tmp_path, monkeypatch, tiny_split):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    evaluate._judge_for(RunFolder(tmp_path / "a"), "visual", tiny_split, seed=1, progress=False)
    (cached,) = (tmp_path / "cache" / "cdz-agent" / "judges").iterdir()
    cached.write_bytes(b"not a checkpoint")
    judge = evaluate._judge_for(RunFolder(tmp_path / "b"), "visual", tiny_split, seed=1, progress=False)
    assert (evaluate.predict(judge, tiny_split.x) == tiny_split.y).mean() > 0.9
    assert cached.stat().st_size > 1000  # replaced by a real judge
