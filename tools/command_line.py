"""What every `cdz` command line shares: help layout, the common options, and a process's bus options.

`tools.cli` builds the `cdz` parser from these, and `tools.processes` the parser of
each declared process; `tools.host` builds one process's parser alone.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable

from agent.runtime import flags
from agent.runtime.bus import DEFAULT_BUS, BusClient


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Descriptions and examples kept as written; every option's default shown (unless its help
    already speaks of its default, or there is none to show)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if (default is None or default is False or default == argparse.SUPPRESS or "default" in text
                or not (action.option_strings or action.nargs in (argparse.OPTIONAL, argparse.ZERO_OR_MORE))):
            return text
        return f"{text} (default: %(default)s)"


def describe(description: str, *examples: str) -> dict:
    """add_parser keywords for a subcommand: a one-line description, examples, defaults shown."""
    head = "example:" if len(examples) == 1 else "examples:"
    return {"description": description, "epilog": "\n  ".join((head, *examples)), "formatter_class": HelpFormatter}


def common_arguments(sp: argparse.ArgumentParser, config: bool = False, json_out: bool = False) -> None:
    """--quiet and --log-level for every command; with `config`, the settings options; with `json_out`, --json."""
    sp.add_argument("--quiet", action="store_true", help="no progress bars")
    if json_out:
        sp.add_argument("--json", action="store_true", help="print one JSON object on stdout instead of a table")
    sp.add_argument("--log-level", choices=["debug", "info", "warning", "error"],
                    help="how much the command logs on stderr (default: warning; info for processes)")
    if config:
        sp.add_argument("--config", metavar="FILE", help="settings from a TOML file, e.g. a run's config.toml "
                        "(--seed and --set apply on top)")
        sp.add_argument("--print-config", action="store_true",
                        help="print the resolved settings as TOML and stop (nothing is trained)")
        sp.add_argument("--seed", type=flags.SEED, help="seed of everything (default: the config's, else 0)")
        sp.add_argument("--set", action="append", metavar="SECTION.FIELD=VALUE",
                        help="override a config field, e.g. --set cortex.node_lr=0.02 "
                             "--set data.digits=[0,1,2] (repeatable; the field must exist)")
        sp.add_argument("--out", help="run folder to create (default runs/<time>-seed<N>)")
        sp.add_argument("--overwrite", action="store_true", help="replace the run folder given by --out if it exists")


def bus_arguments(sp: argparse.ArgumentParser, connect_timeout: float | None = 30.0) -> None:
    """--bus, --keys and --connect-timeout (hidden where nothing connects: `connect_timeout` None)."""
    sp.add_argument("--bus", default=DEFAULT_BUS,
                    help="bus address: tcp://HOST:PORT (uses PORT and PORT+1) or ipc:///path (uses /path.in, "
                         f"/path.out) (default {DEFAULT_BUS})")
    sp.add_argument("--keys", metavar="DIR", help="CurveZMQ key folder from `cdz keys` (required off loopback)")
    sp.add_argument("--connect-timeout", type=flags.POSITIVE, default=30.0 if connect_timeout is None else connect_timeout,
                    metavar="S", help=argparse.SUPPRESS if connect_timeout is None else
                    "seconds to wait for the bus to answer")


def log_to_stderr(quiet: bool) -> None:
    """A process logs on stderr (its log file, under a supervisor): warnings with --quiet, else info."""
    logging.basicConfig(level=logging.WARNING if quiet else logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")


def connect(args: argparse.Namespace, name: str, topics: list[bytes]) -> BusClient:
    """A bus client for the process `name`, subscribed to `topics`, that has heard the bus answer."""
    client = BusClient(args.bus, name, topics, keys=args.keys)
    client.handshake(timeout_s=args.connect_timeout)
    return client


def profiled(fn: Callable[[], None], name: str) -> None:
    """Run `fn`, under cProfile into $CDZ_PROFILE/<name>.prof when that is set (for benchmarks)."""
    folder = os.environ.get("CDZ_PROFILE")
    if not folder:
        fn()
        return
    import cProfile

    prof = cProfile.Profile()
    try:
        prof.runcall(fn)
    finally:
        os.makedirs(folder, exist_ok=True)
        prof.dump_stats(os.path.join(folder, f"{name}.prof"))
