"""Jobs run one thread each (a sense's encoder training or teaching), and stopped together.

Torch's heavy operations release the GIL, so two senses' jobs take about the time of the
slower one on two cores. A thread cannot be killed, so a run told to stop (Ctrl-C,
SIGTERM) or a job that fails would otherwise wait for the other jobs to finish, which
is minutes of training: each job's loop calls `check_stop` once per step instead, and
the first exception of the caller or of any job tells the others to stop.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from contextlib import contextmanager
from typing import Iterator, TypeVar

T = TypeVar("T")

_stop = threading.Event()


class Stopped(Exception):
    """Raised in a job's thread when the jobs were told to stop."""


def check_stop() -> None:
    """Raise `Stopped` if the jobs running at once were told to stop (call once per step)."""
    if _stop.is_set():
        raise Stopped


def at_once(jobs: dict[str, Callable[[], T]]) -> dict[str, T]:
    """Run every job in its own thread; their results by name. The first exception (the caller's,
    e.g. KeyboardInterrupt, or a job's) stops the other jobs at their next step, then propagates."""
    _stop.clear()
    with ThreadPoolExecutor(max_workers=max(1, len(jobs))) as pool, _stopping_on_error():
        running = {name: pool.submit(job) for name, job in jobs.items()}
        wait(running.values(), return_when=FIRST_EXCEPTION)
        for job in running.values():
            if job.done() and job.exception() is not None:
                job.result()  # the first failure is raised here, and the others stop on the way out
        return {name: job.result() for name, job in running.items()}


@contextmanager
def _stopping_on_error() -> Iterator[None]:
    """Left before the pool's own exit, which waits for every thread: tell them to stop first."""
    try:
        yield
    except BaseException:
        _stop.set()
        raise
