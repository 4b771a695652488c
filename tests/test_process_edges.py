"""Edges of the runtime processes, as real `cdz` processes: how they stop, refuse and complain.

* `cdz bus` on an ipc path: SIGTERM closes it cleanly (exit 0) and removes its files; a
  second bus on the path of a live one is refused (exit 2), while the files a killed bus
  left behind are reused.
* `cdz top`: "no bus at ADDRESS" (exit 2) when nothing answers within --connect-timeout;
  stats that are well-formed but odd (missing or wrongly typed fields) and invalid
  messages neither crash it nor vanish silently: it counts them.
* `cdz play` on a file that is no MCAP recording: exit 2, one line naming the file.
* `--help` of every subcommand: a description, an example, defaults, only its own flags.

Every wait is on a condition with a deadline; every process started here is stopped.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Callable

import msgpack
import numpy as np
import pytest
import zmq

from agent.runtime.bus import BusClient, Forwarder, free_tcp_bus
from agent.core.messages import Stats, Stimulus
from agent.runtime.wire import encode
from agent.runtime.topology import lossless_roles

pytestmark = pytest.mark.timeout(120)

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "CDZ_TORCH_THREADS": "1", "PYTHONUNBUFFERED": "1"}


# --------------------------------------------------------------------------- helpers
def cdz(*argv: str, timeout_s: float = 60.0) -> subprocess.CompletedProcess:
    """`cdz ARGV` to its end (killed if it outlives `timeout_s`, which fails the test)."""
    return subprocess.run([sys.executable, "-m", "tools.cli", *argv], cwd=REPO, env=ENV, capture_output=True,
                          text=True, timeout=timeout_s, stdin=subprocess.DEVNULL)


def wait_until(check: Callable[[], object], timeout_s: float, what: str) -> object:
    deadline = time.monotonic() + timeout_s
    while not (value := check()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:g} s waiting for {what}")
        time.sleep(0.02)
    return value


class Started:
    """`cdz` processes started in the background, output in log files; all stopped at the end."""

    def __init__(self, logs: Path):
        self.logs = logs
        self.procs: dict[str, subprocess.Popen] = {}

    def start(self, name: str, *argv: str) -> subprocess.Popen:
        with open(self.logs / f"{name}.log", "wb") as out:
            proc = subprocess.Popen([sys.executable, "-m", "tools.cli", *argv], cwd=REPO, env=ENV, stdout=out,
                                    stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        self.procs[name] = proc
        return proc

    def log(self, name: str) -> str:
        return (self.logs / f"{name}.log").read_text(errors="replace")

    def stop_all(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)


@pytest.fixture
def started(tmp_path):
    s = Started(tmp_path)
    try:
        yield s
    finally:
        s.stop_all()


@pytest.fixture
def ipc_dir():
    """A short folder for ipc sockets (a unix socket path must stay under 108 bytes)."""
    folder = Path(tempfile.mkdtemp(prefix="cdz-edges-", dir="/tmp"))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def answers(address: str, timeout_s: float = 30.0) -> None:
    """Wait until a bus at `address` answers a hello round trip (fails the test otherwise)."""
    ctx = zmq.Context()
    client = BusClient(address, "prober", ctx=ctx)
    try:
        client.handshake(timeout_s=timeout_s)
    finally:
        client.close(0)
        ctx.term()


def bus_files(path: Path) -> list[str]:
    return sorted(p.name for p in path.parent.glob(path.name + ".*"))


@pytest.fixture
def thread_bus():
    """An in-process bus (a Forwarder in a thread, private context) on free loopback ports."""
    ctx = zmq.Context()
    fwd = Forwarder("tcp://127.0.0.1:0", ctx=ctx)  # binds two free ports itself: no probe-and-release race
    address = fwd.address.text
    thread = threading.Thread(target=fwd.run, daemon=True)
    thread.start()
    try:
        yield address, ctx
    finally:
        ender = threading.Thread(target=ctx.term, daemon=True)
        ender.start()
        thread.join(10)
        fwd.close()
        ender.join(10)


# --------------------------------------------------------------------------- bus and top on SIGTERM
def test_sigterm_stops_bus_and_top_cleanly_and_the_bus_removes_its_ipc_files(started, ipc_dir):
    path = ipc_dir / "bus"
    address = f"ipc://{path}"
    bus = started.start("bus", "bus", "--bus", address)
    answers(address)
    assert bus_files(path) == ["bus.in", "bus.lock", "bus.out"], bus_files(path)
    top = started.start("top", "top", "--bus", address, "--connect-timeout", "30")
    wait_until(lambda: "cdz top  " in started.log("top") or top.poll() is not None, 30, "top's first screen")
    assert top.poll() is None, started.log("top")

    top.send_signal(signal.SIGTERM)
    assert top.wait(10) == 0, started.log("top")
    bus.send_signal(signal.SIGTERM)
    assert bus.wait(10) == 0, started.log("bus")
    assert bus_files(path) == [], f"the bus left {bus_files(path)} behind"
    assert "Traceback" not in started.log("bus") + started.log("top")


# --------------------------------------------------------------------------- a second bus on one ipc path
def test_second_bus_on_a_live_ipc_path_is_refused_but_stale_files_are_reused(started, ipc_dir):
    path = ipc_dir / "bus"
    address = f"ipc://{path}"
    first = started.start("first", "bus", "--bus", address)
    answers(address)

    second = cdz("bus", "--bus", address, timeout_s=60)
    assert second.returncode == 2, (second.returncode, second.stderr[-2000:])
    assert "in use" in second.stderr and str(path) in second.stderr, second.stderr[-2000:]
    assert "Traceback" not in second.stderr
    assert first.poll() is None
    answers(address, timeout_s=10)  # the refused bus took nothing away from the live one

    first.kill()  # SIGKILL: no cleanup, its socket files stay behind
    first.wait(10)
    assert {"bus.in", "bus.out"} <= set(bus_files(path)), bus_files(path)
    third = started.start("third", "bus", "--bus", address)
    answers(address)  # the stale files were taken over, not refused
    assert third.poll() is None, started.log("third")
    third.send_signal(signal.SIGTERM)
    assert third.wait(10) == 0, started.log("third")
    assert bus_files(path) == []


@pytest.mark.parametrize("name", ["bus.in", "bus.out", "bus.lock"])
def test_a_bus_never_replaces_a_users_regular_file_at_its_paths(ipc_dir, name):
    from agent.runtime.bus import BusError, Forwarder

    path = ipc_dir / "bus"
    (ipc_dir / name).write_text("my notes\n")
    with pytest.raises(BusError, match=f"{name}.*(not a socket|not a bus's lock)"):
        Forwarder(f"ipc://{path}")
    assert (ipc_dir / name).read_text() == "my notes\n"
    assert sorted(p.name for p in ipc_dir.iterdir()) == [name]


# --------------------------------------------------------------------------- cdz top
def test_top_without_a_bus_says_so_with_exit_2():
    address = free_tcp_bus()
    t0 = time.monotonic()
    done = cdz("top", "--bus", address, "--connect-timeout", "1", timeout_s=30)  # live mode: must not hang
    assert done.returncode == 2, (done.returncode, done.stdout[-500:], done.stderr[-2000:])
    assert f"no bus at {address}" in done.stderr, done.stderr[-2000:]
    assert "Traceback" not in done.stderr
    assert time.monotonic() - t0 < 25


def _raw_stats(source: str, values: dict) -> list[bytes]:
    """The frames of a Stats message with any `values`, packed by hand (no validation on the way)."""
    topic, header = encode(Stats(values={"x": 1}, source=source, t_ns=time.time_ns()))[:2]
    h = msgpack.unpackb(header)
    h["values"] = values
    return [bytes(topic), msgpack.packb(h)]


def test_top_survives_odd_stats_and_counts_the_bad_ones(thread_bus):
    address, ctx = thread_bus
    talker = BusClient(address, "talker", ctx=ctx)
    try:
        talker.handshake(timeout_s=10)
        frames = [
            _raw_stats("good", {"learned": 7, "rate_per_s": 1.5, "queue": 0}),
            _raw_stats("missing", {"nodes": 5}),  # no clusters: shown as "-"
            _raw_stats("wrongtype", {"bad_messages": "abc", "learned": "many"}),  # shown as "?", counted
            [b"stats.garbage", b"\xc1 not msgpack"],  # invalid: dropped, counted
        ]
        top = subprocess.Popen([sys.executable, "-m", "tools.cli", "top", "--bus", address, "--once", "--wait", "2",
                                "--connect-timeout", "30"], cwd=REPO, env=ENV, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 60
            while top.poll() is None and time.monotonic() < deadline:
                for f in frames:
                    talker.pub.send_multipart(f)
                time.sleep(0.05)  # the publishing pace (top's exit is what ends the loop)
            out, err = top.communicate(timeout=10)
        finally:
            if top.poll() is None:
                top.kill()
                top.wait(10)
    finally:
        talker.close(0)
    assert top.returncode == 0, (top.returncode, out, err[-2000:])
    assert "Traceback" not in err and "cdz top: error" not in err, err[-2000:]
    rows = {line.split()[0]: line for line in out.splitlines() if line.strip()}
    assert "good" in rows and rows["good"].split()[3] == "7", out
    if "missing" in rows:  # (unless validation on the wire drops it: then it is counted below)
        assert "5/-" in rows["missing"], out
    if "wrongtype" in rows:
        assert rows["wrongtype"].split()[3] == "?", out
    bad = [line for line in out.splitlines() if line.startswith("bad messages:")]
    assert bad, out
    assert int(bad[0].split()[2]) >= 2, bad  # at least the garbage and the wrongly typed stats


# --------------------------------------------------------------------------- cdz play
def test_play_refuses_a_file_that_is_no_recording_with_exit_2(thread_bus, tmp_path):
    """With a bus there (so nothing else can fail): garbage exits 2 naming the file; a real
    recording still plays."""
    from replay.recording import RecordingError, RecordingWriter, check_recording

    address, _ = thread_bus
    garbage = tmp_path / "garbage.mcap"
    garbage.write_bytes(b"this is no recording\n" * 50)
    done = cdz("play", str(garbage), "--bus", address, "--connect-timeout", "10", "--speed", "0")
    assert done.returncode == 2, (done.returncode, done.stderr[-2000:])
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "garbage.mcap" in lines[0] and "not an MCAP recording" in lines[0], lines

    for bad, says in ((tmp_path / "absent.mcap", "no recording at"), (tmp_path, "not a file")):
        with pytest.raises(RecordingError, match=says):
            check_recording(bad)

    good = tmp_path / "good.mcap"
    writer = RecordingWriter(good)
    writer.write(encode(Stimulus(modality="visual", t_ns=1, seq=1, data=np.zeros((28, 28), np.float32),
                                 source="camera")), time.time_ns())
    writer.close()
    done = cdz("play", str(good), "--bus", address, "--connect-timeout", "10", "--speed", "0", "--quiet")
    assert done.returncode == 0, done.stderr[-2000:]
    assert "played 1 messages" in done.stderr, done.stderr[-2000:]


# --------------------------------------------------------------------------- help
SUBCOMMANDS = ("train", "eval", "replay", "recall", "sleep", "plots", "bench", "bus", "top", "think", "live", "keys", "graph",
               "hub", "worker", "play", "record")


def _subparsers():
    import argparse

    from tools.cli import build_parser

    parser = build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return parser, action.choices


@pytest.mark.parametrize("name", SUBCOMMANDS)
def test_every_subcommand_help_has_a_description_an_example_and_defaults(name):
    import argparse

    _, choices = _subparsers()
    sp = choices[name]
    text = sp.format_help()
    assert sp.description and sp.description.strip(), f"cdz {name} --help has no description"
    assert "example" in (sp.epilog or "") and f"cdz {name}" in sp.epilog, f"cdz {name} --help has no example"
    assert f"cdz {name}" in text.split("example")[-1]
    formatter = sp._get_formatter()
    for action in sp._actions:
        if (not action.option_strings or action.help == argparse.SUPPRESS or action.default is None
                or action.default is False or action.default == argparse.SUPPRESS):
            continue
        assert action.help, f"cdz {name} {action.option_strings[0]} has no help line"
        assert "default" in formatter._expand_help(action), \
            f"cdz {name} {action.option_strings[0]}: default {action.default!r} not shown"


def test_play_help_lists_only_play_flags_and_the_launcher_still_parses():
    done = cdz("play", "--help", timeout_s=60)
    assert done.returncode == 0, done.stderr[-2000:]
    for flag in ("--total", "--gen", "--checkpoint-every", "--live"):
        assert flag not in done.stdout, f"`cdz play --help` lists {flag}"
    for flag in ("--run", "--speed", "--window", "--topics", "--clock", "--bus", "example", "cdz play"):
        assert flag in done.stdout, f"`cdz play --help` lacks {flag}"

    parser, choices = _subparsers()
    # what the supervisor starts the player with (its role in the graph, then --bus and --gen)
    player = next(r for r in lossless_roles(Path("r"), ("visual", "audio"), total=5, checkpoint_every=1, window=256,
                                            speed=0.0) if r.name == "player")
    args = parser.parse_args([*player.process.command, *player.args, "--bus", "tcp://127.0.0.1:5570", "--gen", "3"])
    assert (args.gen, args.run, args.wait_go, args.live) == (3, "r", True, False)
    with pytest.raises(SystemExit):
        parser.parse_args(["play", "--run", "r", "--total", "5"])
    assert "--compression" in choices["record"].format_help()
    record_help = {a.option_strings[0]: a.help for a in choices["record"]._actions if a.option_strings}
    assert record_help["--compression"], "cdz record --compression has no help line"


def test_light_commands_start_without_torch_or_scipy():
    """Every `cdz` process builds the whole parser first. The bus, `top`, the player, the recorder,
    the camera, the microphone and the LSL bridge must not pay for torch's, scipy's or numba's imports (seconds on
    these machines) just to read their flags."""
    code = ("import contextlib, io, sys\nfrom tools.cli import LIGHT_COMMANDS, main\n"
            "for argv in [[name, '--help'] for name in sorted(LIGHT_COMMANDS)] + [['lsl', d, '--help'] for d in "
            "('in', 'out')]:\n"
            "    with contextlib.suppress(SystemExit), contextlib.redirect_stdout(io.StringIO()):\n"
            "        main(argv)\n"
            "import sensors.lsl, sensors.lsl_in, sensors.lsl_out\n"
            "sensors.lsl.load_pylsl()  # what `cdz lsl` loads besides: liblsl\n"
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'torch', 'scipy', 'numba', 'llvmlite'}))")
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "[]", f"`cdz COMMAND --help` imported {done.stdout.strip()}"


BAD_FLAGS = [
    (["worker", "visual", "--run", "r", "--queue", "-1"], "--queue"),
    (["worker", "visual", "--run", "r", "--queue", "0"], "--queue"),
    (["hub", "--run", "r", "--connect-timeout", "nan"], "--connect-timeout"),
    (["hub", "--run", "r", "--total", "-1"], "--total"),
    (["play", "--run", "r", "--speed", "-1"], "--speed"),
    (["record", "out.mcap", "--flush", "-1"], "--flush"),
    (["replay", "--seed", "-5"], "--seed"),
    (["camera", "--max-rate", "inf"], "--max-rate"),
    (["live", "--run", "r", "--sleep-every", "nan"], "--sleep-every"),
    (["lsl", "in", "Webcam", "--sense", "visual", "--shape", "0x640"], "--shape"),
    (["lsl", "in", "Webcam", "--sense", "visual", "--shape", "480x640x2"], "--shape"),
    (["lsl", "in", "Mic", "--sense", "audio", "--resolve-timeout", "0"], "--resolve-timeout"),
    (["lsl", "in", "Mic", "--sense", "smell"], "--sense"),
]


@pytest.mark.parametrize("argv,flag", BAD_FLAGS, ids=[" ".join(a) for a, _ in BAD_FLAGS])
def test_a_bad_flag_value_is_one_line_naming_the_flag_with_exit_2(argv, flag, capsys):
    from tools.cli import main

    with pytest.raises(SystemExit) as done:
        main(argv)
    err = capsys.readouterr().err
    assert done.value.code == 2 and f"argument {flag}" in err and "Traceback" not in err, err
    assert len([line for line in err.splitlines() if line.startswith("cdz")]) == 1, err


def test_a_zero_that_the_help_offers_is_taken():
    """Flags whose help gives 0 a meaning (once per card, no limit, as fast as possible) accept it."""
    parser, _ = _subparsers()
    assert parser.parse_args(["camera", "--max-rate", "0"]).max_rate == 0.0
    assert parser.parse_args(["worker", "visual", "--run", "r", "--recon-hz", "0"]).recon_hz == 0.0
    assert parser.parse_args(["play", "--run", "r", "--speed", "0"]).speed == 0.0


def test_live_refuses_a_sleep_setting_that_is_not_one_before_it_starts(capsys):
    from tools.cli import main

    assert main(["live", "--run", "no-such-run", "--sleep-set", "cortex.node_lr=0.1"]) == 2
    assert "only sleep.* settings" in capsys.readouterr().err
