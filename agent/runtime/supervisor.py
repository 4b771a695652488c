"""The one supervisor: starts a topology's processes on a bus and keeps them going, by one of two policies.

* **lossless** (`cdz replay --distributed`): a replay that must end bit-identical
  to the one-process brain. Every process loads the newest complete checkpoint and
  says `ready`; the player starts on `go`. A process that dies is started again and
  every process rewinds to the newest complete checkpoint in a new generation
  (older messages are ignored), so nothing saved is lost and the run ends exactly
  as an uninterrupted one.
* **live** (`cdz live`, the benches): a process that dies is started again alone
  while the others go on; a sensor that cannot open its device (exit code 2) stops
  the agent with the reason; a camera whose video file ended is left finished. A hub
  that goes on hearing excitations but learns none of them (say, one told to take up
  a generation nobody else is in) is deaf, and is started again too (`observe`).

Ctrl-C or SIGTERM stops every child (a stop message, then SIGTERM, then SIGKILL);
children also get SIGTERM if the supervisor itself dies (see `agent.runtime.launcher`).
"""

from __future__ import annotations

import logging
import shutil
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path

from agent.core.checkpoint import RunFolder
from agent.core.messages import Control, Stats
from agent.runtime.bus import BusClient, session_keys
from agent.runtime.launcher import Child, LaunchError, await_ready, start_bus, stop_children
from agent.runtime.topology import Process, Role

log = logging.getLogger(__name__)

LOSSLESS_SUPERVISOR = Process(  # `cdz replay --distributed`: it follows the hub's progress
    "launcher", ("replay", "--distributed"), "the lossless supervisor", hears=("stats.hub",), says=("control",),
    supervises=True)
LIVE_SUPERVISOR = Process(  # `cdz live`: what the agent perceives (for --events-out), and every process's
    # stats (a deaf hub is started again, clock trouble is logged)
    "live", ("live",), "the live supervisor", hears=("excite.", "recall.", "stats"), says=("control",),
    supervises=True)
SUPERVISORS = {True: (LOSSLESS_SUPERVISOR, __name__), False: (LIVE_SUPERVISOR, __name__)}  # lossless? -> a graph's head
CANNOT_START = {  # role -> what a user can do when it exits with code 2 (it cannot start: no device, no library)
    "camera": "choose another device or pass --no-camera",
    "microphone": "choose another device or pass --no-mic",
    "lsl_out": "install pylsl (its wheel ships liblsl) or leave out --lsl",
}
DEAF_AFTER_S = 3.0  # live: a hub that learned nothing this long while dropping ...
DEAF_DROPS = 10  # ... at least this many excitations as stale is started again
CLOCK_GRACE_S = 5.0  # live: a process whose clock offset is still unknown after this long is logged


@dataclass
class SupervisorReport:
    """What the supervised run did, for metrics and the closing table."""

    restarts: list[dict] = field(default_factory=list)  # {"child", "at_step", "back_s"} or {"child", "code", "at"}
    wall_s: float = 0.0  # the stream itself (a distributed replay adds its refinements' pauses in refine_s)
    refine_s: float = 0.0


