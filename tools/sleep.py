"""`cdz sleep --run RUN`: consolidate a run's buffered live experience into its encoders.

Reads the experience the workers saved with the newest checkpoint, sleeps
(`agent.core.sleep`), and writes the result as the run's next stage: new encoders
(`encoders/<m>.stage<k>.pt` and `<m>.pt`), the relocated nodes in a checkpoint
at the same step, and fresh encodings for scoring. The experience stays in the
checkpoint. Stop `cdz live` on the run first; `cdz live --sleep-every` sleeps
while it runs.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from agent.core.autoencoder import encode, load_autoencoder, save_autoencoder
from agent.core.checkpoint import RunFolder, experience_part
from agent.core.config import sleep_override
from agent.core.experience import Experience
from agent.core.session_mean import lived_as_heard
from agent.core.sleep import SleepReport, sleep
from agent.core.storage import save_arrays
from replay.pipeline import Encodings, load_brain, test_encodings
from replay.data.senses import lived_augmenters
from replay.data.splits import load_splits_x


def experience_of(state: dict[str, np.ndarray], shapes: dict[str, tuple[int, ...]],
                  capacity: int) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per sense (stimuli, event times in ns) from a checkpoint's `experience.<m>.*` arrays (empty if
    none), read as a worker reads its buffer: a damaged one is a StateError, never slept on."""
    out = {}
    for m, shape in shapes.items():
        buffer = Experience(shape, capacity)
        buffer.load_state_dict(state, experience_part(m))
        out[m] = buffer.arrays()
    return out


def sleep_run(run: RunFolder, assignments: list[str] | None = None) -> tuple[SleepReport, dict[str, Any]]:
    """Sleep on the run's buffered experience and save the next stage. NothingToLearn changes nothing."""
    config = sleep_override(run.config(), assignments or [])
    mods = config.modalities
    models = {m: load_autoencoder(run.encoder_path(m)) for m in mods}
    with run.restoring() as (step, state):  # read once: the brain and the experience come from the same cut
        loaded = load_brain(run, (step, state))
        brain = loaded.brain
        lived = experience_of(state, {m: models[m].input_shape for m in mods}, config.sleep.buffer)
    lived = {m: (lived_as_heard(x, models[m], config.sense(m), config.sleep.settle), t) for m, (x, t) in lived.items()}
    old = load_splits_x(config, "train") if config.sleep.replay == "stimuli" else None
    report = sleep(brain, models, lived, config.sleep, seed=config.seed * 100 + brain.refinements,
                   old_stimuli=old, augment=lived_augmenters(mods))
    brain.refinements += 1
    for m, model in models.items():
        save_autoencoder(model, run.stage_encoder_path(m, brain.refinements))
        save_autoencoder(model, run.encoder_path(m))
    run.save_checkpoint(step, {**state, **brain.state_dict()})
    if old is not None:  # fresh encodings for scoring (`cdz eval`)
        x_test = load_splits_x(config, "test")
        enc = Encodings({m: encode(models[m], old[m]) for m in mods}, loaded.enc.train_y,
                        {m: test_encodings(config, m, models[m], x_test[m]) for m in mods}, loaded.enc.test_y)
        save_arrays(run.encodings_path, enc.arrays())
    run.log(f"sleep {brain.refinements} at stimulus {step}: {report.summary()}")
    info = {"step": step, "stage": brain.refinements, "seconds": report.seconds, "pairs": report.pairs,
            "experience": report.experience, "replayed": report.replayed, "followed": report.followed,
            "at": time.strftime("%Y-%m-%dT%H:%M:%S")}
    run.update_metrics(sleep=info)
    return report, info
