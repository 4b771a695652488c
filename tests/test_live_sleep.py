"""`cdz live --sleep-every`: the agent sleeps on what it lived while it stays awake, then every
process swaps to the slept brain in place: no restart, and no stimulus lost to the swap.

Real processes on loopback: a bus, the hub and a worker per modality on a tiny trained run;
the test is the sensors (paired stimuli over the bus, ten a second) and watches the stats.
"""

from __future__ import annotations

import shutil
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from agent.runtime.bus import BusClient
from agent.core.checkpoint import RunFolder
from agent.core.config import Config, override
from replay.pipeline import load_brain
from agent.core.messages import Control, Stats, Stimulus
from replay.data.splits import load_splits

from tests.runs import train_run

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

TINY = ["data.digits=[0,1]", 'data.speakers=["jackson"]', "data.per_class=40", "data.test_per_class=10",
        "teacher.epochs=4", "cortex.initial_nodes=20", "senses.audio.encoder.arch=linear", "senses.visual.encoder.epochs=2", "senses.visual.encoder.batch_size=16",
        "refine.at=[]"]
QUICK_SLEEP = ["sleep.teach_min_steps=20", "sleep.replay_size=100", "sleep.augment=false", "sleep.teach_epochs=1"]
SENSES = ("visual", "audio")


@pytest.fixture(scope="module")
def trained(tmp_path_factory, data_dir) -> Path:
    return train_run(tmp_path_factory, data_dir, TINY)


@pytest.fixture
def run(trained, tmp_path, data_dir, monkeypatch) -> RunFolder:
    monkeypatch.setenv("CDZ_DATA_DIR", str(data_dir))  # the sleep replays old training stimuli
    return RunFolder(shutil.copytree(trained, tmp_path / "run"))


def live_session(run: RunFolder, during: Callable[[object], None] = lambda agent: None,
                 seconds: float = 8.0, fed: Callable[[object, dict[str, dict]], bool] = lambda agent, last: True,
                 ) -> tuple[object, dict[str, int], dict[str, list[dict]]]:
    """A live agent that sleeps every 3 s awake, fed ten paired events a second for `seconds`
    and then until `fed(agent, newest stats of each process)` (each sense's stimulus 0.1 s after the
    other's), until a sleep has been swapped in and every stimulus is answered; `during(agent)`
    runs on every turn of its loop. The agent, the stimuli sent per sense and every process's
    stats. (`fed` keeps the feed going for a process restarted late on a busy machine.)"""
    from tools.live import LiveAgent

    test = {m: s.x for m, s in load_splits(override(Config(), TINY), "test").items()}
    agent = LiveAgent(run, camera=None, use_mic=False, viewer=False, checkpoint_every_s=600.0,
                      sleep_every_s=3.0, sleep_settings=QUICK_SLEEP)
    sent = dict.fromkeys(SENSES, 0)
    stats: dict[str, list[dict]] = {}
    sending_done, stop_listening = threading.Event(), threading.Event()
    sent_at: list[float] = []

    def senses() -> None:
        client = BusClient(agent.bus, "senses", [b"stats"], keys=agent.keys)
        try:
            client.handshake(timeout_s=20)
            end, k = time.monotonic() + seconds, 0
            while not stop_listening.is_set():
                if not sending_done.is_set():
                    t = time.time_ns()
                    for j, m in enumerate(SENSES):
                        client.send(Stimulus(modality=m, t_ns=t + j * 100_000_000, seq=k,
                                             data=test[m][k % len(test[m])], source="senses",
                                             mseq=k))
                        sent[m] += 1
                    k += 1
                    if time.monotonic() >= end and fed(agent, {name: values[-1] for name, values in stats.items()}):
                        sent_at.append(time.monotonic())
                        sending_done.set()
                pause = time.monotonic() + 0.1
                while time.monotonic() < pause:
                    msg = client.recv(10)
                    if isinstance(msg, Stats):  # with when it came, to tell a restarted process's stats
                        stats.setdefault(msg.source, []).append({**msg.values, "_received": time.monotonic()})
        finally:
            client.close()

    def settled() -> bool:
        """Everything sent was answered, a sleep taught and was swapped in, and the agent is awake."""
        during(agent)
        last = {name: values[-1] for name, values in stats.items()}
        slept = sum(s["code"] == 0 for s in agent.sleeps)  # each one a stage (the run has no refinements)
        return (sending_done.is_set() and time.monotonic() > sent_at[0] + 2.5  # the stats after the last stimulus
                and slept >= 1 and agent.sleeper is None and last.get("hub", {}).get("sleeping") is False
                and all(last.get(f"worker-{m}", {}).get("stage") == slept and last[f"worker-{m}"]["queue"] == 0
                        for m in SENSES))  # every worker's stats since the last swap

    agent.start()
    feeder = threading.Thread(target=senses, daemon=True)
    try:
        feeder.start()
        agent.run_for(150.0, until=settled)  # a sleep takes 4-16 s here, depending on what else runs
    finally:
        stop_listening.set()
        feeder.join(10)
        agent.stop()
    print(f"sleeps {agent.sleeps}; sent {sent}; last worker stats "
          f"{ {m: {k: stats[f'worker-{m}'][-1][k] for k in ('learned', 'relived', 'reloads', 'stage')} for m in SENSES} }")
    return agent, sent, stats


