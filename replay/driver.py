"""One driver of a run's stream, whether this process learns it or the runtime's processes do.

A run learns its teaching stream in segments: from the start (or a resumed checkpoint) to
each refinement point (`refine.at`), the refinement there (`agent.core.refine`), and on to
the end. `drive` walks those segments and writes the run's timing and metrics, once. What
learns a segment is a `Learner`:

* `InProcess`: the brain here, stimulus by stimulus (`agent.core.brain.learn_stream`),
  with a checkpoint and the stream log every `checkpoint_every` stimuli (`cdz train`,
  `cdz replay`);
* `replay.distributed.Processes`: bus, hub, a worker per sense and the player, started
  for each segment (`cdz replay --distributed`).

Both leave a checkpoint at every segment's end and refine with the same code
(`replay.pipeline.Refinements`), so the two runs end bit-identical.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from tqdm import tqdm

from agent.core.brain import Brain, learn_stream
from agent.core.checkpoint import RunFolder, load_arrays, new_run
from agent.core.config import Config
from agent.core.stream import Stream
from replay.pipeline import (Encodings, Refinements, build_brain, build_stream, recorded_stream, save_stream_log,
                             train_encoders)


class Learner(Protocol):
    def learn(self, lo: int, hi: int) -> None:
        """Learn stimuli [lo, hi) of the stream and leave a checkpoint at `hi` (where a refinement is
        due at `hi`, `refine` may leave it instead)."""

    def refine(self, step: int) -> None:
        """The refinement due at `step`, if one is (a resumed run may have made it), saved at `step`."""

    def close(self) -> dict:
        """After the last segment: metrics of its own (refused stimuli, nodes, losses)."""


def drive(run: RunFolder, stream: Stream, points: list[int], learner: Learner, start: int = 0,
          encoders_s: float = 0.0) -> dict:
    """Learn the stream from `start` to its end through `learner`, refining at `points`; returns
    (and saves as the run's `train` metrics) the timing and what the learner reports."""
    t0 = time.perf_counter()
    refine_s, lo = 0.0, start
    for end in [p for p in points if start <= p < len(stream)] + [len(stream)]:
        if lo < end:
            learner.learn(lo, end)
        lo = end
        if end < len(stream):
            t1 = time.perf_counter()
            learner.refine(end)
            refine_s += time.perf_counter() - t1
    stream_s = time.perf_counter() - t0 - refine_s
    learned = max(0, len(stream) - start)
    metrics = {"timing_s": {"encoders": encoders_s, "stream": stream_s, "refine": refine_s}, "stimuli": learned,
               "stream_stimuli_per_s": learned / stream_s if learned and stream_s > 0 else None, **learner.close()}
    run.update_metrics(train=metrics)
    run.log(f"trained: {len(stream)} stimuli, encoders {encoders_s:.1f}s, stream {stream_s:.1f}s, "
            f"refinement {refine_s:.1f}s")
    return metrics


class InProcess:
    """The brain in this process learns each segment; a checkpoint and the stream log every
    `checkpoint_every` stimuli, so a stopped run resumes (`cdz train --resume`)."""

    def __init__(self, run: RunFolder, stream: Stream, phases: Refinements, brain: Brain, codes: dict[str, np.ndarray],
                 enc: Encodings, *, start: int, logs: list, checkpoint_every: int, progress: bool):
        self.run, self.stream, self.phases, self.brain = run, stream, phases, brain
        self.codes, self.enc, self.logs = codes, enc, logs
        self.checkpoint_every, self.start = checkpoint_every, start
        self.bar = tqdm(total=max(0, len(stream) - start), desc="stream learning", unit="stim", disable=not progress,
                        mininterval=0.5)

    def learn(self, lo: int, hi: int) -> None:
        every = self.checkpoint_every  # on one grid from the run's start, whatever the segments
        for stop in [*range(self.start + ((lo - self.start) // every + 1) * every, hi, every), hi]:
            log = learn_stream(self.brain, self.stream, self.codes, lo, stop, bar=self.bar)
            self.logs.append((log.cluster, log.recalled))
            if not (stop == hi and self.phases.due(self.brain, hi)):  # a refinement there saves it once, refined
                self._save(stop)
            lo = stop

    def refine(self, step: int) -> None:
        if not self.phases.due(self.brain, step):
            return
        self.bar.set_description("refining")
        self.codes, self.enc = self.phases.apply(self.brain, self.codes, self.enc, step)
        self._save(step)
        self.bar.set_description("stream learning")

    def _save(self, step: int) -> None:
        self.run.save_checkpoint(step, self.brain.state_dict())
        save_stream_log(self.run, self.stream, self.logs)
        self.bar.set_postfix_str(" ".join(f"{m}:{c.n_nodes}n/{c.n_clusters}c" for m, c in self.brain.cortices.items()))

    def close(self) -> dict:
        self.bar.close()
        if self.start >= len(self.stream):  # nothing was left to learn: keep the existing log
            save_stream_log(self.run, self.stream, self.logs)
        cortices = self.brain.cortices
        return {"rejected": self.brain.rejected, "nodes": {m: c.n_nodes for m, c in cortices.items()},
                "clusters": {m: c.n_clusters for m, c in cortices.items()},
                "counters": {m: vars(c.counters) for m, c in cortices.items()}}


def train(config: Config | None, out: Path | str, progress: bool = True, checkpoint_every: int = 100_000,
          resume: bool = False, overwrite: bool = False, recording: Path | str | None = None) -> RunFolder:
    """Encoders, then the stream in this process, into the run folder `out`; with `resume`, go on
    from its last checkpoint (the config then comes from the folder and `config` must be None).
    With `recording`, the stream is a recorded session (`cdz record`) instead of the teacher."""
    if resume and recording is not None:
        raise ValueError("a run learned from a recording cannot be resumed; start it again")
    if resume:
        if config is not None:
            raise ValueError("a resumed run keeps the config saved in its folder; do not pass another")
        run = RunFolder(out)
        config = run.config()
    elif config is None:
        raise ValueError("train needs a config (or resume=True with an existing run folder)")
    torch.manual_seed(config.seed)
    t0 = time.perf_counter()
    x_learn: dict[str, np.ndarray] | None = None  # raw stimuli of the stream's rows, for refinement
    if resume:
        enc = Encodings.load(run, config.modalities) if run.encodings_path.exists() else train_encoders(config, run, progress)
        stream, codes = build_stream(config, enc), enc.train
    else:
        with new_run(config, out, overwrite) as run:  # an old run there is deleted once this has started
            enc = train_encoders(config, run, progress)
            if recording is not None:
                stream, codes, x_learn = recorded_stream(recording, config, run)
                run.log(f"learning from the recording {recording}: {len(stream)} stimuli")
            else:
                stream, codes = build_stream(config, enc), enc.train
    encoders_s = time.perf_counter() - t0
    brain = build_brain(config, enc, stream)
    start, logs = 0, []
    if resume and run.latest_checkpoint() is not None:
        start, state = run.load_checkpoint()
        brain.load_state_dict(state)
        run.log(f"resumed at stimulus {start} of {len(stream)}")
    if resume and run.stream_path.exists() and start > 0:
        old = load_arrays(run.stream_path)
        pad = np.full(max(0, start - len(old["cluster"])), -1, np.int64)  # a crash between checkpoint and log
        logs.append((np.concatenate([old["cluster"][:start], pad]), np.concatenate([old["recalled"][:start], pad])))
    phases = Refinements(config, run, stream, recording is None, x_learn)
    if brain.refinements:  # resumed after a refinement: its encoders and encodings
        codes, enc = phases.resume(brain.refinements, enc)
    learner = InProcess(run, stream, phases, brain, codes, enc, start=start, logs=logs,
                        checkpoint_every=checkpoint_every, progress=progress)
    drive(run, stream, phases.points, learner, start, encoders_s)
    return run
