"""`cdz bench robustness` on a tiny configuration: perturbations, held-out speaker runs, JSON contract."""

from __future__ import annotations

import json

import numpy as np
import pytest

from agent.core.config import Config, override
from tools.bench.robustness import distorted_test_images, noisy_test_sounds
from tools.cli import main

TINY = ["data.digits=[0,1]", "data.per_class=40", "data.test_per_class=5", "teacher.epochs=4",
        "cortex.initial_nodes=20", "senses.audio.encoder.arch=linear", "senses.visual.encoder.epochs=2", "senses.visual.encoder.batch_size=16",
        "refine.teach_min_steps=20"]


def test_noisy_sounds_are_seeded_and_noisier_at_lower_snr(data_dir):
    config = override(Config(), TINY)
    clean20, y = noisy_test_sounds(config, "white", 20, seed=1)
    again, _ = noisy_test_sounds(config, "white", 20, seed=1)
    loud5, _ = noisy_test_sounds(config, "white", 5, seed=1)
    babble, _ = noisy_test_sounds(config, "babble", 5, seed=1)
    assert clean20.shape == (len(y), 64, 64) and set(y.tolist()) == {0, 1}
    assert np.array_equal(clean20, again)
    assert 0.0 <= loud5.min() and loud5.max() <= 1.0
    # noise fills the quiet parts of the spectrogram: the mean level rises as the SNR falls
    assert loud5.mean() > clean20.mean()
    assert not np.array_equal(babble, loud5)


def test_distorted_images_keep_shape_and_range_and_change_the_digits(data_dir):
    config = override(Config(), TINY)
    x, y = distorted_test_images(config, seed=0)
    x2, _ = distorted_test_images(config, seed=0)
    assert x.shape == (len(y), 28, 28) and 0.0 <= x.min() and x.max() <= 1.0
    assert np.array_equal(x, x2)
    from replay.data.splits import load_splits

    clean = load_splits(config, "test")["visual"].x
    assert np.abs(x - clean).mean() > 0.02


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_bench_robustness_prints_the_json_contract(tmp_path, data_dir, capsys):
    args = ["bench", "robustness", "--json", "--quiet", "--out", str(tmp_path / "rob"), "--speakers", "theo"]
    for s in TINY:
        args += ["--set", s]
    assert main(args) == 0
    out = json.loads(capsys.readouterr().out)
    assert set(out["speaker_held_out"]["per_speaker"]) == {"theo"}
    assert set(out["noise"]) == {"white", "babble"} and set(out["noise"]["white"]) == {"20", "10", "5"}
    assert set(out["teacher_noise"]) == {"0.1", "0.2"}
    assert len(out["teacher_noise"]["0.1"]["classes"]) == 2
    for value in [*out["noise"]["white"].values(), *out["noise"]["babble"].values(),
                  out["distortion"]["visual->audio"], out["speaker_held_out"]["mean"]]:
        assert 0.0 <= value <= 1.0
    assert set(out["judge"]) >= {"speaker_held_out", "noise", "distortion", "teacher_noise"}
    assert (tmp_path / "rob" / "without-theo" / "config.toml").exists()
