"""`cdz live` pieces that need no devices: the event log that joins excitations with recalls."""

from __future__ import annotations

import io
import json
import time

from agent.wire import Excite, Recall
from tools.live import EventLog

NAMES = {"visual": {3: 7, 4: 1}, "audio": {10: 7, 11: 1}}


def lines(out: io.StringIO) -> list[dict]:
    return [json.loads(line) for line in out.getvalue().splitlines()]


def test_an_excitation_and_its_recall_make_one_line_with_scoring_names():
    out = io.StringIO()
    log = EventLog(out, ("visual", "audio"), NAMES)
    log.add(Excite("visual", 2_000_000_000, 5, cluster_id=3, node_id=9))
    assert out.getvalue() == ""  # waits for the recall
    log.add(Recall("audio", 2_000_000_000, 5, cluster_id=10, cue_modality="visual", cue_cluster=3))
    (event,) = lines(out)
    assert event == {"t": 2.0, "modality": "visual", "seq": 5, "cluster": 3, "cluster_name": 7,
                     "recalled": {"audio": 10}, "recalled_names": {"audio": 7}}


def test_a_stimulus_that_recalls_nothing_is_written_after_the_wait():
    out = io.StringIO()
    log = EventLog(out, ("visual", "audio"), NAMES, wait_s=0.05)
    log.add(Excite("audio", 1, 8, cluster_id=99, node_id=1))  # a cluster born live: no scoring name
    log.flush()
    assert out.getvalue() == ""
    time.sleep(0.06)
    log.flush()
    (event,) = lines(out)
    assert event["cluster_name"] is None and event["recalled"] == {"visual": None}
    assert log.written == 1


def test_recalls_of_other_stimuli_do_not_mix():
    out = io.StringIO()
    log = EventLog(out, ("visual", "audio"), NAMES)
    log.add(Excite("visual", 1, 1, cluster_id=3, node_id=0))
    log.add(Excite("visual", 2, 2, cluster_id=4, node_id=0))
    log.add(Recall("audio", 2, 2, cluster_id=11, cue_modality="visual", cue_cluster=4))
    log.add(Recall("audio", 9, 7, cluster_id=10, cue_modality="visual", cue_cluster=3))  # nobody's
    log.flush(everything=True)
    got = {e["seq"]: e["recalled"]["audio"] for e in lines(out)}
    assert got == {2: 11, 1: None}
