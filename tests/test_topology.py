"""agent.runtime.topology and the supervisor's setup: the processes as data, declared in tools/processes/.

Starting and tending them for real is tests/test_runtime.py (lossless: a killed
worker, a rewind) and tests/test_live_sleep.py (live: a killed worker started again).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.core.checkpoint import RunFolder
from agent.runtime.supervisor import Supervisor
from agent.runtime.topology import Process, Role, declaration, graph, live_roles, lossless_roles, members


def test_a_lossless_replay_is_a_hub_a_worker_per_sense_and_the_player():
    roles = lossless_roles(Path("runs/x"), ("visual", "audio", "reward"), total=500, checkpoint_every=100,
                           window=64, speed=0.0)
    assert [r.name for r in roles] == ["hub", "worker-visual", "worker-audio", "worker-reward", "player"]
    assert all(r.essential for r in roles)
    worker = roles[3]
    assert worker.module == "tools.processes.worker" and worker.args[0] == "reward"
    assert "--total" in worker.args and "500" in worker.args
    assert roles[-1].process.command == ("play",) and "--wait-go" in roles[-1].args


def test_a_live_agent_starts_only_the_senses_and_views_asked_for():
    bare = live_roles(Path("runs/x"), ("visual", "audio"))
    assert [r.name for r in bare] == ["hub", "worker-visual", "worker-audio"]
    full = live_roles(Path("runs/x"), ("visual", "audio"), camera="cards.mp4", use_mic=True, viewer=True,
                      speak=True, think=True)
    names = [r.name for r in full]
    assert names[3:] == ["camera", "microphone", "viewer", "speaker", "thinker"]
    assert [r.name for r in full if r.essential] == names[:3]  # only the learning must say ready
    assert all("--live" in r.args for r in full[:3])


def test_each_process_hears_the_topics_its_module_declares():
    assert declaration("tools.processes.worker").topics("audio") == [b"stimulus.audio", b"feedback.audio",
                                                                      b"recall.audio", b"credit"]
    assert declaration("tools.processes.hub").topics() == [b"excite.", b"clusters."]
    with pytest.raises(ValueError, match="declares no process"):
        declaration("tools.cli")
    with pytest.raises(ImportError):
        declaration("tools.processes.nobody")


def test_every_process_module_declares_itself_and_cdz_runs_each_as_declared():
    """One home: each module of tools/processes declares a process of its own kind, with its `cdz`
    words, and `cdz` registers exactly those."""
    from tools.cli import build_parser
    from tools.processes import modules

    declared = {m.__name__.rsplit(".", 1)[1]: m.PROCESS for m in modules()}
    assert {"hub", "worker", "player", "recorder", "camera", "microphone", "speaker", "viewer", "thinker", "lsl_in",
            "lsl_out", "bus"} <= set(declared)
    assert all(isinstance(p, Process) and name == p.kind for name, p in declared.items())
    commands = build_parser()._subparsers._group_actions[0].choices
    for p in declared.values():
        sp = commands[p.command[0]]
        if len(p.command) == 2:
            sp = sp._subparsers._group_actions[0].choices[p.command[1]]
        assert sp.get_default("func").__module__ == f"tools.processes.{p.kind}", p


def test_arguments_for_a_process_that_is_not_started_are_refused(tmp_path):
    roles = live_roles(tmp_path, ("visual", "audio"))
    with pytest.raises(ValueError, match="viewer"):
        Supervisor(RunFolder(tmp_path), roles, lossless=False, extra={"viewer": ["--foxglove", "0"]})
    with pytest.raises(ValueError, match="own_bus"):
        Supervisor(RunFolder(tmp_path), roles, lossless=False, own_bus=False)


def test_every_role_starts_with_arguments_cdz_accepts(tmp_path):
    """The table is what really runs: each row's command, plus what the supervisor adds, parses."""
    from tools.cli import build_parser

    parser = build_parser()
    lossless = lossless_roles(tmp_path, ("visual", "audio"), total=10, checkpoint_every=5, window=8, speed=0.0)
    live = live_roles(tmp_path, ("visual", "audio"), camera="0", mic="1", use_mic=True, viewer=True,
                      headless=tmp_path / "view", speak=True, think=True, lsl=True)
    for role, extra in [*((r, ["--gen", "2"]) for r in lossless), *((r, []) for r in live)]:
        args = parser.parse_args([*role.process.command, *role.args, "--bus", "tcp://127.0.0.1:5570", *extra])
        assert args.bus == "tcp://127.0.0.1:5570", role
        assert getattr(args, "quiet", True), role  # children log quietly into their files


