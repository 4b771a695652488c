"""`cdz top`: every runtime process's rates, queues, drops and latencies, live in the terminal.

It listens to the `stats.*` topic of a bus (each process publishes about once a
second) and redraws one line per process. "clock ms" is how far behind our clock
each process's stats stamp arrives: transit time (well under a millisecond on one
machine) plus the offset between the two clocks, which event times inherit when
processes run on different machines. `--once` prints a single snapshot
(after `--wait` seconds) and exits, for scripts; `--json` prints it as JSON.
"""

from __future__ import annotations

import sys
import time
from typing import Any

from agent.bus import BusClient
from agent.wire import Stats

COLUMNS = (  # header, width, how to read it from a process's stats
    ("process", 16, lambda s: s.get("_source", "")),
    ("gen", 4, lambda s: s.get("gen", "")),
    ("rate/s", 9, lambda s: _num(s.get("rate_per_s"), "{:.0f}")),
    ("done", 9, lambda s: s.get("learned", s.get("processed", s.get("sent", "")))),
    ("queue", 6, lambda s: s.get("queue", "")),
    ("drops", 6, lambda s: sum(int(s.get(k, 0)) for k in ("bad_messages", "dropped_oldest", "lost"))),
    ("resent", 6, lambda s: s.get("resent", s.get("duplicates", ""))),
    ("p50 ms", 7, lambda s: _num(s.get("latency_p50_ms"), "{:.2f}")),
    ("p99 ms", 7, lambda s: _num(s.get("latency_p99_ms"), "{:.2f}")),
    ("nodes/cl", 9, lambda s: f"{s['nodes']}/{s['clusters']}" if "nodes" in s else ""),
    ("clock ms", 9, lambda s: _num(s.get("clock_offset_ms"), "{:+.2f}")),
    ("age s", 6, lambda s: f"{time.monotonic() - s['_seen']:.1f}"),
)


def _num(v: Any, fmt: str) -> str:
    return fmt.format(v) if isinstance(v, (int, float)) else ""


def format_top(latest: dict[str, dict]) -> str:
    """One header line and one line per process, sorted by name."""
    lines = [" ".join(f"{h:>{w}s}" if i else f"{h:<{w}s}" for i, (h, w, _) in enumerate(COLUMNS))]
    for name in sorted(latest):
        cells = [str(get(latest[name])) for _, _, get in COLUMNS]
        lines.append(" ".join(c[:w].rjust(w) if i else c[:w].ljust(w) for i, ((_, w, _), c) in enumerate(zip(COLUMNS, cells))))
    if len(lines) == 1:
        lines.append("(no process has published stats yet)")
    return "\n".join(lines)


def collect(client: BusClient, seconds: float, latest: dict[str, dict] | None = None) -> dict[str, dict]:
    """Gather the newest stats of every process heard within `seconds`."""
    latest = {} if latest is None else latest
    end = time.monotonic() + seconds
    while (left := end - time.monotonic()) > 0:
        msg = client.recv(int(left * 1000) + 1)
        if isinstance(msg, Stats):
            # the sender stamps stats with its wall clock: transit time plus clock offset (see README)
            clock_ms = (time.time_ns() - msg.t_ns) / 1e6
            latest[msg.source] = {**msg.values, "clock_offset_ms": clock_ms, "_source": msg.source,
                                  "_seen": time.monotonic()}
    return latest


def top(address: str, keys: str | None = None, once: bool = False, wait_s: float = 2.5,
        as_json: bool = False) -> int:
    client = BusClient(address, "top", [b"stats"], keys=keys)  # stats.<name>, or plain stats for odd names
    try:
        if once:
            latest = collect(client, wait_s)
            if as_json:
                import json

                clean = {k: {kk: vv for kk, vv in v.items() if not kk.startswith("_")} for k, v in latest.items()}
                print(json.dumps(clean, sort_keys=True))
            else:
                print(format_top(latest))
            return 0 if latest else 1
        latest: dict[str, dict] = {}
        while True:
            collect(client, 1.0, latest)
            for name in [n for n, s in latest.items() if time.monotonic() - s["_seen"] > 10]:
                del latest[name]  # a process that stopped talking
            sys.stdout.write("\x1b[H\x1b[2J" + f"cdz top  {address}  {time.strftime('%H:%M:%S')}\n\n"
                             + format_top(latest) + "\n")
            sys.stdout.flush()
    except KeyboardInterrupt:
        return 0
    finally:
        client.close()
