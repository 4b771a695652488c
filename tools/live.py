"""`cdz live --run RUN`: the agent with real senses, learning online.

Starts a bus, the hub and one encoder worker per modality in live mode on a
trained run, the camera and microphone processes, the viewer and (with
`--speak`) the speaker; supervises them (a process that dies is started again
from the newest checkpoint), checkpoints every `--checkpoint-every-s` seconds,
stops after `--duration` seconds or on Ctrl-C, and with `--events-out` writes
one JSON line per stimulus: when, which modality, the cluster it excited, and
what that recalled in the other modalities, with the clusters' scoring names
(the digit each cluster stood for on the training data when `cdz live` started).
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Protocol

from agent.runtime import flags
from agent.runtime.bus import BusClient
from agent.core.checkpoint import RunFolder
from agent.core.config import Config, sleep_override
from agent.runtime.launcher import Child
from agent.runtime.supervisor import Supervisor
from agent.runtime.topology import live_roles
from agent.core.messages import Control, Excitation, Recall

log = logging.getLogger(__name__)

# Sleep short and often, so a new voice is learned during the session: one sleep after 30
# taught pairs already lifts a new voice from about 0.79 to 0.93 (`cdz bench adapt`). A sleep
# on a full buffer took 80 s of a busy 2-core machine while the agent stayed awake.
SLEEP_EVERY_MIN = 1.0  # `cdz live --sleep-every` default: minutes awake between sleeps (docs/RESULTS.md, live sessions)
SLEEP_NEEDS_LIVED = 20  # stimuli learned from the senses since the last sleep, or the sleep waits


class EventSink(Protocol):
    """What `LiveAgent.run_for` hands every excitation and recall it hears (an EventLog, a bench's tally)."""

    def add(self, msg: Excitation | Recall) -> None: ...

    def flush(self, everything: bool = False) -> None: ...


class EventLog:
    """Joins each excitation with the recalls it caused and writes one JSON line per stimulus.

    A stimulus's line is written once every other modality has answered, or after
    `wait_s` (a cluster that recalls nothing gets no answer: null)."""

    def __init__(self, out: IO[str], modalities: tuple[str, ...], names: dict[str, dict[int, int]],
                 wait_s: float = 0.5):
        self.out = out
        self.modalities = modalities
        self.names = names
        self.wait_s = wait_s
        self.open: dict[tuple[str, int], dict] = {}  # (modality, seq) -> event waiting for recalls
        self.written = 0

    def add(self, msg: Excitation | Recall) -> None:
        if isinstance(msg, Excitation):
            if not msg.learn and msg.cluster_id < 0:
                return
            self.open[(msg.modality, msg.seq)] = {
                "t": msg.t_ns / 1e9, "modality": msg.modality, "seq": msg.seq, "cluster": msg.cluster_id,
                "cluster_name": self._name(msg.modality, msg.cluster_id), "recalled": {}, "recalled_names": {},
                "_due": time.monotonic() + self.wait_s}
        elif isinstance(msg, Recall):
            event = self.open.get((msg.cue_modality, msg.seq))
            if event is not None:
                event["recalled"][msg.modality] = msg.cluster_id
                event["recalled_names"][msg.modality] = self._name(msg.modality, msg.cluster_id)
                if len(event["recalled"]) == len(self.modalities) - 1:
                    self._write(msg.cue_modality, msg.seq)

    def flush(self, everything: bool = False) -> None:
        now = time.monotonic()
        for key in [k for k, e in self.open.items() if everything or e["_due"] <= now]:
            self._write(*key)

    def _name(self, modality: str, cluster: int) -> int | None:
        return self.names.get(modality, {}).get(int(cluster))

    def _write(self, modality: str, seq: int) -> None:
        event = self.open.pop((modality, seq))
        event.pop("_due")
        for m in self.modalities:
            if m != modality:
                event["recalled"].setdefault(m, None)
                event["recalled_names"].setdefault(m, None)
        self.out.write(json.dumps(event) + "\n")
        self.out.flush()
        self.written += 1


class LiveAgent:
    """The live processes of one run, supervised."""

    def __init__(self, run: RunFolder, *, camera: str | None = "0", mic: str | None = None, use_mic: bool = True,
                 headless: Path | None = None, viewer: bool = True, speak: bool = False, think: bool = False,
                 lsl: bool = False, bus: str | None = None, checkpoint_every_s: float = 60.0,
                 extra: dict[str, list[str]] | None = None,
                 sleep_every_s: float | None = None, sleep_settings: list[str] | None = None):
        self.run = run
        self.config = run.config()
        self.bus = bus  # None: a bus on free ports, started by `start`
        self.checkpoint_every_s = checkpoint_every_s
        self.sleep_every_s = sleep_every_s
        self.sleep_settings = sleep_settings or []
        self.lived = 0  # stimuli learned from the senses since the last sleep began (a sleep needs new ones)
        self.sleeper: Child | None = None  # `cdz sleep` on the newest cut, while the agent goes on
        self.sleeps: list[dict] = []  # {"step", "code", "s"} per sleep
        self._sleep_started = 0.0
        roles = live_roles(run.path, self.config.modalities, camera=camera, mic=mic, use_mic=use_mic, viewer=viewer,
                           headless=headless, speak=speak, think=think, lsl=lsl)
        self.supervisor = Supervisor(run, roles, lossless=False, bus=bus, extra=extra)
        self.client: BusClient | None = None
        self.events: EventSink | None = None  # hears every excitation and recall, also while waiting on a swap
        self._stop = False
        self._checkpoint_step = run.load_checkpoint()[0]

    @property
    def children(self) -> dict[str, Child]:
        return self.supervisor.children

    @property
    def restarts(self) -> list[dict]:
        return self.supervisor.report.restarts

    @property
    def keys(self) -> Path | None:
        """The key folder of the bus this agent started (None: a bus the user named, unkeyed)."""
        return self.supervisor.keys

    def start(self, timeout_s: float = 60.0) -> None:
        self.supervisor.start_timeout_s = timeout_s
        self.supervisor.start()
        self.bus, self.client = self.supervisor.bus, self.supervisor.client

    def run_for(self, duration_s: float | None, events: EventSink | None = None,
                until: Callable[[], bool] | None = None) -> None:
        """Supervise (and sleep, with `sleep_every_s`) for `duration_s` seconds, or until `until()` is true."""
        old = {s: signal.signal(s, self._on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
        self.events = events
        end = None if duration_s is None else time.monotonic() + duration_s
        next_checkpoint = time.monotonic() + self.checkpoint_every_s
        next_sleep = None if self.sleep_every_s is None else time.monotonic() + self.sleep_every_s
        try:
            while not self._stop and (end is None or time.monotonic() < end) and not (until and until()):
                self._supervise()
                if self.sleeper is not None and not self.sleeper.alive():
                    self._wake()
                    next_sleep = time.monotonic() + self.sleep_every_s  # every MIN minutes awake
                if (next_sleep is not None and self.sleeper is None and time.monotonic() >= next_sleep
                        and self.lived >= SLEEP_NEEDS_LIVED):  # nothing new lived: nothing to sleep on
                    self.fall_asleep()
                msg = self.client.recv(20)
                while msg is not None:
                    self._hear(msg)
                    msg = self.client.recv_ready()
                if events is not None:
                    events.flush()
                if time.monotonic() >= next_checkpoint:
                    next_checkpoint += self.checkpoint_every_s
                    if self.sleeper is None:  # the sleep writes the next checkpoint itself
                        self.checkpoint()
        finally:
            for s, h in old.items():
                signal.signal(s, h)
        if events is not None:
            events.flush(everything=True)

    def _hear(self, msg: object) -> None:
        self.supervisor.observe(msg)
        if isinstance(msg, Excitation) and msg.learn and not msg.relived and not msg.internal:
            self.lived += 1
        if self.events is not None and isinstance(msg, (Excitation, Recall)):
            self.events.add(msg)

    def _on_signal(self, signum: int, frame: object) -> None:
        self._stop = True

    def _supervise(self) -> None:
        self.supervisor.tend()

    def checkpoint(self) -> int:
        """Every process saves its part under the next step number (a cut as consistent as live allows)."""
        self._checkpoint_step += 1
        self.client.send(Control(command="checkpoint", args={"step": self._checkpoint_step}, source="live"))
        return self._checkpoint_step

    def fall_asleep(self) -> None:
        """Cut a checkpoint and sleep on it in a child process; the agent stays awake meanwhile."""
        step = self.checkpoint()
        self.lived = 0
        self._await_saved(step, timeout_s=10.0)
        self.client.send(Control(command="sleep", args={"on": True}, source="live"))
        argv = ["sleep", "--run", str(self.run.path), "--quiet", *(a for s in self.sleep_settings for a in ("--set", s))]
        self.sleeper = Child("sleeper", argv, self.run.path / "logs" / "sleep.log")
        self._sleep_started = time.monotonic()
        self.sleeper.start()
        log.info("sleeping on checkpoint %d", step)

    def _wake(self) -> None:
        """The sleep ended: if it taught anything, every process swaps to the slept brain (no restart)."""
        code = self.sleeper.proc.returncode
        self.sleeps.append({"step": self._checkpoint_step, "code": code,
                            "s": round(time.monotonic() - self._sleep_started, 2)})
        self.sleeper = None
        if code == 0:
            self._reload(len(self.sleeps))
        elif code != 2:  # 2: nothing to learn yet (no shared experience)
            log.warning("the sleep failed (code %s); see %s", code, self.run.path / "logs" / "sleep.log")
        self.client.send(Control(command="sleep", args={"on": False}, source="live"))

    def _reload(self, reload_id: int, timeout_s: float = 30.0) -> None:
        """Hub and workers take up the newest checkpoint (the slept one) in place, and say ready."""
        waiting, deadline = {"hub", *(f"worker-{m}" for m in self.config.modalities)}, time.monotonic() + timeout_s
        asked = 0.0
        while waiting and time.monotonic() < deadline:
            if time.monotonic() - asked >= 1.0:  # again for a process restarted meanwhile (a reload is idempotent)
                self.client.send(Control(command="reload", args={"id": reload_id}, source="live"))
                asked = time.monotonic()
            msg = self.client.recv(20)
            if isinstance(msg, Control) and msg.command == "ready" and msg.args.get("reload") == reload_id:
                waiting.discard(msg.source)
            else:
                self._hear(msg)
        if waiting:
            log.warning("no ready from %s after the swap", sorted(waiting))

    def _await_saved(self, step: int, timeout_s: float) -> None:
        """Until the hub and every worker said they saved their part of checkpoint `step` (or the deadline)."""
        waiting = set(self.run.part_names())
        deadline = time.monotonic() + timeout_s
        while waiting and time.monotonic() < deadline:
            msg = self.client.recv(20)
            if isinstance(msg, Control) and msg.command == "saved" and msg.args.get("step") == step:
                waiting.discard(msg.args.get("part"))
            else:
                self._hear(msg)
        if waiting:
            log.warning("no saved part %s of checkpoint %d within %.0f s", sorted(waiting), step, timeout_s)

    def stop(self) -> None:
        if self.sleeper is not None:  # a sleep cut short changes nothing: it writes its results last
            self.sleeper.stop()
            self.sleeper = None
        if self.client is not None:
            self._await_saved(self.checkpoint(), timeout_s=5.0)  # the last cut is on disk before anyone stops
        self.supervisor.stop(grace_s=5.0)
        self.client = None


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--run", required=True, help="a trained run folder (from `cdz replay` or `cdz train`)")
    p.add_argument("--camera", default="0", help="OpenCV source: device index, video file or stream URL (default 0)")
    p.add_argument("--no-camera", action="store_true", help="no camera process")
    p.add_argument("--mic", help="input device, by index or part of its name (`cdz mic --list` shows them)")
    p.add_argument("--no-mic", action="store_true", help="no microphone process")
    p.add_argument("--headless", metavar="DIR", help="no window: the viewer writes a video and PNG snapshots here")
    p.add_argument("--no-viewer", action="store_true", help="no viewer process")
    p.add_argument("--foxglove", type=flags.PORT, nargs="?", const=8765, metavar="PORT",
                   help="the viewer also serves everything to Foxglove over WebSocket (default port 8765), with "
                        "each cluster's name; without a display and --headless it serves only")
    p.add_argument("--foxglove-host", default="127.0.0.1", metavar="HOST",
                   help="--foxglove: address to bind (default loopback; unauthenticated: tunnel it instead)")
    p.add_argument("--speak", action="store_true", help="say recalled spectrograms out loud (Griffin-Lim)")
    p.add_argument("--think", action="store_true",
                   help="stream of thought: each real stimulus starts a chain of recollections (`cdz think`)")
    p.add_argument("--lsl", action="store_true",
                   help="also publish excitations, recalls and reconstructions as Lab Streaming Layer streams "
                        "(`cdz lsl out`), for LabRecorder")
    p.add_argument("--duration", type=flags.POSITIVE, help="stop by itself after this many seconds")
    p.add_argument("--events-out", metavar="FILE.jsonl", help="one JSON line per stimulus: cluster and recalls")
    p.add_argument("--checkpoint-every-s", type=flags.POSITIVE, default=60.0, metavar="S",
                   help="seconds between checkpoints (default 60; --checkpoint-every elsewhere counts stimuli)")
    p.add_argument("--sleep-every", type=flags.NON_NEGATIVE, metavar="MIN", default=SLEEP_EVERY_MIN,
                   help="after every MIN minutes awake with something new lived, sleep on it (`cdz sleep`) while "
                        "the agent stays awake, then swap every process to the slept brain in place, so a new "
                        f"voice is learned during the session (default {SLEEP_EVERY_MIN:g}; 0: never)")
    p.add_argument("--sleep-set", action="append", metavar="sleep.FIELD=VALUE", default=[],
                   help="a sleep setting for --sleep-every, e.g. sleep.teach_min_steps=300 (repeatable)")
    p.add_argument("--bus", help="bus address (default: two free ports on 127.0.0.1)")


def run(args: argparse.Namespace) -> int:
    sleep_override(Config(), args.sleep_set)  # a bad --sleep-set is refused now, not at the first sleep
    if args.foxglove is not None and args.no_viewer:
        raise ValueError("--foxglove is served by the viewer process: drop --no-viewer")
    from agent.pack import open_writable_run

    run_folder = open_writable_run(args.run)
    config = run_folder.config()
    run_folder.load_checkpoint()  # a clear error now if the run was never trained
    extra: dict[str, list[str]] = {}
    if args.foxglove is not None:
        extra["viewer"] = ["--foxglove", str(args.foxglove), "--foxglove-host", args.foxglove_host,
                           "--run", str(run_folder.path)]
    agent = LiveAgent(run_folder, camera=None if args.no_camera else args.camera, mic=args.mic,
                      use_mic=not args.no_mic, headless=Path(args.headless) if args.headless else None,
                      viewer=not args.no_viewer, speak=args.speak, think=args.think, lsl=args.lsl, bus=args.bus,
                      checkpoint_every_s=args.checkpoint_every_s,
                      sleep_every_s=60.0 * args.sleep_every if args.sleep_every > 0 else None,
                      sleep_settings=args.sleep_set, extra=extra)
    out = open(args.events_out, "w") if args.events_out else None
    try:
        from replay.naming import run_names  # heavy: only when events are logged

        events = EventLog(out, config.modalities, run_names(run_folder)) if out else None
        agent.start()
        keyed = "" if agent.keys is None else f" with the keys in {agent.keys}"
        print(f"cdz live: running on {agent.bus}{keyed} ({', '.join(agent.children)}); Ctrl-C stops"
              f"{'' if args.duration is None else f' (or after {args.duration:.0f} s)'}", file=sys.stderr)
        agent.run_for(args.duration, events)
    finally:
        agent.stop()
        if out is not None:
            out.close()
    print(f"cdz live: stopped; restarts {len(agent.restarts)}; sleeps {len(agent.sleeps)}; checkpoint {agent._checkpoint_step} in "
          f"{run_folder.path}{'' if out is None else f'; {events.written} events in {args.events_out}'}",
          file=sys.stderr)
    return 0

