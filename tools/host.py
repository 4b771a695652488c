"""Run one declared process: `python -m tools.host MODULE [ARGS...]`.

This is how a supervisor starts each role of a graph (`agent.runtime.topology.Role`):
MODULE declares `PROCESS` and has `add_arguments(parser)` and `run(args)`, as every
module of `tools.processes` does. The command line, the error handling and the exit
codes are `cdz`'s (`tools.cli.execute`).
"""

from __future__ import annotations

import argparse
import importlib
import sys

from agent.runtime.topology import declaration


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0].startswith("-"):
        print("usage: python -m tools.host MODULE [ARGS...]  (MODULE declares PROCESS, e.g. tools.processes.hub)",
              file=sys.stderr)
        return 2
    from tools.cli import execute
    from tools.command_line import HelpFormatter, common_arguments
    from tools.processes import configure

    try:
        process = declaration(argv[0])
    except (ImportError, ValueError) as e:
        print(f"tools.host: error: {e}", file=sys.stderr)
        return 2
    parser = argparse.ArgumentParser(prog=f"cdz {' '.join(process.command)}", description=process.help,
                                     formatter_class=HelpFormatter)
    configure(parser, importlib.import_module(argv[0]), common_arguments)  # already imported: a lookup
    return execute(parser.parse_args(argv[1:]))


if __name__ == "__main__":
    sys.exit(main())
