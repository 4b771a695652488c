"""Helpers for tests that start real processes, buses and threads."""

from __future__ import annotations

import subprocess
import time
from typing import Callable, TypeVar

T = TypeVar("T")


def stop_process(proc: subprocess.Popen, grace_s: float = 5.0) -> None:
    """SIGTERM, then SIGKILL after `grace_s`; returns once the process is gone."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(grace_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(grace_s)


def wait_for(predicate: Callable[[], T], timeout: float, what: str, interval: float = 0.02) -> T:
    """Poll `predicate` until it returns something true (returned) or `timeout` seconds pass
    (an AssertionError that says what was awaited). Synchronisation without a guessed sleep."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(interval)


def bind_forwarder(ctx=None, host: str = "127.0.0.1"):
    """A bus Forwarder on two free loopback ports it binds itself (port 0), and its address.

    Probing ports and releasing them would leave a moment in which another process can take
    them; binding is the only real test."""
    from agent.runtime.bus import Forwarder

    fwd = Forwarder(f"tcp://{host}:0", ctx=ctx)
    return fwd, fwd.address.text
