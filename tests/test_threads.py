"""Senses trained at once stop together: a failure or a stop does not wait minutes for the other."""

from __future__ import annotations

import time
from functools import partial

import numpy as np
import pytest

from agent.core.autoencoder import train_autoencoder
from agent.core.config import AutoencoderSettings
from agent.core.threads import at_once


def _fails_soon() -> None:
    time.sleep(0.5)
    raise KeyboardInterrupt  # as a Ctrl-C, or any error of one sense's job


@pytest.mark.timeout(60)
def test_one_failing_job_stops_the_others_at_their_next_step():
    x = np.random.default_rng(0).random((64, 8, 8)).astype(np.float32)
    settings = AutoencoderSettings(arch="mlp", code_dim=4, epochs=10_000, batch_size=8)  # hours, if left to run
    t0 = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        at_once({"long": partial(train_autoencoder, x, settings, seed=0, progress=False), "short": _fails_soon})
    assert time.monotonic() - t0 < 30  # it stopped, rather than finishing 80,000 steps


def test_jobs_give_their_results_by_name():
    assert at_once({"a": lambda: 1, "b": lambda: 2}) == {"a": 1, "b": 2}