def test_live_agent_sleeps_and_swaps_in_place_without_losing_a_stimulus(run):
    agent, sent, stats = live_session(run)
    assert any(s["code"] == 0 for s in agent.sleeps), agent.sleeps  # it slept, and taught something
    hub = [v.get("sleeping") for v in stats["hub"]]
    assert True in hub and False in hub[hub.index(True):], hub  # viewers are told it sleeps, and that it woke
    assert stats["hub"][-1]["reloads"] >= 1
    for m in SENSES:
        last = stats[f"worker-{m}"][-1]
        assert last["reloads"] >= 1 and last["stage"] >= 1, last  # swapped to a slept encoder, in place
        assert run.stage_encoder_path(m, last["stage"]).exists()
        assert last["relived"] > 0, last  # what it lived during the sleep was learned again by the new brain
        assert last["learned"] == sent[m] and last["dropped_oldest"] == 0 and last["lost"] == 0, (last, sent)
    assert not any(c.alive() for c in agent.children.values())
    assert all(c.restarts == 0 for c in agent.children.values())  # no restart


def test_a_worker_killed_during_the_sleep_comes_back_on_the_slept_brain(run):
    """It restarts from the cut (with that cut's encoder), then takes up the slept brain like the
    others; the other sense loses nothing, and the run's last checkpoint is whole."""
    killed: list[int] = []

    def kill_once(agent) -> None:
        worker = agent.children["worker-visual"]
        if not killed and agent.sleeper is not None and agent.sleeper.alive() and worker.alive():
            killed.append(worker.proc.pid)
            killed_at.append(time.monotonic())
            worker.proc.send_signal(signal.SIGKILL)

    def new_worker_learns(agent, last: dict[str, dict]) -> bool:
        """The newest stats are the new process's (it had been up for less time than had passed since
        the kill when they came), and it learned."""
        worker = last.get("worker-visual", {})
        return bool(killed_at) and worker.get("uptime_s", 1e9) < worker.get("_received", 0.0) - killed_at[0] \
            and worker.get("learned", 0) > 0

    killed_at: list[float] = []
    agent, sent, stats = live_session(run, during=kill_once, fed=new_worker_learns)
    assert killed and agent.children["worker-visual"].restarts == 1
    visual, audio = stats["worker-visual"][-1], stats["worker-audio"][-1]
    assert visual["stage"] == audio["stage"] >= 1, (visual, audio)  # both senses on the same slept stage
    assert 0 < visual["learned"] <= sent["visual"]  # the new process learned what came after its start
    assert audio["learned"] == sent["audio"] and audio["lost"] == 0 and audio["dropped_oldest"] == 0, audio
    loaded = load_brain(run)  # the last cut every process saved on the way out: whole and consistent
    assert loaded.brain.refinements == visual["stage"]
    assert all(np.isfinite(c.pos[: c.n_hi]).all() for c in loaded.brain.cortices.values())


