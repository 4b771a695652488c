"""Senses as declarations, and reward as a third sense (the teacher's rewards, scored by reward class)."""

from __future__ import annotations

from dataclasses import replace as dataclasses_replace

import numpy as np
import pytest
import torch

from agent.core.autoencoder import decode, encode, load_autoencoder, save_autoencoder, train_autoencoder
from agent.core.config import IDENTITY, REWARD, Config, SettingsError, TeacherSettings, from_dict, override
from replay.data.datasets import Split
from replay.data.senses import SENSES, SenseInfo, declare, reward_classes, sense
from replay.data.teacher import make_stream, with_rewards

REWARDS = "teacher.rewards=[1,0,0,0,0,0,0,2,0,0]"


def test_rewards_add_the_reward_sense_with_no_encoder():
    config = override(Config(), [REWARDS])
    assert config.modalities == ("visual", "audio", REWARD)
    assert config.encoder(REWARD) == IDENTITY
    assert config.encoder("audio").arch == "conv"
    with pytest.raises(SettingsError, match="one value per digit"):
        override(Config(), ["teacher.rewards=[1,2]"])
    with pytest.raises(SettingsError, match="needs teacher.rewards"):
        override(config, ["teacher.rewards=[]"])
    with pytest.raises(SettingsError, match="needs teacher.rewards"):
        from_dict(Config, {"modalities": ["visual", REWARD]})


def test_reward_classes_rank_the_distinct_rewards():
    config = override(Config(), [REWARDS])
    np.testing.assert_array_equal(reward_classes(config, np.arange(10)), [1, 0, 0, 0, 0, 0, 0, 2, 0, 0])
    assert reward_classes(config, np.array([-1]))[0] == -1  # a cluster without a name stays unnamed
    assert sense("visual").scored(config, np.array([7, 3])).tolist() == [7, 3]
    with pytest.raises(KeyError, match="no sense named 'smell'"):
        sense("smell")


def _labels(n: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"visual": rng.integers(0, 10, n), "audio": rng.integers(0, 10, n)}


@pytest.mark.parametrize("p_missing", [0.0, 0.3])
def test_rewards_join_the_stream_and_leave_the_other_senses_as_they_were(p_missing):
    settings = TeacherSettings(rewards=(1, 0, 0, 0, 0, 0, 0, 2, 0, 0), p_reward_missing=p_missing, p_unpaired=0.2)
    plain = make_stream(_labels(300, 1), settings, 2000, seed=4)
    reward_y = np.repeat(np.arange(10), 5)
    stream = with_rewards(plain, reward_y, settings, seed=4)
    assert stream.modalities == ("visual", "audio", REWARD)
    others = stream.modality < 2
    for name in ("t", "modality", "index", "event", "label"):
        np.testing.assert_array_equal(getattr(stream, name)[others], getattr(plain, name))
    assert np.all(np.diff(stream.t) >= 0)
    r = stream.modality == 2
    events = stream.event[r]
    assert len(np.unique(events)) == len(events)  # at most one reward per event
    assert abs(len(events) / 2000 - (1 - p_missing)) < 0.05
    shown = {int(e): int(lab) for e, lab in zip(plain.event[::-1], plain.label[::-1])}  # each event's first stimulus
    first_t = {int(e): float(t) for e, t in zip(plain.event[::-1], plain.t[::-1])}
    assert all(shown[int(e)] == int(lab) for e, lab in zip(events, stream.label[r]))
    assert np.array_equal(reward_y[stream.index[r]], stream.label[r])  # the reward row earned by that digit
    lag = stream.t[r] - np.array([first_t[int(e)] for e in events])
    assert lag.min() >= settings.lag_s[0] - 1e-9 and lag.max() <= settings.lag_s[1] + 1e-9


