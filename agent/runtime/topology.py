"""The agent's processes as data: what each kind of process hears and says, and the graphs they make.

Each kind of process is declared once, as `PROCESS = Process(...)` in the module that
runs it (`tools/processes/`, one file each): its kind, the topics it hears and says,
and its command line. A graph is a list of `Role`s, each naming a process and the
module that declares it: `lossless_roles` (`cdz replay --distributed`) and
`live_roles` (`cdz live`, the benches). The supervisor starts each role as `python
-m tools.host MODULE ARGS` and adds the bus address (and, lossless, the run
generation); `graph` joins what one role says to what another hears, which `cdz
graph` prints (as JSON or a Mermaid chart). Every process also hears and says
`control` (the supervisor's hello, go, rewind, stop; the processes' ready and saved;
the hub's clock and the others' questions for it); only a supervisor's control
messages are drawn as edges, as the rest would join every process to every other.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from agent.runtime.wire import stats_topic


@dataclass(frozen=True)
class Process:
    """One kind of process, declared once, in the module that runs it (as its `PROCESS`)."""

    kind: str  # its name on the bus; a process per sense is named `<kind>-<sense>`
    command: tuple[str, ...]  # its `cdz` words, e.g. ("worker",) or ("lsl", "out")
    help: str  # one line for `cdz --help`
    examples: tuple[str, ...] = ()  # command lines for its --help
    description: str = ""  # its --help text, where one line says too little
    hears: tuple[str, ...] = ()  # topic prefixes it subscribes to; "{m}": its sense
    says: tuple[str, ...] = ()  # topics it publishes besides stats and control; "{m}": its sense, else each sense of the run
    light: bool = True  # never imports torch (the CLI skips setting torch's threads)
    supervises: bool = False  # tends the others: publishes no stats; its control messages are edges

    def topics(self, sense: str = "") -> list[bytes]:
        """The topic prefixes to subscribe to, for the process of `sense` (a worker's, say)."""
        return [t.format(m=sense).encode() for t in self.hears]


def declaration(module: str) -> Process:
    """The `PROCESS` declared by `module` (a dotted name); a clear error where there is none."""
    found = getattr(importlib.import_module(module), "PROCESS", None)
    if not isinstance(found, Process):
        raise ValueError(f"{module} declares no process: it needs PROCESS = agent.runtime.topology.Process(...)")
    return found


@dataclass(frozen=True)
class Role:
    """One process of a graph: its name on the bus, the module that declares and runs it, its arguments."""

    name: str  # `kind` or `kind-<sense>`: the `source` of what it sends
    module: str  # e.g. "tools.processes.hub": declares PROCESS, has add_arguments(parser) and run(args)
    args: tuple[str, ...]  # its command-line arguments; the supervisor adds --bus (and --gen, lossless)
    log: str  # its log file in the run's logs/ folder
    essential: bool = True  # says `ready` before the run goes on (hub, workers, a lossless player)

    @property
    def process(self) -> Process:
        return declaration(self.module)


def sense_of(name: str) -> str:
    """A process name's sense: `worker-audio` -> `audio`, `hub` -> ""."""
    return name.partition("-")[2]


def graph(members: Sequence[tuple[str, Process, str]], modalities: tuple[str, ...]) -> dict:
    """The processes (name, declaration, the module declaring it) with what each hears and says,
    and every edge (sayer, topic, hearer) where a topic one says starts with a prefix another hears."""
    processes, supervisors = [], set()
    for name, p, module in members:
        sense = sense_of(name)
        said = {t.format(m=m) for t in p.says for m in ((sense,) if sense else modalities)}
        if p.supervises:
            supervisors.add(name)
        else:
            said |= {stats_topic(name).decode(), "control"}
        heard = sorted({t.format(m=sense) for t in p.hears} | {"control"})
        processes.append({"name": name, "hears": heard, "says": sorted(said), "module": module})
    edges = [[a["name"], t, b["name"]] for a in processes for t in a["says"] for b in processes
             if b is not a and any(t.startswith(h) for h in b["hears"])
             and (t != "control" or a["name"] in supervisors)]
    return {"processes": processes, "edges": edges}


def members(roles: Sequence[Role], supervisor: tuple[Process, str] | None = None) -> list[tuple[str, Process, str]]:
    """A graph's members: its supervisor (its declaration and module, if given) and each role."""
    head = [(supervisor[0].kind, *supervisor)] if supervisor else []
    return [*head, *((r.name, r.process, r.module) for r in roles)]


def mermaid(g: dict) -> str:
    """A Mermaid flowchart of a `graph`: one arrow per pair of processes, labelled with its topics."""
    pairs: dict[tuple[str, str], list[str]] = {}
    for a, t, b in g["edges"]:
        pairs.setdefault((a, b), []).append(t)
    ids = {p["name"]: p["name"].replace("-", "_") for p in g["processes"]}
    lines = ["flowchart LR", *(f"    {ids[p['name']]}[{p['name']}]" for p in g["processes"])]
    lines += [f"    {ids[a]} -- \"{', '.join(ts)}\" --> {ids[b]}" for (a, b), ts in pairs.items()]
    return "\n".join(lines)


HOME = "tools.processes"  # the package that declares every process of the agent
LOSSLESS_RECALL_HZ = 10  # a viewer draws 10 frames a second; more reconstructions would only cost the workers


def lossless_roles(run: Path, modalities: tuple[str, ...], *, total: int, checkpoint_every: int, window: int,
                   speed: float) -> list[Role]:
    """A replay that must end bit-identical to the one-process brain: hub, a worker per sense, the player."""
    common = ("--run", str(run), "--quiet")
    stop = ("--total", str(total), "--checkpoint-every", str(checkpoint_every))
    watch = ("--recall-hz", str(LOSSLESS_RECALL_HZ))  # reconstructions for a viewer, not for learning
    return [Role("hub", f"{HOME}.hub", (*common, *stop, *watch), "hub.log"),
            *(Role(f"worker-{m}", f"{HOME}.worker", (m, *common, *stop), f"worker-{m}.log") for m in modalities),
            Role("player", f"{HOME}.player", (*common, "--window", str(window), "--speed", str(speed), "--wait-go"),
                 "player.log")]


def live_roles(run: Path, modalities: tuple[str, ...], *, camera: str | None = None, mic: str | None = None,
               use_mic: bool = False, viewer: bool = False, headless: Path | None = None, speak: bool = False,
               think: bool = False, lsl: bool = False) -> list[Role]:
    """The live agent: hub and workers learning online, and whichever senses and views are asked for."""
    live = ("--run", str(run), "--live", "--quiet")
    roles = [Role("hub", f"{HOME}.hub", live, "live-hub.log"),
             *(Role(f"worker-{m}", f"{HOME}.worker", (m, *live), f"live-worker-{m}.log") for m in modalities)]
    if camera is not None:
        roles.append(Role("camera", f"{HOME}.camera", ("--quiet", "--camera", camera), "camera.log", essential=False))
    if use_mic:
        roles.append(Role("microphone", f"{HOME}.microphone", ("--quiet", *(("--mic", mic) if mic else ())),
                          "microphone.log", essential=False))
    if viewer:
        roles.append(Role("viewer", f"{HOME}.viewer", ("--quiet", *(("--headless", str(headless)) if headless else ())),
                          "viewer.log", essential=False))
    if speak:
        roles.append(Role("speaker", f"{HOME}.speaker", ("--quiet",), "speaker.log", essential=False))
    if think:  # every real stimulus starts a chain of thoughts; real input interrupts it
        roles.append(Role("thinker", f"{HOME}.thinker", ("--quiet", "--run", str(run), "--from-live"), "thinker.log",
                          essential=False))
    if lsl:  # what it perceives and recalls, as Lab Streaming Layer streams for LabRecorder
        roles.append(Role("lsl_out", f"{HOME}.lsl_out", ("--quiet", "--senses", ",".join(modalities)), "lsl-out.log",
                          essential=False))
    return roles