def test_an_agent_that_lived_nothing_new_does_not_sleep(run):
    from tools.live import LiveAgent

    agent = LiveAgent(run, camera=None, use_mic=False, viewer=False, checkpoint_every_s=600.0,
                      sleep_every_s=0.5, sleep_settings=QUICK_SLEEP)
    agent.start()
    try:
        agent.run_for(4.0)  # eight times the sleep period, and not one stimulus
    finally:
        agent.stop()
    assert agent.sleeps == [] and agent.sleeper is None and agent.lived == 0


def test_a_deaf_hub_is_started_again(run):
    """A hub told to take up a generation no other process is in (a bug, or a rewind from a process
    holding the keys) drops every excitation as stale and learns nothing. The supervisor notices from
    the hub's stats and starts it again from the newest checkpoint; the new hub learns again."""
    told: list[float] = []

    def deafen(agent) -> None:
        if not told and agent.client is not None:
            agent.client.send(Control(command="rewind", args={"gen": 10**6, "step": 0, "to": "hub"}, source="intruder"))
            told.append(time.monotonic())

    def hub_hears_again(agent, last: dict[str, dict]) -> bool:
        hub = last.get("hub", {})
        return any(r["child"] == "hub" for r in agent.restarts) and hub.get("gen") == 0 and hub.get("processed", 0) > 0

    agent, sent, stats = live_session(run, during=deafen, fed=hub_hears_again)
    hub = stats["hub"]
    assert [r.get("why") for r in agent.restarts if r["child"] == "hub"] == ["deaf"], agent.restarts
    deaf = [v for v in hub if v["gen"] == 10**6]
    assert deaf and deaf[-1]["stale_gen"] >= 10  # it was deaf: what it heard was dropped
    assert hub[-1]["gen"] == 0 and hub[-1]["stale_gen"] == 0 and hub[-1]["processed"] > 0, hub[-1]  # and hears again


def test_a_live_worker_hears_a_new_voice_through_its_session(run):
    """Words in another 'voice' (a tint over the mel bands) reach the audio cortex through the session
    (every one counted in), and the experience keeps them as they arrived, in the order sent; a sleep
    hears that experience as the settled session does (agent.core.session_mean, tools.sleep)."""
    from agent.core.autoencoder import load_autoencoder
    from agent.core.checkpoint import experience_part
    from agent.core.experience import Experience
    from agent.core.session_mean import lived_as_heard
    from tools.live import LiveAgent

    test = {m: s.x for m, s in load_splits(override(Config(), TINY), "test").items()}
    tint = np.linspace(0.15, -0.1, test["audio"].shape[1], dtype=np.float32)[:, None]
    said = np.clip(test["audio"][np.arange(30) % len(test["audio"])] + tint, 0.0, 1.0)
    agent = LiveAgent(run, camera=None, use_mic=False, viewer=False, checkpoint_every_s=600.0)
    learned: list[int] = []
    session_heard: list[int] = []

    def senses() -> None:
        client = BusClient(agent.bus, "senses", [b"stats"], keys=agent.keys)
        try:
            client.handshake(timeout_s=20)
            t = time.time_ns()
            for k, x in enumerate(said):
                client.send(Stimulus(modality="audio", t_ns=t + k * 100_000_000, seq=k, data=x, source="senses",
                                     mseq=k))
                time.sleep(0.02)
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and not (learned and learned[-1] == len(said)):
                msg = client.recv(50)
                if isinstance(msg, Stats) and msg.source == "worker-audio":
                    learned.append(msg.values["learned"])
                    session_heard.append(msg.values["session_heard"])
        finally:
            client.close()

    agent.start()
    feeder = threading.Thread(target=senses, daemon=True)
    try:
        feeder.start()
        agent.run_for(90.0, until=lambda: bool(learned) and learned[-1] == len(said))
    finally:
        feeder.join(10)
        agent.stop()  # every process saves its part on the way out
    assert learned and learned[-1] == len(said), learned
    with run.restoring() as (_step, state):
        kept = Experience(said.shape[1:], 100)
        kept.load_state_dict(state, experience_part("audio"))
    lived, _ = kept.arrays()
    assert session_heard[-1] == len(said)
    np.testing.assert_array_equal(lived, said)
    settled = lived_as_heard(lived, load_autoencoder(run.encoder_path("audio")), run.config().sense("audio"))
    assert np.abs(settled - said).mean() > 0.02  # what a sleep is taught: the tint taken off, not passed on