def test_cdz_graph_derives_the_edges_from_what_each_process_hears_and_says(capsys):
    """Live and lossless, as JSON: each process hears exactly what it subscribes to (plus control),
    and an edge joins every topic said to every process that hears a prefix of it."""
    import json

    from tools.cli import main

    for args, first in ((["graph", "--json"], "live"), (["graph", "--lossless", "--json"], "launcher")):
        assert main(args) == 0
        g = json.loads(capsys.readouterr().out)
        names = [p["name"] for p in g["processes"]]
        assert names[0] == first and {"hub", "worker-visual", "worker-audio"} <= set(names)
        roles = {r.name: r for r in (lossless_roles(Path("RUN"), ("visual", "audio"), total=0, checkpoint_every=0,
                                                    window=1, speed=0.0) if first == "launcher" else
                                     live_roles(Path("RUN"), ("visual", "audio"), camera="0", use_mic=True,
                                                viewer=True, speak=True, think=True, lsl=True))}
        assert set(names) == {first, *roles}
        assert g["processes"][0]["module"] == "agent.runtime.supervisor"
        for p in g["processes"][1:]:  # each names where it is declared, the module that runs it
            assert declaration(p["module"]).kind == p["name"].partition("-")[0], p
        for p in g["processes"][1:]:
            role = roles[p["name"]]
            subscribed = role.process.topics(role.name.partition("-")[2])
            assert set(p["hears"]) == {t.decode() for t in subscribed} | {"control"}, p
        edges = {tuple(e) for e in g["edges"]}
        assert ("worker-visual", "excite.visual", "hub") in edges and ("hub", "feedback.audio", "worker-audio") in edges
        assert ("hub", "recall.visual", "worker-audio") not in edges  # a worker hears its own sense's recalls only
        assert all(any(t.startswith(h) for h in next(p for p in g["processes"] if p["name"] == b)["hears"])
                   for _, t, b in edges)
    assert ("player", "stimulus.audio", "worker-audio") in edges  # the lossless graph, the last one read
    assert main(["graph", "--mermaid"]) == 0
    chart = capsys.readouterr().out
    assert chart.startswith("flowchart LR") and 'worker_audio -- "clusters.audio, excite.audio" --> hub' in chart


def test_the_lsl_bridge_hears_what_the_agent_perceives_and_its_input_feeds_a_worker():
    """`cdz lsl out` hears every sense's excitations, recalls and reconstructions; `cdz lsl in` (one
    process per sense, `lsl_in-<sense>`) says stimuli of its sense only, which that sense's worker hears."""
    home = "tools.processes"
    roles = [Role(name, f"{home}.{name.partition('-')[0]}", (), "") for name in
             ("hub", "worker-visual", "worker-audio", "lsl_out", "lsl_in-audio")]
    g = graph(members(roles), ("visual", "audio"))
    edges = {tuple(e) for e in g["edges"]}
    for edge in [("lsl_in-audio", "stimulus.audio", "worker-audio"), ("worker-audio", "excite.audio", "lsl_out"),
                 ("hub", "recall.visual", "lsl_out"), ("worker-visual", "recon.visual", "lsl_out")]:
        assert edge in edges, edge
    assert not any(a == "lsl_in-audio" and b == "worker-visual" for a, _, b in edges)
    assert not any(a == "lsl_out" and t != "stats" for a, t, _ in edges)  # it says nothing on the bus but stats
    said = next(p for p in g["processes"] if p["name"] == "lsl_in-audio")["says"]
    assert said == ["control", "stats", "stimulus.audio"]
    assert [r.name for r in live_roles(Path("runs/x"), ("visual", "audio"), lsl=True)][-1] == "lsl_out"


def test_a_live_process_that_cannot_start_stops_the_agent_with_what_to_do(tmp_path):
    """Exit code 2 (here: an argument the bridge refuses) means it would fail again: the live agent
    stops with what the user can do, instead of starting the process over and over."""
    import time

    from agent.runtime.launcher import LaunchError
    sup = Supervisor(RunFolder(tmp_path), [Role("lsl_out", "tools.processes.lsl_out", ("--no-such-flag",),
                                                "lsl-out.log", essential=False)], lossless=False)
    sup.start()
    try:
        with pytest.raises(LaunchError, match="lsl_out cannot start .*leave out --lsl"):
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                sup.tend()
                time.sleep(0.05)
        assert sup.report.restarts == []
    finally:
        sup.stop()