class Supervisor:
    """Starts the processes of `roles` and keeps them going by the lossless or the live policy."""

    def __init__(self, run: RunFolder, roles: list[Role], *, lossless: bool, bus: str | None = None,
                 name: str | None = None, extra: dict[str, list[str]] | None = None, start_timeout_s: float = 60.0,
                 logs: Path | None = None, own_bus: bool = True, secure: bool = True, keys: Path | None = None):
        self.run = run
        self.roles = roles
        self.lossless = lossless
        self.bus = bus  # None: a bus on free ports, started with the children
        self.own_bus = own_bus  # False: the bus at `bus` runs already, and outlives this supervisor
        # a bus on free ports of our own is keyed for this run alone (`session_keys`); a bus the user
        # named is the user's set-up, keyed or not as they made it
        self.secure = secure and bus is None and keys is None
        self.keys: Path | None = keys  # the key folder of the bus at `bus`, if it is keyed
        self._own_keys = False
        if not own_bus and bus is None:
            raise ValueError("own_bus=False needs the address of the running bus")
        self.declared, _ = SUPERVISORS[lossless]  # what it hears
        self.name = name or self.declared.kind
        self._b_ms: float | None = None  # the pairing window B, read from the run's config when first needed
        self._clock_warned: set[str] = set()  # processes whose clock trouble is logged already
        self.extra = extra or {}  # more arguments for a role, e.g. {"camera": ["--no-realtime"]}
        unknown = sorted(set(self.extra) - {r.name for r in roles})
        if unknown:
            raise ValueError(f"extra arguments for processes that are not started: {unknown}")
        self.start_timeout_s = start_timeout_s
        self.logs = logs or run.path / "logs"
        self.gen = 0
        self.children: dict[str, Child] = {}
        self.bus_child: Child | None = None
        self.client: BusClient | None = None
        self.report = SupervisorReport()
        self._hub_heard: tuple[int, int, float] | None = None  # live: (processed, stale_gen, when) last it learned

    @property
    def essential(self) -> list[str]:
        return [r.name for r in self.roles if r.essential]

    # ------------------------------------------------------------------ start and stop
    def _watch_clock(self, msg: Stats) -> None:
        """Say once (until it is fixed) that a process's clock offset to the hub is unknown after
        CLOCK_GRACE_S, or uncertain beyond B/10: a sensor's pairs may be missed; another process's
        latency figures may be off (it stamps no event times)."""
        v, name = msg.values, str(msg.source)
        up, unc = v.get("uptime_s"), v.get("clock_uncertainty_ms")
        b_ms = 1000.0 * self.run.config().cdz.window_s if self._b_ms is None else self._b_ms
        self._b_ms = b_ms
        if v.get("clock_known") is False and isinstance(up, (int, float)) and up > CLOCK_GRACE_S:
            problem = "its clock's offset to the hub is unknown (no hub answers its time questions)"
        elif v.get("clock_known") is True and isinstance(unc, (int, float)) and unc > b_ms / 10:
            problem = f"its clock's offset to the hub is uncertain by {unc:.0f} ms, more than B/10 ({b_ms / 10:.0f} ms)"
        else:
            self._clock_warned.discard(name)
            return
        if name not in self._clock_warned:
            self._clock_warned.add(name)
            effect = ("pairs across senses may be missed" if v.get("stamps_events", True)
                      else "its latency figures may be off (it stamps no event times, so pairing is not affected)")
            log.warning("%s: %s; %s", name, problem, effect)

    def start(self) -> None:
        """The bus, then the essential roles (hub, workers, a lossless player); once they said ready, the
        others (senses, views, the thinker), so a sensor never streams before the brain listens: a
        camera on a video file would lose its first cards. Lossless: everyone is then told go."""
        bus_log = self.logs / ("bus.log" if self.lossless else "live-bus.log")
        if self.secure and self.keys is None:
            self.keys, self._own_keys = session_keys(), True
        keyed = ["--keys", str(self.keys)] if self.keys is not None else []
        if self.bus is None:
            self.bus_child, self.bus = start_bus(bus_log, extra=keyed, timeout_s=self.start_timeout_s)
        elif self.own_bus:
            self.bus_child = Child("bus", ["bus", "--bus", self.bus, *keyed], bus_log)
            self.bus_child.start()
        self.client = BusClient(self.bus, self.name, self.declared.topics(), keys=self.keys)
        self.client.handshake(timeout_s=self.start_timeout_s)
        for role in self.roles:
            self.children[role.name] = Child(role.name, [role.module, *role.args, "--bus", self.bus, *keyed,
                                                         *self.extra.get(role.name, [])], self.logs / role.log,
                                             entry="tools.host")
        essential = set(self.essential)
        for name, child in self.children.items():
            if name in essential:
                child.start(self._generation())
        self._await_ready()
        for name, child in self.children.items():
            if name not in essential:
                child.start(self._generation())
        if self.lossless:
            self._go()

    def _generation(self) -> list[str]:
        return ["--gen", str(self.gen)] if self.lossless else []

    def _await_ready(self) -> None:
        await_ready(self.client, self.children, self.essential, self.start_timeout_s,
                    accept=lambda msg: not self.lossless or msg.args.get("gen") == self.gen, logs=self.logs)

    def _go(self) -> None:
        step = self.run.load_checkpoint()[0]
        self.send(Control(command="go", args={"gen": self.gen, "step": step}))

    def send(self, msg: Control) -> None:
        self.client.send(Control(command=msg.command, args=msg.args, source=self.name, gen=self.gen))

    def stop(self, grace_s: float = 5.0) -> None:
        """Stop every child: a stop message to each (a recorder or `cdz top` on the bus goes on), then
        SIGTERM, then SIGKILL; then the bus."""
        if self.client is not None:
            try:
                for name in self.children:
                    self.send(Control(command="stop", args={"to": name}))
            except Exception:  # the bus may be gone already
                pass
        stop_children(list(self.children.values()), grace_s=grace_s)
        if self.client is not None:
            self.client.close()
            self.client = None
        if self.bus_child is not None:
            self.bus_child.stop()
        if self._own_keys:
            shutil.rmtree(self.keys, ignore_errors=True)
            self.keys, self._own_keys = None, False

    # ------------------------------------------------------------------ the policies
    def tend(self) -> None:
        """Start again whatever died, by the policy (LaunchError when the run cannot go on)."""
        if self.bus_child is not None and not self.bus_child.alive():
            raise LaunchError(f"the bus died (code {self.bus_child.proc.returncode}); see {self.bus_child.log_path}")
        dead = [c for c in self.children.values() if not c.finished and not c.alive()]
        if not dead:
            return
        if self.lossless:
            self._rewind(dead)
            return
        for child in dead:
            code = child.proc.returncode
            if child.name == "camera" and code == 0:  # a video file played to its end
                log.warning("camera: the source ended")
                child.finished = True
                continue
            if child.name in CANNOT_START and code == 2:  # starting it again would fail again
                raise LaunchError(f"{child.name} cannot start (see {child.log_path}); {CANNOT_START[child.name]}")
            log.warning("%s died (code %s); starting it again", child.name, code)
            child.restarts += 1
            self.report.restarts.append({"child": child.name, "code": code, "at": time.time()})
            child.start()

    def observe(self, msg: object) -> None:
        """Live: watch every process's stats. A process whose clock cannot be put on the hub's is
        logged (`_watch_clock`). A hub whose count of dropped, stale excitations grows by DEAF_DROPS
        while it learns nothing for DEAF_AFTER_S is deaf: nothing it hears reaches the CDZ, and
        nothing else would notice. It is started again from the newest checkpoint, like a hub that died."""
        if self.lossless or not isinstance(msg, Stats):
            return
        self._watch_clock(msg)
        if msg.source != "hub":
            return
        processed, stale = msg.values.get("processed"), msg.values.get("stale_gen")
        if not isinstance(processed, int) or not isinstance(stale, int):
            return
        now, heard = time.monotonic(), self._hub_heard
        if heard is None or processed > heard[0] or stale < heard[1]:  # learning, or a new hub: watch from here
            self._hub_heard = (processed, stale, now)
            return
        if stale - heard[1] < DEAF_DROPS or now - heard[2] < DEAF_AFTER_S:
            return
        hub = self.children.get("hub")
        if hub is None or not hub.alive():
            return
        log.warning("hub: %d excitations dropped as stale and none learned for %.0f s (its generation is %s); "
                    "starting it again", stale - heard[1], now - heard[2], msg.values.get("gen"))
        hub.stop()
        hub.restarts += 1
        self.report.restarts.append({"child": "hub", "why": "deaf", "at": time.time()})
        hub.start()
        self._hub_heard = None

    def _rewind(self, dead: list[Child]) -> None:
        """Lossless: restart the dead, and everyone goes back to the newest complete checkpoint."""
        t_dead = time.monotonic()
        self.gen += 1
        step = self.run.load_checkpoint()[0]
        for child in dead:
            log.warning("%s died (code %s); restarting it and rewinding everyone to checkpoint %d",
                        child.name, child.proc.returncode, step)
            child.restarts += 1
        self.send(Control(command="rewind", args={"gen": self.gen, "step": step}))
        for child in dead:
            child.start(self._generation())
        self._await_ready()
        back = time.monotonic() - t_dead
        for child in dead:
            self.report.restarts.append({"child": child.name, "at_step": step, "back_s": round(back, 3)})
        self._go()

    def supervise_lossless(self, total: int, progress: bool = True) -> SupervisorReport:
        """Lossless: run until every part of checkpoint `total` is saved, tending the processes meanwhile."""
        from tqdm import tqdm

        t0 = time.monotonic()
        stop = []
        old = {s: signal.signal(s, lambda *_: stop.append(1)) for s in (signal.SIGTERM, signal.SIGINT)}
        bar = tqdm(total=total, desc="distributed stream", unit="stim", disable=not progress, mininterval=0.5)
        saved: dict[int, set[str]] = {}
        parts = set(self.run.part_names())
        try:
            while True:
                if stop:
                    raise KeyboardInterrupt
                gen = self.gen
                self.tend()
                if self.gen != gen:
                    continue
                msg = self.client.recv(20)
                if isinstance(msg, Stats) and msg.source == "hub" and msg.gen == self.gen:
                    done = msg.values.get("next_seq", 0)
                    if isinstance(done, int):
                        bar.update(max(0, done - bar.n))
                    continue
                if not isinstance(msg, Control) or msg.gen != self.gen:
                    continue
                if msg.command == "saved":
                    step = int(msg.args.get("step", -1))
                    saved.setdefault(step, set()).add(str(msg.args.get("part")))
                    if step == total and saved[step] >= parts:
                        break
        finally:
            bar.close()
            for s, h in old.items():
                signal.signal(s, h)
        self.report.wall_s = time.monotonic() - t0
        return self.report
