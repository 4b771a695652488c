"""`cdz live --sleep-every`: the agent sleeps on what it lived while it stays awake, then every
process swaps to the slept brain in place: no restart, and no stimulus lost to the swap.

Real processes on loopback: a bus, the hub and a worker per modality on a tiny trained run;
the test is the sensors (paired stimuli over the bus, ten a second) and watches the stats.
"""

from __future__ import annotations

import threading
import time

import pytest

from agent.bus import BusClient
from agent.checkpoint import RunFolder
from agent.config import Config, override
from agent.wire import Stats, Stimulus
from replay.splits import load_splits

from tests.runs import train_run

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

TINY = ["data.digits=[0,1]", 'data.speakers=["jackson"]', "data.per_class=40", "data.test_per_class=10",
        "teacher.epochs=4", "cortex.initial_nodes=20", "visual_encoder.epochs=2", "visual_encoder.batch_size=16",
        "refine.at=[]"]
QUICK_SLEEP = ["sleep.teach_min_steps=20", "sleep.replay_size=100", "sleep.augment=false", "sleep.teach_epochs=1"]


def test_live_agent_sleeps_and_swaps_in_place_without_losing_a_stimulus(tmp_path_factory, data_dir, monkeypatch):
    from tools.live import LiveAgent

    run = RunFolder(train_run(tmp_path_factory, data_dir, TINY))
    monkeypatch.setenv("CDZ_DATA_DIR", str(data_dir))  # the sleep replays old training stimuli
    test = {m: s.x for m, s in load_splits(override(Config(), TINY), "test").items()}
    agent = LiveAgent(run, camera=None, use_mic=False, viewer=False, checkpoint_every_s=600.0,
                      sleep_every_s=3.0, sleep_settings=QUICK_SLEEP)
    sent = {"visual": 0, "audio": 0}
    stats: dict[str, list[dict]] = {}
    sending_done, stop_listening = threading.Event(), threading.Event()

    def senses() -> None:
        """Ten paired events a second for 14 s, each sense's stimulus 0.1 s after the other's; then
        listen to the stats until told to stop."""
        client = BusClient(agent.bus, "senses", [b"stats"])
        try:
            client.handshake(timeout_s=20)
            end, k = time.monotonic() + 14.0, 0
            while not stop_listening.is_set():
                if not sending_done.is_set():
                    t = time.time_ns()
                    for j, m in enumerate(("visual", "audio")):
                        client.send(Stimulus(m, t + j * 100_000_000, k, test[m][k % len(test[m])], source="senses",
                                             mseq=k))
                        sent[m] += 1
                    k += 1
                    if time.monotonic() >= end:
                        sending_done.set()
                pause = time.monotonic() + 0.1
                while time.monotonic() < pause:
                    msg = client.recv(10)
                    if isinstance(msg, Stats):
                        stats.setdefault(msg.source, []).append(msg.values)
        finally:
            client.close()

    def settled() -> bool:
        """Everything sent was learned, a sleep taught and was swapped in, and the agent is awake again."""
        last = {name: values[-1] for name, values in stats.items()}
        return (sending_done.is_set() and any(s["code"] == 0 for s in agent.sleeps) and agent.sleeper is None
                and last.get("hub", {}).get("sleeping") is False
                and all(last.get(f"worker-{m}", {}).get("learned") == sent[m] for m in sent))

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
          f"{ {m: stats[f'worker-{m}'][-1] for m in ('visual', 'audio')} }")
    assert any(s["code"] == 0 for s in agent.sleeps), agent.sleeps  # it slept, and taught something
    hub = [v.get("sleeping") for v in stats["hub"]]
    assert True in hub and False in hub[hub.index(True):], hub  # viewers are told it sleeps, and that it woke
    assert stats["hub"][-1]["reloads"] >= 1
    for m in ("visual", "audio"):
        last = stats[f"worker-{m}"][-1]
        assert last["reloads"] >= 1 and last["stage"] >= 1, last  # swapped to a slept encoder, in place
        assert run.stage_encoder_path(m, last["stage"]).exists()
        assert last["relived"] > 0, last  # what it lived during the sleep was learned again by the new brain
        assert last["learned"] == sent[m] and last["dropped_oldest"] == 0 and last["lost"] == 0, (last, sent)
    assert not any(c.alive() for c in agent.children.values())
    assert all(c.restarts == 0 for c in agent.children.values())  # no restart
