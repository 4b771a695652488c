"""`cdz replay --distributed`: encoders in this process, then the teaching stream through the
runtime's processes (bus, hub, a worker per sense, the player), supervised by
`agent.runtime.supervisor.Supervisor`, segment by segment through the same driver as `cdz train`
(`replay.driver`). The run ends bit-identical to the in-process one.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from agent.core.brain import Brain
from agent.core.checkpoint import LOG_CLUSTER, LOG_RECALLED, RunFolder, cortex_part, new_run, part
from agent.runtime.launcher import LaunchError
from agent.runtime.supervisor import Supervisor, SupervisorReport
from agent.runtime.topology import lossless_roles
from replay.driver import drive
from replay.pipeline import Encodings, Refinements, build_brain, build_stream, save_stream_log, train_encoders


def lost_stimuli(run: RunFolder, total: int) -> int:
    """Stimuli of the stream the final brain did not learn: the cortices' step counters
    plus the stimuli they refused must add up to the stream length."""
    step, state = run.load_checkpoint()
    learned = sum(int(part(state, cortex_part(m))["scalars"][0]) for m in run.config().modalities)
    return int(total - learned - int(state["rejected"])) if step >= total else int(total - learned)


def prepare_distributed(config, out: Path | str, *, progress: bool = True, overwrite: bool = False):
    """A run folder ready for the runtime: config, encoders, encodings, checkpoint 0.

    Returns (run, stream, seconds spent on the encoders).
    """
    t0 = time.perf_counter()
    with new_run(config, out, overwrite) as run:  # an old run there is deleted once this has started
        enc = train_encoders(config, run, progress)
        stream = build_stream(config, enc)
    run.save_checkpoint(0, build_brain(config, enc, stream).state_dict())
    return run, stream, time.perf_counter() - t0


class Processes:
    """The runtime's processes learn each segment: bus, hub, a worker per sense and the player,
    started from the run's checkpoint and supervised until every part of the segment's end is saved;
    the refinement runs here, on the brain that checkpoint holds."""

    def __init__(self, run: RunFolder, stream, phases: Refinements, *, on_start: Callable[[Supervisor], None] | None,
                 bus: str | None, checkpoint_every: int, speed: float, window: int, progress: bool, secure: bool):
        self.run, self.stream, self.phases = run, stream, phases
        self.on_start, self.bus, self.secure, self.progress = on_start, bus, secure, progress
        self.checkpoint_every, self.speed, self.window = checkpoint_every, speed, window
        self.report = SupervisorReport()

    def learn(self, lo: int, hi: int) -> None:
        config = self.run.config()
        roles = lossless_roles(self.run.path, config.modalities, total=hi, checkpoint_every=self.checkpoint_every,
                               window=self.window, speed=self.speed)
        sup = Supervisor(self.run, roles, lossless=True, bus=self.bus, secure=self.secure)
        try:
            sup.start()
            if self.on_start is not None:
                self.on_start(sup)
            part = sup.supervise_lossless(hi, self.progress)
        finally:
            sup.stop(grace_s=3.0)
        self.report.restarts += part.restarts
        self.report.wall_s += part.wall_s

    def refine(self, step: int) -> None:
        """Refine the brain saved at `step` and save it again there (with the processes' own keys)."""
        t0 = time.perf_counter()
        config = self.run.config()
        enc = Encodings.load(self.run, config.modalities)
        brain = Brain(config, {m: enc.train[m].shape[1] for m in config.modalities}, {m: 1 for m in config.modalities})
        with self.run.restoring() as (at, state):
            if at != step:
                raise LaunchError(f"expected the checkpoint at stimulus {step} before refining, found {at}")
            brain.load_state_dict(state)
        if self.phases.due(brain, step):
            self.phases.apply(brain, enc.train, enc, step)
        self.run.save_checkpoint(step, {**state, **brain.state_dict()})
        self.report.refine_s += time.perf_counter() - t0

    def close(self) -> dict:
        """The stream log and what was lost, as `cdz train` leaves them."""
        step, state = self.run.load_checkpoint()
        if step < len(self.stream):
            raise LaunchError(f"the run stopped at stimulus {step} of {len(self.stream)}")
        save_stream_log(self.run, self.stream, [(state[LOG_CLUSTER], state[LOG_RECALLED])])
        lost = lost_stimuli(self.run, len(self.stream))
        self.run.log(f"distributed: {len(self.stream)} stimuli in {self.report.wall_s:.1f}s, lost {lost}, "
                     f"restarts {len(self.report.restarts)}")
        return {"rejected": int(state["rejected"]),
                "distributed": {"lost_stimuli": lost, "restarts": self.report.restarts,
                                "stream_wall_s": self.report.wall_s}}


def distributed_train(config, out: Path | str, *, progress: bool = True, overwrite: bool = False,
                      bus: str | None = None, checkpoint_every: int = 20_000, speed: float = 0.0,
                      window: int = 256) -> tuple[RunFolder, dict]:
    """Encoders in this process, then the stream through the runtime processes; returns the run and
    its `distributed` metrics (lost stimuli, restarts, the processes' own wall time)."""
    run, stream, encoders_s = prepare_distributed(config, out, progress=progress, overwrite=overwrite)
    metrics = learn_distributed(run, stream, encoders_s=encoders_s, bus=bus, checkpoint_every=checkpoint_every,
                                speed=speed, window=window, progress=progress)
    return run, metrics["distributed"]


def learn_distributed(run: RunFolder, stream, *, encoders_s: float = 0.0,
                      on_start: Callable[[Supervisor], None] | None = None, bus: str | None = None,
                      checkpoint_every: int = 20_000, speed: float = 0.0, window: int = 256, progress: bool = True,
                      secure: bool = True) -> dict:
    """The whole stream through the runtime processes, refining between segments (`replay.driver.drive`);
    returns the run's `train` metrics.

    `on_start` is called with each segment's supervisor once its children run. A bus of its
    own is keyed for the run (`secure=False`: not, for the benchmark's comparison).
    """
    phases = Refinements(run.config(), run, stream, from_files=True)
    learner = Processes(run, stream, phases, on_start=on_start, bus=bus, checkpoint_every=checkpoint_every,
                        speed=speed, window=window, progress=progress, secure=secure)
    return drive(run, stream, phases.points, learner, encoders_s=encoders_s)
