"""A session played through the live runtime as fast as it learns (tools/bench/played_session.py), as
`cdz bench adapt` does: recorded as MCAP, played by a real `cdz play --follow` process into a real
bus, hub and workers in live mode. Every stimulus must be learned and buffered in order, then a
sleep while awake under a live feed must lose nothing.
"""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from agent.core.checkpoint import RunFolder
from agent.core.config import Config, override
from replay.data.splits import load_splits
from tests.runs import train_run
from tests.test_live_sleep import QUICK_SLEEP, TINY

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]


@pytest.fixture(scope="module")
def trained(tmp_path_factory, data_dir):
    return train_run(tmp_path_factory, data_dir, TINY, name="played")


def test_a_played_session_is_learned_whole_then_an_awake_sleep_loses_nothing(trained, tmp_path, data_dir,
                                                                             monkeypatch):
    from tools.bench.adapt import session_playlist
    from tools.live import LiveAgent
    from tools.bench.played_session import SessionTally, play_session, sleep_awake

    monkeypatch.setenv("CDZ_DATA_DIR", str(data_dir))  # the sleep replays old training stimuli
    run = RunFolder(shutil.copytree(trained, tmp_path / "run"))
    config = override(Config(), TINY)
    train, test = load_splits(config, "train"), load_splits(config, "test")
    playlist = session_playlist(run.config(), {m: s.x for m, s in train.items()}, {m: s.y for m, s in train.items()},
                                events=60, seed=3)
    agent = LiveAgent(run, camera=None, use_mic=False, viewer=False, checkpoint_every_s=1e9,
                      sleep_settings=QUICK_SLEEP)
    tally = SessionTally()
    agent.start()
    try:
        played = play_session(agent, playlist, tmp_path / "session.mcap", tally, timeout_s=120)
        assert played == {**played, "played": 120, "learned": 120, "player_code": 0}
        step = agent.checkpoint()
        agent._await_saved(step, timeout_s=20)
        _, state = run.load_checkpoint()
        for k, m in enumerate(playlist.modalities):  # every stimulus buffered, in the order it was shown,
            rows = np.flatnonzero(playlist.modality == k)  # as it arrived (a sleep hears it through a session)
            np.testing.assert_array_equal(state[f"experience.{m}.t_ns"], playlist.t_ns[rows])
            np.testing.assert_array_equal(state[f"experience.{m}.x"], playlist.data[m][playlist.index[rows]])
        first = {m: int((playlist.modality == k).sum()) for k, m in enumerate(playlist.modalities)}
        awake = sleep_awake(agent, tally, {m: s.x for m, s in test.items()}, first, timeout_s=120, after_s=1.0)
    finally:
        agent.stop()
    print(f"played {played}; awake sleep {awake}")
    assert [s["code"] for s in awake["sleeps"]] == [0], "the sleep did not teach"
    assert awake["feed_error"] is None and awake["feed_sent"] > 20
    assert awake["lost"] == 0 and awake["latency_ms"]["samples"] > 0
    _, state = run.load_checkpoint()
    assert int(state["refinements"]) == 1  # the slept brain was swapped in and saved on stopping


def test_a_few_shot_session_is_scored_before_and_after_end_to_end(trained, tmp_path, data_dir, monkeypatch):
    """`cdz bench adapt`'s one session on tiny data: played through the live runtime, slept on, and
    scored before and after (the voice's words in the session that met it, and in a new one)."""
    from tools.bench.adapt import adapt_once

    monkeypatch.setenv("CDZ_DATA_DIR", str(data_dir))
    config = override(Config(), TINY + QUICK_SLEEP)
    train, test = load_splits(config, "train"), load_splits(config, "test")
    standard = {m: (s.x, s.y) for m, s in test.items()}
    r = adapt_once(RunFolder(trained), tmp_path / "session", {m: s.x for m, s in train.items()},
                   {m: s.y for m, s in train.items()}, ("audio", test["audio"].x, test["audio"].y), standard,
                   events=30, seed=1, sleep_settings=config.sleep)
    pairs = {"probe", "visual->audio", "audio->visual"}
    assert set(r["before"]) == pairs and set(r["after"]) == pairs and set(r["after_new_session"]) == {"probe"}
    assert all(0.0 <= v <= 1.0 for part in ("before", "after", "after_new_session") for v in r[part].values())
    assert r["lost"] == 0 and r["session"]["learned"] == 60 and r["sleep_s"] > 0
