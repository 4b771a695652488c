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


def bind_forwarder(ctx=None, host: str = "127.0.0.1", tries: int = 20):
    """A bus Forwarder bound on free loopback ports, and its address.

    `free_tcp_bus` only says which ports were free a moment ago; another process can take
    them before the forwarder binds. Binding is the only real test: if it fails, pick again."""
    from agent.bus import BusError, Forwarder, free_tcp_bus

    for _ in range(tries):
        address = free_tcp_bus(host)
        try:
            return Forwarder(address, ctx=ctx), address
        except BusError as e:  # taken in between: try other ports
            last = e
    raise AssertionError(f"could not bind a bus on {host} in {tries} tries: {last}")
