"""`cdz train`: encoders first, then stream learning from the teacher, into a run folder.

Phases: load data -> train one autoencoder per modality -> encode train and test
sets -> build the teacher stream -> learn it stimulus by stimulus, with atomic
checkpoints -> save the stream log. Labels are stored beside the encodings for
the scorer; the learner never reads them.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from agent.core.brain import learn_stream
from agent.core.checkpoint import RunFolder, load_arrays, new_run
from agent.core.config import Config
from replay.pipeline import (Encodings, Refinements, build_brain, build_stream, recorded_stream, save_stream_log,
                            train_encoders)


def train(config: Config | None, out: Path | str, progress: bool = True, checkpoint_every: int = 100_000,
          resume: bool = False, overwrite: bool = False, recording: Path | str | None = None) -> RunFolder:
    """Run both phases into `out`; with `resume`, continue from the last checkpoint there
    (the config then comes from the run folder and `config` must be None). With `recording`,
    the stream is a recorded session (`cdz record`) instead of the teacher."""
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
        stream, learn_codes = build_stream(config, enc), enc.train
    else:
        with new_run(config, out, overwrite) as run:  # an old run there is deleted once this has started
            enc = train_encoders(config, run, progress)
            if recording is not None:
                stream, learn_codes, x_learn = recorded_stream(recording, config, run)
                run.log(f"learning from the recording {recording}: {len(stream)} stimuli")
            else:
                stream, learn_codes = build_stream(config, enc), enc.train
    t_enc = time.perf_counter() - t0
    brain = build_brain(config, enc, stream)
    start = 0
    if resume and run.latest_checkpoint() is not None:
        start, state = run.load_checkpoint()
        brain.load_state_dict(state)
        run.log(f"resumed at stimulus {start} of {len(stream)}")
    logs = []
    if resume and run.stream_path.exists() and start > 0:
        old = load_arrays(run.stream_path)
        pad = np.full(max(0, start - len(old["cluster"])), -1, np.int64)  # a crash between checkpoint and log
        logs.append((np.concatenate([old["cluster"][:start], pad]), np.concatenate([old["recalled"][:start], pad])))
    phases = Refinements(config, run, stream, recording is None, x_learn)
    if brain.refinements:  # resumed after a refinement: its encoders and encodings
        learn_codes, enc = phases.resume(brain.refinements, enc)
    t1 = time.perf_counter()
    t_refine = 0.0
    bar = tqdm(total=len(stream) - start, desc="stream learning", unit="stim", disable=not progress, mininterval=0.5)
    stops = sorted(set(range(start + checkpoint_every, len(stream), checkpoint_every)) | {len(stream)}
                   | {p for p in phases.points if p > start})
    lo = start
    for hi in stops:
        log = learn_stream(brain, stream, learn_codes, lo, hi, bar=bar)
        logs.append((log.cluster, log.recalled))
        lo = hi
        if phases.due(brain, hi):
            bar.set_description("refining")
            t0r = time.perf_counter()
            learn_codes, enc = phases.apply(brain, learn_codes, enc, hi)
            t_refine += time.perf_counter() - t0r
            bar.set_description("stream learning")
        run.save_checkpoint(hi, brain.state_dict())
        save_stream_log(run, stream, logs)
        bar.set_postfix_str(" ".join(f"{m}:{c.n_nodes}n/{c.n_clusters}c" for m, c in brain.cortices.items()))
    bar.close()
    t_stream = time.perf_counter() - t1
    if start >= len(stream):  # nothing left to learn: keep the existing log
        save_stream_log(run, stream, logs)
    run.update_metrics(train={
        "timing_s": {"encoders": t_enc, "stream": t_stream - t_refine, "refine": t_refine},
        "stimuli": len(stream) - start,
        "stream_stimuli_per_s": (len(stream) - start) / (t_stream - t_refine) if t_stream > t_refine else None,
        "rejected": brain.rejected,
        "nodes": {m: c.n_nodes for m, c in brain.cortices.items()},
        "clusters": {m: c.n_clusters for m, c in brain.cortices.items()},
        "counters": {m: vars(c.counters) for m, c in brain.cortices.items()},
    })
    run.log(f"trained: {len(stream)} stimuli, encoders {t_enc:.1f}s, stream {t_stream - t_refine:.1f}s, "
            f"refinement {t_refine:.1f}s")
    return run