def test_identity_encoder_passes_any_finite_stimulus_through(tmp_path):
    x = np.array([[[2.0]], [[-0.5]], [[0.0]]], np.float32)  # rewards need not lie in [0, 1]
    model, info = train_autoencoder(x, IDENTITY, seed=0, progress=False)
    assert not model.learnable and model.code_dim == 1 and not list(model.parameters())
    z = encode(model, x)
    np.testing.assert_array_equal(z, x.reshape(3, 1))
    np.testing.assert_array_equal(decode(model, z), x)
    save_autoencoder(model, tmp_path / "reward.pt")
    again = load_autoencoder(tmp_path / "reward.pt")
    np.testing.assert_array_equal(encode(again, x), z)
    with pytest.raises(ValueError, match="NaN"):
        encode(model, np.full((1, 1, 1), np.nan, np.float32))


# --------------------------------------------------------------------------- a sense by declaration alone

CENTRES = {"touch": np.random.default_rng(11).normal(0, 3, (10, 1, 4)),
           "smell": np.random.default_rng(12).normal(0, 3, (10, 1, 3))}


def _fake_loader(name: str):
    def load(config: Config, split: str) -> Split:
        rng = np.random.default_rng([config.seed, len(name), split == "train"])
        per = 60 if split == "train" else 15
        y = np.repeat(np.array(config.data.digits, np.int64), per)
        x = CENTRES[name][y] + 0.2 * rng.standard_normal((len(y), *CENTRES[name].shape[1:]))
        return Split(name, torch.as_tensor(x).numpy().astype(np.float32), y, tuple(f"{name}/{i}" for i in range(len(y))))
    return load


@pytest.fixture
def fake_senses():
    added = [declare(SenseInfo(name, CENTRES[name].shape[1:], _fake_loader(name), rate_hz=5.0))
             for name in CENTRES]
    yield added
    for info in added:
        SENSES.pop(info.name, None)


def test_a_declared_sense_learns_and_recalls_with_no_other_code(tmp_path, fake_senses):
    """Two made-up senses (4 and 3 numbers per stimulus, no encoder) go through the whole
    pipeline: teacher, stream learning with refinement, checkpoint, scoring."""
    from replay.pipeline import load_brain
    from tools.scoring.evaluate import score
    from replay.driver import train

    config = override(Config(modalities=("touch", "smell")),
                      ["data.digits=[0,1,2,3]", "teacher.epochs=20", "cortex.initial_nodes=30", "refine.augment=false"])
    run = train(config, tmp_path / "run", progress=False)
    loaded = load_brain(run)
    scores = score(loaded.config, loaded.enc, loaded.brain)
    assert set(scores["recall_accuracy"]) == {"touch->smell", "smell->touch"}
    assert scores["recall_accuracy"]["touch->smell"] >= 0.95, scores["recall_accuracy"]
    assert scores["recall_accuracy"]["smell->touch"] >= 0.95, scores["recall_accuracy"]
    assert scores["classes_discovered"] == {"touch": 4, "smell": 4}


# --------------------------------------------------------------------------- reward, end to end

THREE = ["data.digits=[0,1,2]", 'data.speakers=["jackson"]', "data.per_class=40", "data.test_per_class=10",
         "teacher.epochs=8", "cortex.initial_nodes=20", "senses.audio.encoder.arch=linear", "senses.visual.encoder.epochs=2", "senses.visual.encoder.batch_size=16",
         "teacher.rewards=[1,0,0,0,0,0,0,0,0,0]"]  # 0 earns 1; 1 and 2 earn nothing


@pytest.fixture(scope="module")
def reward_run(tmp_path_factory, data_dir):
    from tests.runs import train_run

    return train_run(tmp_path_factory, data_dir, THREE, name="reward")


