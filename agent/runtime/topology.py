"""The agent's processes as data: each role's name, what it hears and says on the bus, and how it starts.

One table serves every launcher: `cdz replay --distributed` (the lossless roles),
`cdz live` and the benches (the live roles); each process subscribes to the topics
its `HEARS` row names, and `SAYS` names what it publishes. A role starts as `cdz
<command...>`; the supervisor adds the bus address (and, lossless, the run
generation). `graph` joins the two into the edges of a run's processes, which `cdz
graph` prints (as JSON or a Mermaid chart). Every process also hears and says
`control` (the supervisor's hello, go, rewind, stop; the processes' ready and saved;
the hub's clock and the others' questions for it); only a supervisor's control
messages are drawn as edges, as the rest would join every process to every other.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from agent.runtime.wire import stats_topic

HEARS: dict[str, tuple[str, ...]] = {  # role (or role kind) -> topic prefixes; "{m}" is the worker's sense
    "hub": ("excite.", "clusters."),
    "worker": ("stimulus.{m}", "feedback.{m}", "recall.{m}", "credit"),
    "player": ("credit",),
    "camera": (),
    "microphone": (),
    "viewer": ("stimulus.", "excite.", "recon.", "frame.", "weights.", "stats"),
    "speaker": ("recon.audio",),
    "thinker": ("recon.", "excite.", "stimulus."),
    "launcher": ("stats.hub",),  # the lossless supervisor: the hub's progress
    "lsl_out": ("excite.", "recall.", "recon."),  # `cdz lsl out`: each as a Lab Streaming Layer stream
    "lsl_in": (),  # `cdz lsl in`: an LSL stream as a sense (name `lsl_in-<sense>`)
    "live": ("excite.", "recall.", "stats"),  # the live supervisor: what the agent perceives, for
    # --events-out, and every process's stats (a deaf hub is started again, clock trouble is logged)
}


SAYS: dict[str, tuple[str, ...]] = {  # role (or role kind) -> the topics it publishes besides its stats;
    # "{m}": its sense (a worker) or each sense of the run (the others)
    "hub": ("feedback.{m}", "recall.{m}", "credit", "weights.{m}"),
    "worker": ("excite.{m}", "clusters.{m}", "recon.{m}"),
    "player": ("stimulus.{m}",),
    "camera": ("stimulus.visual", "frame.visual"),
    "microphone": ("stimulus.audio",),
    "viewer": (),  # a window, a video, Foxglove
    "speaker": (),  # sound
    "thinker": ("stimulus.{m}",),  # thoughts, fed back as stimuli
    "lsl_out": (),  # LSL streams
    "lsl_in": ("stimulus.{m}",),
    "launcher": ("control",),
    "live": ("control",),
}
SUPERVISORS = ("launcher", "live")  # they tend the others and publish no stats of their own


def kind_of(name: str) -> tuple[str, str]:
    """A process name's role kind and sense: `worker-audio` -> (`worker`, `audio`), `hub` -> (`hub`, "")."""
    kind, _, sense = name.partition("-")
    return (kind, sense) if kind in HEARS else (name, "")


def graph(names: list[str], modalities: tuple[str, ...]) -> dict:
    """The processes `names` with what each hears and says, and every edge (sayer, topic, hearer)
    where a topic one says starts with a prefix another hears: derived from `HEARS` and `SAYS`."""
    processes = []
    for name in names:
        kind, sense = kind_of(name)
        senses = (sense,) if sense else modalities
        said = {t.format(m=m) for t in SAYS[kind] for m in senses}
        if kind not in SUPERVISORS:
            said |= {stats_topic(name).decode(), "control"}
        said = sorted(said)
        heard = sorted({t.format(m=sense) for t in HEARS[kind]} | {"control"})
        processes.append({"name": name, "hears": heard, "says": said})
    edges = [[a["name"], t, b["name"]] for a in processes for t in a["says"] for b in processes
             if b is not a and any(t.startswith(h) for h in b["hears"])
             and (t != "control" or kind_of(a["name"])[0] in SUPERVISORS)]
    return {"processes": processes, "edges": edges}


