"""Starting processes: a child process of the runtime, the bus, waiting for `ready`.

What is started and how it is kept going is `agent.runtime.topology` and
`agent.runtime.supervisor`; this module is the mechanics they share. A child runs
`python -m tools.cli ...` (a `cdz` command) or `python -m tools.host MODULE ...` (a
declared process) in its own session, logs to a file, and gets SIGTERM if its parent
dies (PDEATHSIG).
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
from dataclasses import dataclass
from collections.abc import Callable, Iterable
from pathlib import Path

from agent.runtime.bus import BusClient
from agent.core.messages import Control

log = logging.getLogger(__name__)
REPOSITORY = Path(__file__).resolve().parents[2]  # where `tools.cli` and `tools.host` are imported from


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
    entry: str = "tools.cli"  # the module run with `argv`: `cdz`, or `tools.host` for a declared process

    def start(self, extra: list[str] = ()) -> None:
        """Start it in the parent's working folder, so that every relative path on its command
        line (a run folder, keys, a video) names what it names for the parent. The code comes
        from this repository whatever that folder holds: `-P` keeps the working folder off
        the import path, and PYTHONPATH puts the repository first."""
        path = os.pathsep.join(p for p in (str(REPOSITORY), os.environ.get("PYTHONPATH", "")) if p)
        env = {**os.environ, "CDZ_TORCH_THREADS": os.environ.get("CDZ_TORCH_THREADS", "1"), "PYTHONUNBUFFERED": "1",
               "PYTHONPATH": path}
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        out = open(self.log_path, "ab")
        try:
            self.proc = subprocess.Popen([sys.executable, "-P", "-m", self.entry, *self.argv, *extra], stdout=out,
                                         stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                                         start_new_session=True, preexec_fn=_die_with_parent)
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
