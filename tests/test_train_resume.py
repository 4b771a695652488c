"""A training run interrupted after a checkpoint resumes to exactly the state of an uninterrupted run."""

from __future__ import annotations

import numpy as np

from agent.core.checkpoint import RunFolder, load_arrays
from agent.core.config import Config, override
from replay.driver import train

TINY = ["data.digits=[0,1]", 'data.speakers=["jackson"]', "data.per_class=40", "data.test_per_class=5",
        "teacher.epochs=6", "cortex.initial_nodes=20", "senses.audio.encoder.arch=linear", "senses.visual.encoder.epochs=2", "senses.audio.encoder.code_dim=16",
        "senses.visual.encoder.code_dim=16", "refine.teach_min_steps=40"]


def test_resume_after_interruption_matches_an_uninterrupted_run(tmp_path, data_dir, monkeypatch):
    monkeypatch.setenv("CDZ_DATA_DIR", str(data_dir))
    config = override(Config(), TINY)
    whole = train(config, tmp_path / "whole", progress=False, checkpoint_every=150)
    _, final = whole.load_checkpoint()

    cut = train(config, tmp_path / "cut", progress=False, checkpoint_every=150)
    ckpts = cut.checkpoints_dir
    done = sorted(p for p in ckpts.iterdir() if p.is_dir())
    assert len(done) == 2  # the two newest are kept
    # simulate a crash just after the older checkpoint: the newer one never happened
    import shutil

    shutil.rmtree(done[-1])
    (ckpts / "LATEST").write_text(done[0].name + "\n")
    step_before, _ = cut.load_checkpoint()
    assert step_before < int(done[-1].name)

    resumed = train(None, tmp_path / "cut", progress=False, checkpoint_every=150, resume=True)
    _, again = RunFolder(resumed.path).load_checkpoint()
    assert final.keys() == again.keys()
    for key in final:
        np.testing.assert_array_equal(final[key], again[key], err_msg=key)
    log_whole, log_cut = load_arrays(whole.stream_path), load_arrays(resumed.stream_path)
    np.testing.assert_array_equal(log_whole["cluster"], log_cut["cluster"])


def test_a_held_out_speaker_is_tested_on_all_of_its_recordings(data_dir, monkeypatch):
    from replay.data.splits import load_splits

    monkeypatch.setenv("CDZ_DATA_DIR", str(data_dir))
    config = override(Config(), ["data.digits=[3,4]", 'data.exclude_speakers=["theo"]'])
    train_audio, test_audio = load_splits(config, "train")["audio"], load_splits(config, "test")["audio"]
    assert "theo" not in set(train_audio.speakers)
    assert set(test_audio.speakers) == {"theo"}
    assert len(test_audio) == 2 * 50  # both digits, every one of theo's 50 recordings of each
    assert len(train_audio) == 2 * 5 * 45  # the other five speakers' training recordings


def test_a_run_interrupted_between_refinements_redoes_them_exactly(tmp_path, data_dir, monkeypatch):
    """Crash after the first refinement and before the second: the resumed run refines again with
    the encoders of the right stage and ends exactly where an uninterrupted run ends."""
    import pytest

    import replay.driver as train_module

    monkeypatch.setenv("CDZ_DATA_DIR", str(data_dir))
    config = override(Config(), [*TINY, "refine.teach_min_steps=30"])
    whole = train(config, tmp_path / "whole", progress=False, checkpoint_every=300)
    _, final = whole.load_checkpoint()
    assert int(final["refinements"]) == len(config.refine.at)

    real = train_module.learn_stream

    def crash_after(lo_limit: int):
        def learn(brain, stream, codes, lo, hi, **kw):
            if lo >= lo_limit:
                raise KeyboardInterrupt
            return real(brain, stream, codes, lo, hi, **kw)
        return learn

    monkeypatch.setattr(train_module, "learn_stream", crash_after(600))
    with pytest.raises(KeyboardInterrupt):
        train(config, tmp_path / "cut", progress=False, checkpoint_every=300)
    monkeypatch.setattr(train_module, "learn_stream", real)
    step, state = RunFolder(tmp_path / "cut").load_checkpoint()
    assert step == 600 and int(state["refinements"]) == 1
    resumed = train(None, tmp_path / "cut", progress=False, checkpoint_every=300, resume=True)
    _, again = RunFolder(resumed.path).load_checkpoint()
    for key in final:
        np.testing.assert_array_equal(final[key], again[key], err_msg=key)
    np.testing.assert_array_equal(load_arrays(whole.encodings_path)["visual.test.z"],
                                  load_arrays(resumed.encodings_path)["visual.test.z"])
