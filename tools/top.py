"""`cdz top`: every runtime process's rates, queues, drops and latencies, live in the terminal.

It first proves the bus is there (a hello round trip within `--connect-timeout`;
"no bus at ADDRESS", exit 2, if nothing answers), then listens to the `stats.*`
topic (each process publishes about once a second) and redraws one line per
process. "clock ms" is how far each process's own clock runs ahead of the hub's (it
measures that itself, `agent.runtime.clock`, and stamps event times on the hub's clock),
and "+- ms" how sure it is; "unknown" (no answer from a hub yet) or an uncertainty
beyond a tenth of the pairing window B is marked "!". `--once` prints a single snapshot (after `--wait` seconds) and exits, for
scripts ("no processes on ADDRESS", exit 1, if the bus answered but nobody
published stats); `--json` prints it as JSON.

Stats come from any process on the bus, so top trusts none of their fields: a
missing one is shown as "-", one of the wrong type as "?" (and the message is
counted as bad), and messages that fail validation are dropped and counted. The
count of bad messages is shown under the table.
"""

from __future__ import annotations

import math
import sys
import time
from typing import Any, Callable

from agent.runtime.bus import BusClient, BusError
from agent.core.messages import Stats

MISSING = "-"  # the process did not publish this field
ODD = "?"  # it did, with a value of the wrong type

# the fields top reads, all numbers; a Stats message with another type in one of them is bad
NUMERIC_FIELDS = ("gen", "rate_per_s", "learned", "processed", "sent", "queue", "bad_messages", "dropped_oldest",
                  "lost", "resent", "duplicates", "latency_p50_ms", "latency_p99_ms", "nodes", "clusters",
                  "clock_offset_ms", "clock_uncertainty_ms")
UNCERTAIN_MS = 100.0  # a tenth of the default pairing window B (1 s): beyond it, pairs may be missed


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and (not isinstance(v, float) or math.isfinite(v))


def _show(v: Any, fmt: str = "{}") -> str:
    if not _is_number(v):
        return ODD
    return fmt.format(v) if fmt != "{}" or isinstance(v, int) else f"{v:g}"


def _field(*keys: str, fmt: str = "{}") -> Callable[[dict], str]:
    """The first of `keys` the process published, formatted; "-" if none."""

    def get(s: dict) -> str:
        for k in keys:
            if k in s:
                return _show(s[k], fmt)
        return MISSING

    return get


def _drops(s: dict) -> str:
    present = [s[k] for k in ("bad_messages", "dropped_oldest", "lost") if k in s]
    if not present:
        return MISSING
    if not all(_is_number(v) for v in present):
        return ODD
    return _show(sum(present))


def _clock(s: dict) -> str:
    if "clock_known" not in s:
        return MISSING
    if s["clock_known"] is not True:
        return "unknown!"
    return _field("clock_offset_ms", fmt="{:+.1f}")(s)


def _uncertainty(s: dict) -> str:
    cell = _field("clock_uncertainty_ms", fmt="{:.2f}")(s)
    v = s.get("clock_uncertainty_ms")
    return cell + "!" if s.get("clock_known") is True and _is_number(v) and v > UNCERTAIN_MS else cell


def _nodes(s: dict) -> str:
    if "nodes" not in s and "clusters" not in s:
        return MISSING
    return f"{_field('nodes')(s)}/{_field('clusters')(s)}"


COLUMNS: tuple[tuple[str, int, Callable[[dict], str]], ...] = (  # header, width, the cell of a process's stats
    ("process", 16, lambda s: str(s.get("_source", ""))),
    ("gen", 4, _field("gen")),
    ("rate/s", 9, _field("rate_per_s", fmt="{:.0f}")),
    ("done", 9, _field("learned", "processed", "sent")),
    ("queue", 6, _field("queue")),
    ("drops", 6, _drops),
    ("resent", 6, _field("resent", "duplicates")),
    ("p50 ms", 7, _field("latency_p50_ms", fmt="{:.2f}")),
    ("p99 ms", 7, _field("latency_p99_ms", fmt="{:.2f}")),
    ("nodes/cl", 9, _nodes),
    ("clock ms", 9, _clock),
    ("+- ms", 7, _uncertainty),
    ("age s", 6, lambda s: f"{time.monotonic() - s['_seen']:.1f}" if "_seen" in s else MISSING),
)


def odd_fields(values: dict) -> list[str]:
    """The fields top reads that hold something other than a finite number."""
    return [k for k in NUMERIC_FIELDS if k in values and not _is_number(values[k])]


