"""Starting and supervising the runtime's processes (used by `cdz replay --distributed`,
`replay.distributed`, and by `cdz live` and the benches for the bus and children).

The supervisor starts one process per role on a run whose checkpoint 0 exists
(`replay.distributed` trains the encoders and writes it) and watches them:

* every child gets the bus address and the run folder; it loads the newest
  complete checkpoint and says `ready`; the player starts on `go`;
* a child that dies is started again, and every process rewinds to the newest
  complete checkpoint (a new generation: older messages are ignored), so nothing
  saved is lost and the run ends exactly as an uninterrupted one;
* Ctrl-C or SIGTERM stops every child (SIGTERM, then SIGKILL after a grace
  period); children also get SIGTERM if the launcher itself dies (PDEATHSIG).
"""

from __future__ import annotations

import ctypes
import logging
import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from collections.abc import Callable, Iterable
from pathlib import Path

from agent.bus import BusClient
from agent.checkpoint import RunFolder
from agent.messages import Control, Stats

log = logging.getLogger(__name__)


class LaunchError(RuntimeError):
    """A child that does not come up, or a run that cannot go on; the text says which."""


def _die_with_parent() -> None:  # pragma: no cover - runs in the child before exec
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass


@dataclass
class Child:
    name: str
    argv: list[str]
    log_path: Path
    proc: subprocess.Popen | None = None
    restarts: int = 0
    finished: bool = False  # ended on its own and for good (e.g. a camera whose video file ended)

    def start(self, extra: list[str] = ()) -> None:
        env = {**os.environ, "CDZ_TORCH_THREADS": os.environ.get("CDZ_TORCH_THREADS", "1"), "PYTHONUNBUFFERED": "1"}
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        out = open(self.log_path, "ab")
        try:
            self.proc = subprocess.Popen([sys.executable, "-m", "tools.cli", *self.argv, *extra], stdout=out,
                                         stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                                         start_new_session=True, preexec_fn=_die_with_parent,
                                         cwd=Path(__file__).resolve().parent.parent)
        finally:
            out.close()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, grace_s: float = 5.0) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(grace_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)


_BUS_AT = re.compile(r"^bus at (\S+)$", re.MULTILINE)


def start_bus(log_path: Path, *, host: str = "127.0.0.1", extra: list[str] | None = None,
              timeout_s: float = 30.0) -> tuple[Child, str]:
    """A `cdz bus` child on two ports it binds itself (tcp://HOST:0), and the address it reports.

    The bus binding its own ports leaves no gap in which another process could take
    ports that were only probed free."""
    offset = log_path.stat().st_size if log_path.exists() else 0
    child = Child("bus", ["bus", "--bus", f"tcp://{host}:0", *(extra or [])], log_path)
    child.start()
    deadline = time.monotonic() + timeout_s
    while True:
        said = log_path.read_bytes()[offset:].decode(errors="replace") if log_path.exists() else ""
        found = _BUS_AT.search(said)
        if found:
            return child, found.group(1)
        if not child.alive() or time.monotonic() > deadline:
            child.stop()
            raise LaunchError(f"the bus did not start within {timeout_s:.0f} s: {said[-500:] or 'no output'}")
        time.sleep(0.02)


def stop_children(children: list[Child], grace_s: float) -> None:
    """After a stop message: wait up to `grace_s` for them to end, then SIGTERM (and SIGKILL) the rest."""
    deadline = time.monotonic() + grace_s
    for child in children:
        while child.alive() and time.monotonic() < deadline:
            time.sleep(0.02)
        child.stop()


def await_ready(client: BusClient, children: dict[str, Child], names: Iterable[str], timeout_s: float,
                accept: Callable[[Control], bool] = lambda msg: True, logs: Path | None = None) -> None:
    """Until each named child has said `ready` (one that `accept` takes); a LaunchError names a
    child that exited meanwhile, or those still silent at the deadline."""
    waiting = set(names)
    deadline = time.monotonic() + timeout_s
    while waiting:
        for name in sorted(waiting):
            child = children[name]
            if not child.alive():
                code = None if child.proc is None else child.proc.returncode
                raise LaunchError(f"{name} exited with code {code} while starting; see {child.log_path}")
        if time.monotonic() > deadline:
            raise LaunchError(f"no ready from {sorted(waiting)} within {timeout_s:.0f} s"
                              + (f"; see {logs}" if logs else ""))
        msg = client.recv(50)
        if isinstance(msg, Control) and msg.command == "ready" and accept(msg):
            waiting.discard(msg.source)


@dataclass
class SupervisorReport:
    """What the supervised run did, for metrics and the closing table."""

    restarts: list[dict] = field(default_factory=list)  # {"child", "at_step", "back_s"}
    wall_s: float = 0.0