def test_a_live_agent_says_which_clock_is_unknown_or_uncertain_and_what_that_affects(tmp_path, caplog):
    """Once per process until it is fixed: a sensor's pairs may be missed; a worker, which stamps no
    event times, only has its latency figures off."""
    import logging

    from agent.core.messages import Stats

    sup = Supervisor(RunFolder(tmp_path), [], lossless=False)
    sup._b_ms = 1000.0  # B = 1 s, without a config in the folder
    sensor = {"uptime_s": 30.0, "clock_known": True, "clock_uncertainty_ms": 140.0, "stamps_events": True}
    worker = {**sensor, "stamps_events": False}
    with caplog.at_level(logging.WARNING, logger="agent.runtime.supervisor"):
        for _ in range(3):
            sup.observe(Stats(values=sensor, source="microphone"))
            sup.observe(Stats(values=worker, source="worker-audio"))
        sup.observe(Stats(values={"uptime_s": 30.0, "clock_known": False, "stamps_events": True}, source="camera"))
        sup.observe(Stats(values={**sensor, "clock_uncertainty_ms": 40.0}, source="lsl_in-audio"))  # within B/10
    lines = [r.getMessage() for r in caplog.records]
    assert lines == [
        "microphone: its clock's offset to the hub is uncertain by 140 ms, more than B/10 (100 ms); "
        "pairs across senses may be missed",
        "worker-audio: its clock's offset to the hub is uncertain by 140 ms, more than B/10 (100 ms); "
        "its latency figures may be off (it stamps no event times, so pairing is not affected)",
        "camera: its clock's offset to the hub is unknown (no hub answers its time questions); "
        "pairs across senses may be missed",
    ]


def test_a_new_process_is_one_file_and_one_line_in_a_graph(tmp_path):
    """A fake touch sensor (tests/fake_touch.py) joins the graph with one `Role`: `graph` shows what
    it says reaching whoever hears it, and the supervisor really starts it: a recorder started
    beside it writes its 4-number stimuli."""
    import time

    import numpy as np

    from agent.core.messages import Stimulus
    from agent.runtime.supervisor import SUPERVISORS
    from agent.runtime.wire import decode
    from replay.recording import read_recording

    touch = Role("touch", "tests.fake_touch", ("--quiet", "--rate", "20"), "touch.log", essential=False)
    live = [*live_roles(tmp_path, ("visual", "audio"), viewer=True, think=True), touch]
    edges = {tuple(e) for e in graph(members(live, SUPERVISORS[False]), ("visual", "audio"))["edges"]}
    assert {("touch", "stimulus.touch", "viewer"), ("touch", "stimulus.touch", "thinker"),
            ("live", "control", "touch")} <= edges
    assert not any(a == "touch" and b.startswith("worker") for a, _, b in edges)  # no worker has a touch sense

    file = tmp_path / "touch.mcap"
    recorder = Role("recorder", "tools.processes.recorder", (str(file), "--topics", "stimulus.", "--quiet"),
                    "recorder.log")
    sup = Supervisor(RunFolder(tmp_path), [recorder, touch], lossless=False)
    sup.start()
    try:
        time.sleep(2.0)
        assert sup.children["touch"].alive(), (tmp_path / "logs" / "touch.log").read_text()[-2000:]
    finally:
        sup.stop()
    felt = [decode(frames) for _, topic, frames in read_recording(file) if topic == "stimulus.touch"]
    assert len(felt) >= 10, f"{len(felt)} touch stimuli recorded"
    assert all(isinstance(m, Stimulus) and m.source == "touch" and m.data.shape == (4,) for m in felt)
    assert np.all([(m.data >= 0).all() and (m.data < 1).all() for m in felt])
    assert [m.mseq for m in felt] == list(range(felt[0].mseq, felt[0].mseq + len(felt)))  # none lost


def test_the_chart_in_the_runtime_docs_is_what_cdz_graph_draws(capsys):
    """docs/RUNTIME.md shows the distributed replay's graph; it is the declarations' chart, not a copy
    that could drift from them."""
    from tools.cli import main

    assert main(["graph", "--lossless", "--mermaid"]) == 0
    chart = capsys.readouterr().out.strip()
    docs = (Path(__file__).resolve().parents[1] / "docs" / "RUNTIME.md").read_text()
    assert f"```mermaid\n{chart}\n```" in docs, "docs/RUNTIME.md: paste `cdz graph --lossless --mermaid` again"