def _cell(get: Callable[[dict], str], stats: dict) -> str:
    try:
        text = get(stats)
    except Exception:  # a column must never take top down
        return ODD
    return "".join(c if c.isprintable() else "?" for c in text)  # nothing that moves the terminal's cursor


def format_top(latest: dict[str, dict], bad: "BadCount | None" = None) -> str:
    """One header line and one line per process, sorted by name (and a line on bad messages, if any)."""
    lines = [" ".join(f"{h:>{w}s}" if i else f"{h:<{w}s}" for i, (h, w, _) in enumerate(COLUMNS))]
    for name in sorted(latest):
        cells = [_cell(get, latest[name]) for _, _, get in COLUMNS]
        lines.append(" ".join(c[:w].rjust(w) if i else c[:w].ljust(w) for i, ((_, w, _), c) in enumerate(zip(COLUMNS, cells))))
    if len(lines) == 1:
        lines.append("(no process has published stats yet)")
    if bad is not None and bad.total:
        lines.append(bad.describe())
    return "\n".join(lines)


class BadCount:
    """Messages top could not use: dropped by validation (`client.dropped`) or stats with
    fields of the wrong type (shown as "?")."""

    def __init__(self, client: BusClient):
        self.client = client
        self.odd = 0

    @property
    def total(self) -> int:
        return self.client.dropped + self.odd

    def describe(self) -> str:
        return (f"bad messages: {self.total} ({self.client.dropped} invalid, dropped; "
                f"{self.odd} stats with fields of the wrong type, shown as {ODD})")


def collect(client: BusClient, seconds: float, latest: dict[str, dict] | None = None,
            bad: BadCount | None = None) -> dict[str, dict]:
    """Gather the newest stats of every process heard within `seconds`."""
    latest = {} if latest is None else latest
    end = time.monotonic() + seconds
    while (left := end - time.monotonic()) > 0:
        msg = client.recv(int(left * 1000) + 1)
        if isinstance(msg, Stats) and isinstance(msg.values, dict):
            if bad is not None and odd_fields(msg.values):
                bad.odd += 1
            # stamped on the hub's clock: transit time plus our own clock's offset to the hub
            lag_ms = (time.time_ns() - msg.t_ns) / 1e6 if isinstance(msg.t_ns, int) else None
            latest[str(msg.source)] = {**msg.values, "stats_lag_ms": lag_ms, "_source": str(msg.source),
                                       "_seen": time.monotonic()}
    return latest


def top(address: str, keys: str | None = None, once: bool = False, wait_s: float = 2.5,
        as_json: bool = False, connect_timeout_s: float = 5.0) -> int:
    """0: shown; 1 (--once): the bus answered but no process published stats; 2: no bus."""
    client = BusClient(address, "top", [b"stats"], keys=keys)  # stats.<name>, or plain stats for odd names
    bad = BadCount(client)
    try:
        try:
            client.handshake(timeout_s=connect_timeout_s)
        except BusError:
            hint = " (or it refused our keys)" if keys else ""
            print(f"cdz top: no bus at {address}{hint}: nothing answered within {connect_timeout_s:g} s "
                  f"(start one with `cdz bus --bus {address}`)", file=sys.stderr)
            return 2
        if once:
            latest = collect(client, wait_s, bad=bad)
            if as_json:
                import json

                clean = {k: {kk: vv for kk, vv in v.items() if not kk.startswith("_")} for k, v in latest.items()}
                print(json.dumps(clean, sort_keys=True))
                if bad.total:
                    print(f"cdz top: {bad.describe()}", file=sys.stderr)
            elif latest:
                print(format_top(latest, bad))
            elif bad.total:
                print(bad.describe())
            if not latest:
                print(f"cdz top: no processes on {address}: the bus answered, but nothing published stats "
                      f"within {wait_s:g} s", file=sys.stderr)
                return 1
            return 0
        latest: dict[str, dict] = {}
        while True:
            collect(client, 1.0, latest, bad=bad)
            for name in [n for n, s in latest.items() if time.monotonic() - s["_seen"] > 10]:
                del latest[name]  # a process that stopped talking
            sys.stdout.write("\x1b[H\x1b[2J" + f"cdz top  {address}  {time.strftime('%H:%M:%S')}\n\n"
                             + format_top(latest, bad) + "\n")
            sys.stdout.flush()
    except KeyboardInterrupt:  # Ctrl-C, or SIGTERM (agent.runtime.service.Terminated)
        return 0
    finally:
        client.close()