class Supervisor:
    """Starts the runtime processes of one run folder and keeps them going to the end."""

    def __init__(self, run: RunFolder, total: int, *, bus: str | None = None, checkpoint_every: int = 20_000,
                 window: int = 256, speed: float = 0.0, start_timeout_s: float = 60.0, progress: bool = True):
        self.run = run
        self.config = run.config()
        self.total = total
        self.bus_address = bus  # None: a bus on free ports, started with the children
        self.checkpoint_every = checkpoint_every
        self.window = window
        self.speed = speed
        self.start_timeout_s = start_timeout_s
        self.progress = progress
        self.gen = 0
        self.children: dict[str, Child] = {}
        self.bus_child: Child | None = None
        self.client: BusClient | None = None
        self.report = SupervisorReport()
        self._stop_requested = False

    # ------------------------------------------------------------------ children
    def _common(self) -> list[str]:
        return ["--bus", self.bus_address, "--run", str(self.run.path), "--quiet"]

    def _make_children(self) -> None:
        logs = self.run.path / "logs"
        lossless = ["--total", str(self.total), "--checkpoint-every", str(self.checkpoint_every)]
        self.children["hub"] = Child("hub", ["hub", *self._common(), *lossless], logs / "hub.log")
        for m in self.config.modalities:
            self.children[f"worker-{m}"] = Child(f"worker-{m}", ["worker", m, *self._common(), *lossless],
                                                 logs / f"worker-{m}.log")
        play = ["play", *self._common(), "--window", str(self.window), "--speed", str(self.speed), "--wait-go"]
        self.children["player"] = Child("player", play, logs / "player.log")

    def start(self) -> None:
        if self.bus_address is None:
            self.bus_child, self.bus_address = start_bus(self.run.path / "logs" / "bus.log")
        else:
            self.bus_child = Child("bus", ["bus", "--bus", self.bus_address], self.run.path / "logs" / "bus.log")
            self.bus_child.start()
        self.client = BusClient(self.bus_address, "launcher", [b"stats.hub"])
        self.client.handshake(timeout_s=self.start_timeout_s)
        self._make_children()
        for child in self.children.values():
            child.start(["--gen", str(self.gen)])
        self._await_ready()
        self._go()

    def _await_ready(self) -> None:
        """`ready` of this generation from every child."""
        await_ready(self.client, self.children, self.children, self.start_timeout_s,
                    accept=lambda msg: msg.args.get("gen") == self.gen, logs=self.run.path / "logs")

    def _go(self) -> None:
        step = self.run.load_checkpoint()[0]
        self.client.send(Control("go", {"gen": self.gen, "step": step}, source="launcher", gen=self.gen))

    # ------------------------------------------------------------------ supervision
    def supervise(self) -> SupervisorReport:
        """Run until the last checkpoint is complete; restart and rewind on any death."""
        from tqdm import tqdm

        t0 = time.monotonic()
        old = {s: signal.signal(s, self._on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
        bar = tqdm(total=self.total, desc="distributed stream", unit="stim", disable=not self.progress,
                   mininterval=0.5)
        saved: dict[int, set[str]] = {}
        parts = set(self.run.part_names())
        try:
            while True:
                if self._stop_requested:
                    raise KeyboardInterrupt
                dead = [c for c in self.children.values() if not c.alive()]
                if self.bus_child is not None and not self.bus_child.alive():
                    raise LaunchError(f"the bus died (code {self.bus_child.proc.returncode}); "
                                      f"see {self.bus_child.log_path}")
                if dead:
                    self._restart(dead)
                    continue
                msg = self.client.recv(20)
                if isinstance(msg, Stats) and msg.source == "hub" and msg.gen == self.gen:
                    done = msg.values.get("next_seq", 0)
                    if isinstance(done, int):
                        bar.update(max(0, done - bar.n))
                    continue
                if not isinstance(msg, Control) or msg.gen != self.gen:
                    continue
                if msg.command == "saved":
                    step = int(msg.args.get("step", -1))
                    saved.setdefault(step, set()).add(str(msg.args.get("part")))
                    if step == self.total and saved[step] >= parts:
                        break
        finally:
            bar.close()
            for s, h in old.items():
                signal.signal(s, h)
        self.report.wall_s = time.monotonic() - t0
        return self.report

    def _on_signal(self, signum: int, frame: object) -> None:
        self._stop_requested = True

    def _restart(self, dead: list[Child]) -> None:
        t_dead = time.monotonic()
        self.gen += 1
        step = self.run.load_checkpoint()[0]
        for child in dead:
            log.warning("%s died (code %s); restarting it and rewinding everyone to checkpoint %d",
                        child.name, child.proc.returncode, step)
            child.restarts += 1
        self.client.send(Control("rewind", {"gen": self.gen, "step": step}, source="launcher", gen=self.gen))
        for child in dead:
            child.start(["--gen", str(self.gen)])
        self._await_ready()
        back = time.monotonic() - t_dead
        for child in dead:
            self.report.restarts.append({"child": child.name, "at_step": step, "back_s": round(back, 3)})
        self._go()

    def stop(self) -> None:
        """Stop every child: a stop message, then SIGTERM, then SIGKILL."""
        if self.client is not None:
            try:
                for name in self.children:  # addressed: a recorder or `cdz top` on the bus goes on
                    self.client.send(Control("stop", {"to": name}, source="launcher", gen=self.gen))
            except Exception:  # the bus may be gone already
                pass
        stop_children(list(self.children.values()), grace_s=3.0)
        if self.client is not None:
            self.client.close()
            self.client = None
        if self.bus_child is not None:
            self.bus_child.stop()