def test_rewards_are_recalled_from_images_and_words_and_recall_the_digits_that_earn_them(reward_run, tmp_path,
                                                                                      capsys):
    import json

    from agent.core.checkpoint import RunFolder
    from replay.pipeline import load_brain
    from replay.data.splits import load_splits
    from sensors.file_reading import write_png
    from tools.cli import main
    from tools.scoring.evaluate import score

    loaded = load_brain(RunFolder(reward_run))
    scores = score(loaded.config, loaded.enc, loaded.brain)
    acc = scores["recall_accuracy"]
    assert acc["visual->reward"] >= 0.9 and acc["audio->reward"] >= 0.9, acc
    assert scores["classes_discovered"]["reward"] == 2 and scores["true_classes"]["reward"] == 2
    zero = load_splits(loaded.config, "test")["visual"]
    write_png(tmp_path / "zero.png", zero.x[zero.y == 0][0])
    capsys.readouterr()
    code = main(["recall", "--run", str(reward_run), str(tmp_path / "zero.png"), "--reward", "0", "--json"])
    answers = json.loads(capsys.readouterr().out)
    assert code == 0
    image, reward = answers
    assert image["recalled"]["reward"]["value"] == [1.0]  # a 0 earns 1
    digits = {a["cluster_name"] for a in reward["recalled"]["visual"]["associates"]}
    assert {1, 2} <= digits and 0 not in digits, reward["recalled"]["visual"]  # nothing earns both


def test_a_split_one_pair_finds_is_counted_again_for_every_other_sense():
    """The merge rule sets the rows of the pair that found a split; with a third sense, its rows
    towards the split cluster (and the new half's rows back) are counted again from their
    co-occurrences, so the third sense follows the moved nodes (agent.core.refine.recount_other_senses)."""
    from agent.core.brain import Brain, learn_stream
    from agent.core.config import CortexSettings
    from agent.core.merges import Split
    from agent.core.pairs import cooccurring
    from agent.core.refine import recount_other_senses

    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(3), 50)
    centres = rng.normal(0, 5, (3, 2))
    codes = {"v": (centres[y] + rng.normal(0, 0.1, (150, 2))).astype(np.float32),
             "w": (-centres[y] + rng.normal(0, 0.1, (150, 2))).astype(np.float32),
             "r": np.array([0.0, 0.0, 2.0], np.float32)[y][:, None]}
    config = Config(modalities=("v", "w", "r"), cortex=CortexSettings(initial_nodes=3, max_nodes=50),
                    cdz=dataclasses_replace(Config().cdz, no_feedback_from=()))
    stream = make_stream({m: y for m in codes}, TeacherSettings(), 600, seed=1)
    brain = Brain(config, {"v": 2, "w": 2, "r": 1}, {m: 600 for m in codes})
    learn_stream(brain, stream, codes, progress=False)
    pairs = {(a, b): cooccurring(stream, a, b, 1.0) for a, b in (("v", "w"), ("v", "r"), ("w", "r"))}
    r = brain.cortices["r"]
    two = int(r.assign(codes["r"][y == 2][:1])[0][0])  # the node of reward 2 and its cluster
    old = int(r.assign(codes["r"][y == 2][:1])[1][0])
    w2 = int(brain.classify("w", codes["w"][y == 2][:1])[0])
    v2 = int(brain.classify("v", codes["v"][y == 2][:1])[0])
    assert brain.cdz.recall("w", w2)["r"] == old
    new = r.split_cluster(old, np.array([two]))  # as the merge rule would for the pair (v, r)
    for change in r.drain_changes():
        brain.cdz.apply(change)
    v_row = brain.cdz.W[("v", "r")].copy()
    recount_other_senses(brain, codes, pairs, [Split("r", old, new, 0.0, 0)], ("v", "r"))
    assert brain.cdz.recall("w", w2)["r"] == new  # the words follow the moved node
    assert brain.cdz.recall("r", new)["w"] == w2  # and the new half recalls them
    assert np.array_equal(brain.cdz.W[("v", "r")], v_row)  # the pair's own rows are the merge rule's business
    assert brain.cdz.recall("v", v2)["r"] == old  # (left as they were here, where no merge rule ran)
