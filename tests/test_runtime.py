"""The multi-process runtime end to end: real processes on real sockets on loopback.

The distributed replay must end bit-identical to the one-process brain on the same
stream (the strongest form of "scores the same"), lose nothing, survive a SIGKILLed
worker by rewinding everyone to the last checkpoint, and leave no process behind
on Ctrl-C.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from agent.core.checkpoint import RunFolder
from agent.core.config import Config, override
from agent.runtime.supervisor import Supervisor
from replay.distributed import learn_distributed, lost_stimuli, prepare_distributed
from tools.cli import main

from tests.processes import wait_for

pytestmark = [pytest.mark.timeout(300), pytest.mark.slow]

TINY = ["data.digits=[0,1]", 'data.speakers=["jackson"]', "data.per_class=40", "data.test_per_class=10",
        "teacher.epochs=6", "cortex.initial_nodes=20", "senses.audio.encoder.arch=linear", "senses.visual.encoder.epochs=2", "senses.visual.encoder.batch_size=16",
        "refine.teach_min_steps=40"]  # refinements run, briefly: they are not what these tests are about


def tiny_config(*extra: str) -> Config:
    return override(Config(), [*TINY, *extra])


def assert_same_brain(a: RunFolder, b: RunFolder) -> None:
    step_a, state_a = a.load_checkpoint()
    step_b, state_b = b.load_checkpoint()
    assert step_a == step_b
    differ = [k for k, v in state_a.items() if not np.array_equal(v, state_b[k])]
    assert not differ, f"arrays that differ: {differ}"


@pytest.fixture(scope="module")
def in_process_run(tmp_path_factory, data_dir) -> RunFolder:
    from replay.driver import train

    return train(tiny_config(), tmp_path_factory.mktemp("runs") / "in-process", progress=False)


THREE_SENSES = [*TINY, "teacher.rewards=[1,0,0,0,0,0,0,2,0,0]"]  # digits 0 and 1 earn rewards 1 and 0


def test_distributed_replay_matches_the_in_process_run(tmp_path, data_dir, capsys, monkeypatch):
    """Same config and seed, three senses (images, words, rewards): identical final brain,
    identical scores, nothing lost. Started from a folder other than the repository, with a
    relative run folder, as a user in their own folder would: every child finds the run."""
    from replay.driver import train

    in_process = train(tiny_config(THREE_SENSES[-1]), tmp_path / "in-process", progress=False)
    out = tmp_path / "distributed"
    (tmp_path / "tools").mkdir()  # a package of the user's that shares a name with one of ours
    (tmp_path / "tools" / "__init__.py").write_text("raise SystemExit('the user\\'s tools were imported')\n")
    monkeypatch.setenv("CDZ_DATA_DIR", str(data_dir))  # CI gives a relative one
    monkeypatch.chdir(tmp_path)
    args = ["replay", "--distributed", "--quiet", "--json", "--no-baselines", "--no-judges", "--out", "distributed",
            "--checkpoint-every", "150"]
    for s in THREE_SENSES:
        args += ["--set", s]
    assert main(args) == 0
    import json

    result = json.loads(capsys.readouterr().out)
    assert result["lost_stimuli"] == 0
    assert result["stream_complete"]
    assert_same_brain(in_process, RunFolder(out))
    from tools.scoring.evaluate import evaluate

    reference = evaluate(in_process, progress=False, baselines=False, judges=False)
    assert set(reference["recall_accuracy"]) == {f"{a}->{b}" for a in ("visual", "audio", "reward")
                                                 for b in ("visual", "audio", "reward") if a != b}
    assert result["recall_accuracy"] == reference["recall_accuracy"]
    assert result["classes_discovered"] == reference["classes_discovered"]
    logs = {p.name: p.read_text() for p in (out / "logs").glob("*.log")}
    assert {"hub.log", "worker-visual.log", "worker-audio.log", "worker-reward.log", "player.log",
            "bus.log"} <= set(logs)
    # the stream log the learning curves read is there and complete, like an in-process run's
    a, b = np.load(in_process.stream_path), np.load(out / "stream.npz")
    assert np.array_equal(a["cluster"], b["cluster"]) and np.array_equal(a["recalled"], b["recalled"])


def test_a_killed_worker_is_restarted_and_nothing_is_lost(in_process_run, tmp_path, data_dir):
    """SIGKILL a worker mid-stream: it is back, everyone rewinds to the last checkpoint,
    and the run still ends bit-identical to the uninterrupted one."""
    run, stream, _ = prepare_distributed(tiny_config(), tmp_path / "killed", progress=False)
    killed: list[int] = []
    killers: list[threading.Thread] = []

    def kill_after_first_checkpoint(sup: Supervisor) -> None:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if any((run.checkpoints_dir / f"{s:012d}" / "cortex.visual.npz").exists() for s in (200, 300)):
                proc = sup.children["worker-visual"].proc
                os.kill(proc.pid, signal.SIGKILL)
                killed.append(proc.pid)
                return
            time.sleep(0.005)

    def on_start(sup: Supervisor) -> None:  # the first segment (before the first refinement) only
        if not killers:
            killers.append(threading.Thread(target=kill_after_first_checkpoint, args=(sup,), daemon=True))
            killers[0].start()

    info = learn_distributed(run, stream, checkpoint_every=100, speed=300.0, progress=False,
                             on_start=on_start)["distributed"]
    killers[0].join(5)
    assert killed, "the worker was never killed (the stream ended first?)"
    assert [r["child"] for r in info["restarts"]] == ["worker-visual"]
    assert info["restarts"][0]["at_step"] >= 100
    print(f"worker back after {info['restarts'][0]['back_s']:.2f} s")  # the 2 s target is checked by hand
    assert info["lost_stimuli"] == 0 and lost_stimuli(run, len(stream)) == 0
    assert_same_brain(in_process_run, run)


def test_ctrl_c_stops_every_process(tmp_path, data_dir):
    """SIGINT to the launcher: it exits 130 and none of its children is left running."""
    out = tmp_path / "interrupted"
    cmd = [sys.executable, "-m", "tools.cli", "replay", "--distributed", "--quiet", "--no-baselines", "--no-judges",
           "--out", str(out), "--checkpoint-every", "1000"]
    for s in [*TINY, "teacher.epochs=400"]:  # long enough to be interrupted mid-stream
        cmd += ["--set", s]
    env = {**os.environ, "CDZ_DATA_DIR": str(data_dir)}
    launcher = subprocess.Popen(cmd, env=env, cwd=Path(__file__).resolve().parent.parent,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    children: set[int] = set()
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not any((out / "checkpoints").glob("*/cdz.npz")):
            children |= _children_of(launcher.pid)
            time.sleep(0.1)
        children |= _children_of(launcher.pid)
        assert len(children) >= 5, f"expected bus, hub, 2 workers and a player, saw {children}"
        launcher.send_signal(signal.SIGINT)
        code = launcher.wait(30)
    finally:
        if launcher.poll() is None:
            launcher.kill()
    assert code == 130, launcher.stderr.read().decode()[-2000:]
    wait_for(lambda: not any(_alive(pid) for pid in children), 5.0, "every child of the launcher to exit")


def _children_of(pid: int) -> set[int]:
    kids = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[1]) == pid:
            kids.add(int(stat.parent.name))
    return kids


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] != "Z"
    except FileNotFoundError:
        return False


def test_training_from_a_recorded_replay_equals_training_from_the_teacher(tmp_path, data_dir):
    """Record the stimuli of a distributed teacher replay (`cdz record`), then learn from the
    recording: the recording holds the stream exactly, so the brain ends bit-identical.

    Without refinement phases: a recording holds stimuli, not the training split they came
    from nor the waveforms behind the sounds, so a run learned from it refines on its own
    recorded stimuli (without sound augmentation) and is not the teacher run's twin there.
    """
    from agent.runtime.bus import free_tcp_bus
    from replay.recording import decode_recording
    from replay.driver import train

    plain = [*TINY, "refine.at=[]"]
    in_process_run = train(override(Config(), plain), tmp_path / "teacher-run", progress=False)

    bus, mcap = free_tcp_bus(), tmp_path / "session.mcap"
    recorder = subprocess.Popen([sys.executable, "-m", "tools.cli", "record", str(mcap), "--bus", bus,
                                 "--topics", "stimulus.", "--quiet"], cwd=Path(__file__).resolve().parent.parent,
                                stderr=subprocess.PIPE)
    try:
        args = ["replay", "--distributed", "--quiet", "--no-baselines", "--no-judges", "--bus", bus,
                "--out", str(tmp_path / "recorded-run")]
        for s in plain:
            args += ["--set", s]
        assert main(args) == 0
    finally:
        recorder.send_signal(signal.SIGTERM)
        assert recorder.wait(30) == 0, recorder.stderr.read().decode()[-2000:]
    n_stream = len(np.load(in_process_run.stream_path)["t"])
    stimuli = [m for m in decode_recording(mcap) if m.KIND == "stimulus"]
    assert len({(m.modality, m.mseq) for m in stimuli}) == n_stream  # every stimulus, re-sends aside
    out = tmp_path / "from-recording"
    args = ["replay", "--quiet", "--no-baselines", "--no-judges", "--recording", str(mcap), "--out", str(out)]
    for s in plain:
        args += ["--set", s]
    assert main(args) == 0
    assert_same_brain(in_process_run, RunFolder(out))
