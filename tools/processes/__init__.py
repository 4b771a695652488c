"""Every process of the agent, one module each, declared once.

A module here (hub, worker, player, recorder, camera, microphone, speaker, viewer,
thinker, the LSL bridges, the bus) holds three things:

* `PROCESS`: its kind, what it hears and says on the bus, its `cdz` words and help
  (`agent.runtime.topology.Process`);
* `add_arguments(parser)`: its command line;
* `run(args) -> int`: connect, build its service from the libraries (`agent.runtime`,
  `sensors`, `replay`), and loop until stopped.

`cdz` registers every module found here as a command; a graph names the module of
each of its roles (`agent.runtime.topology.Role`), and the supervisor starts it with
`python -m tools.host MODULE ARGS`. A process outside this package (a test's) is one
module of the same three things and one `Role` in a graph.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
from collections.abc import Callable
from types import ModuleType

from tools.command_line import describe

GROUPS = {  # `cdz lsl ...`: commands of two words share a first one, described here
    "lsl": ("bridge the bus and the Lab Streaming Layer (LabRecorder, EEG, eye trackers)",
            "Bridge the bus and the Lab Streaming Layer: `out` publishes what the agent perceives and recalls as "
            "LSL streams\n(for LabRecorder), `in` takes an LSL stream as one of its senses. Stamps are event times "
            "on both sides.",
            ("cdz lsl out --bus tcp://127.0.0.1:5570", "cdz lsl in Microphone --sense audio --bus tcp://127.0.0.1:5570")),
}


def modules() -> list[ModuleType]:
    """The process modules of this package (those not starting with `_`), in name order."""
    names = sorted(m.name for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_"))
    return [importlib.import_module(f"{__name__}.{name}") for name in names]


def configure(sp: argparse.ArgumentParser, module: ModuleType,
              common: Callable[[argparse.ArgumentParser], None]) -> None:
    """A process's parser: its own arguments, the common ones, and what `tools.cli.execute` reads."""
    p = module.PROCESS
    module.add_arguments(sp)
    common(sp)
    sp.set_defaults(func=module.run, command=p.command[0], light=p.light)


def add_parsers(sub: argparse._SubParsersAction, common: Callable[[argparse.ArgumentParser], None]) -> None:
    """Every process of this package as a `cdz` command (two-word ones under their group)."""
    groups: dict[str, argparse._SubParsersAction] = {}
    for module in modules():
        p = module.PROCESS
        into = sub
        if len(p.command) == 2:
            group = p.command[0]
            if group not in groups:
                text, description, examples = GROUPS[group]
                g = sub.add_parser(group, help=text, **describe(description, *examples))
                groups[group] = g.add_subparsers(dest="direction", required=True, metavar="DIRECTION")
            into = groups[group]
        sp = into.add_parser(p.command[-1], help=p.help,
                             **describe(p.description or p.help[0].upper() + p.help[1:] + ".", *p.examples))
        configure(sp, module, common)