def mermaid(g: dict) -> str:
    """A Mermaid flowchart of a `graph`: one arrow per pair of processes, labelled with its topics."""
    pairs: dict[tuple[str, str], list[str]] = {}
    for a, t, b in g["edges"]:
        pairs.setdefault((a, b), []).append(t)
    ids = {p["name"]: p["name"].replace("-", "_") for p in g["processes"]}
    lines = ["flowchart LR", *(f"    {ids[p['name']]}[{p['name']}]" for p in g["processes"])]
    lines += [f"    {ids[a]} -- \"{', '.join(ts)}\" --> {ids[b]}" for (a, b), ts in pairs.items()]
    return "\n".join(lines)


def hears(role: str, modality: str = "") -> list[bytes]:
    """The topic prefixes `role` subscribes to (`worker` needs its sense)."""
    return [t.format(m=modality).encode() for t in HEARS[role]]


@dataclass(frozen=True)
class Role:
    """One process of the agent."""

    name: str  # its name on the bus (the `source` of what it sends)
    command: tuple[str, ...]  # `cdz` arguments; the supervisor adds --bus (and --gen, lossless)
    log: str  # its log file in the run's logs/ folder
    essential: bool = True  # says `ready` before the run goes on (hub, workers, a lossless player)


LOSSLESS_RECALL_HZ = 10  # a viewer draws 10 frames a second; more reconstructions would only cost the workers


def lossless_roles(run: Path, modalities: tuple[str, ...], *, total: int, checkpoint_every: int, window: int,
                   speed: float) -> list[Role]:
    """A replay that must end bit-identical to the one-process brain: hub, a worker per sense, the player."""
    common = ("--run", str(run), "--quiet")
    stop = ("--total", str(total), "--checkpoint-every", str(checkpoint_every))
    watch = ("--recall-hz", str(LOSSLESS_RECALL_HZ))  # reconstructions for a viewer, not for learning
    return [Role("hub", ("hub", *common, *stop, *watch), "hub.log"),
            *(Role(f"worker-{m}", ("worker", m, *common, *stop), f"worker-{m}.log") for m in modalities),
            Role("player", ("play", *common, "--window", str(window), "--speed", str(speed), "--wait-go"),
                 "player.log")]


def live_roles(run: Path, modalities: tuple[str, ...], *, camera: str | None = None, mic: str | None = None,
               use_mic: bool = False, viewer: bool = False, headless: Path | None = None, speak: bool = False,
               think: bool = False, lsl: bool = False) -> list[Role]:
    """The live agent: hub and workers learning online, and whichever senses and views are asked for."""
    live = ("--run", str(run), "--live", "--quiet")
    roles = [Role("hub", ("hub", *live), "live-hub.log"),
             *(Role(f"worker-{m}", ("worker", m, *live), f"live-worker-{m}.log") for m in modalities)]
    if camera is not None:
        roles.append(Role("camera", ("camera", "--quiet", "--camera", camera), "camera.log", essential=False))
    if use_mic:
        roles.append(Role("microphone", ("mic", "--quiet", *(("--mic", mic) if mic else ())), "microphone.log",
                          essential=False))
    if viewer:
        roles.append(Role("viewer", ("viewer", "--quiet", *(("--headless", str(headless)) if headless else ())),
                          "viewer.log", essential=False))
    if speak:
        roles.append(Role("speaker", ("speaker", "--quiet"), "speaker.log", essential=False))
    if think:  # every real stimulus starts a chain of thoughts; real input interrupts it
        roles.append(Role("thinker", ("think", "--quiet", "--run", str(run), "--from-live"), "thinker.log",
                          essential=False))
    if lsl:  # what it perceives and recalls, as Lab Streaming Layer streams for LabRecorder
        roles.append(Role("lsl_out", ("lsl", "out", "--quiet", "--senses", ",".join(modalities)), "lsl-out.log",
                          essential=False))
    return roles
