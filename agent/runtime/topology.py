"""The agent's processes as data: each role's name, what it hears on the bus, and how it starts.

One table serves every launcher: `cdz replay --distributed` (the lossless roles),
`cdz live` and the benches (the live roles); each process subscribes to the topics
its row names. A role starts as `cdz <command...>`; the supervisor adds the bus
address (and, lossless, the run generation).

    role            hears                                   says
    hub             excite.*, clusters.*                    feedback.<m>, recall.<m>, credit, weights.*
    worker-<m>      stimulus.<m>, feedback.<m>, recall.<m>, credit   excite.<m>, clusters.<m>, recon.<m>
    player          credit                                  stimulus.*
    camera          (control only)                          stimulus.visual, frame.visual
    microphone      (control only)                          stimulus.audio
    viewer          stimulus, excite, recon, frame, weights, stats   (a window, a video, Foxglove)
    speaker         recon.audio                             (sound)
    thinker         recon, excite, stimulus                 stimulus.* (thoughts)

Every process also hears `control` (the supervisor's hello, go, rewind, stop, ...).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

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
    "live": ("excite.", "recall.", "stats.hub"),  # the live supervisor: what the agent perceives, for
    # --events-out, and the hub's stats (a deaf hub is started again)
}


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
               think: bool = False) -> list[Role]:
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
    return roles
