"""`cdz replay --distributed`: encoders in this process, then the teaching stream through the
runtime's processes (bus, hub, a worker per sense, the player), supervised by
`agent.runtime.launcher.Supervisor`, with each refinement run here between segments by the same
code as `cdz train` (`replay.pipeline`). The run ends bit-identical to the in-process one.
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


def finish_distributed(run: RunFolder, stream, report: SupervisorReport, t_enc: float = 0.0) -> dict:
    """After the last checkpoint: the stream log and metrics, as `cdz train` leaves them."""
    step, state = run.load_checkpoint()
    if step < len(stream):
        raise LaunchError(f"the run stopped at stimulus {step} of {len(stream)}")
    save_stream_log(run, stream, [(state[LOG_CLUSTER], state[LOG_RECALLED])])
    lost = lost_stimuli(run, len(stream))
    info = {"lost_stimuli": lost, "restarts": report.restarts, "stream_wall_s": report.wall_s}
    run.update_metrics(train={
        "timing_s": {"encoders": t_enc, "stream": report.wall_s, "refine": report.refine_s},
        "stimuli": len(stream),
        "stream_stimuli_per_s": len(stream) / report.wall_s if report.wall_s > 0 else None,
        "rejected": int(state["rejected"]),
        "distributed": info,
    })
    run.log(f"distributed: {len(stream)} stimuli in {report.wall_s:.1f}s, lost {lost}, "
            f"restarts {len(report.restarts)}")
    return info


def distributed_train(config, out: Path | str, *, progress: bool = True, overwrite: bool = False,
                      bus: str | None = None, checkpoint_every: int = 20_000, speed: float = 0.0,
                      window: int = 256) -> tuple[RunFolder, dict]:
    """Encoders in this process, then the stream through the runtime processes."""
    run, stream, t_enc = prepare_distributed(config, out, progress=progress, overwrite=overwrite)
    report = learn_distributed(run, stream, bus=bus, checkpoint_every=checkpoint_every, speed=speed, window=window,
                               progress=progress)
    return run, finish_distributed(run, stream, report, t_enc)


def learn_distributed(run: RunFolder, stream, *, on_start: Callable[[Supervisor], None] | None = None,
                      bus: str | None = None, checkpoint_every: int = 20_000, speed: float = 0.0, window: int = 256,
                      progress: bool = True, secure: bool = True) -> SupervisorReport:
    """The whole stream through the runtime processes, refining between segments.

    At each refinement point (`refine.at`) the processes stop at that stream position,
    the refinement runs here with the same code as `cdz train` (`replay.pipeline.Refinements`),
    and the processes start again from its checkpoint with the new encoders.
    `on_start` is called with each segment's supervisor once its children run. A bus of its
    own is keyed for the run (`secure=False`: not, for the benchmark's comparison).
    """
    config = run.config()
    phases = Refinements(config, run, stream, from_files=True)
    report = SupervisorReport()
    for end in [p for p in phases.points if 0 < p < len(stream)] + [len(stream)]:
        roles = lossless_roles(run.path, config.modalities, total=end, checkpoint_every=checkpoint_every,
                               window=window, speed=speed)
        sup = Supervisor(run, roles, lossless=True, bus=bus, secure=secure)
        try:
            sup.start()
            if on_start is not None:
                on_start(sup)
            part = sup.supervise_lossless(end, progress)
        finally:
            sup.stop(grace_s=3.0)
        report.restarts += part.restarts
        report.wall_s += part.wall_s
        if end < len(stream):
            t0 = time.perf_counter()
            _refine_between(run, phases, end, Encodings.load(run, config.modalities))
            report.refine_s += time.perf_counter() - t0
    return report


def _refine_between(run: RunFolder, phases, step: int, enc) -> None:
    """Refine the brain saved at `step` and save it again there (with the processes' own keys)."""
    config = run.config()
    brain = Brain(config, {m: enc.train[m].shape[1] for m in config.modalities}, {m: 1 for m in config.modalities})
    with run.restoring() as (at, state):
        if at != step:
            raise LaunchError(f"expected the checkpoint at stimulus {step} before refining, found {at}")
        brain.load_state_dict(state)
    if phases.due(brain, step):
        phases.apply(brain, enc.train, enc, step)
    run.save_checkpoint(step, {**state, **brain.state_dict()})
