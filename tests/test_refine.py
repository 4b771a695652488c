"""Refinement phases: co-occurring pairs, the merge rule, cross-modal teaching, augmentation.

Small synthetic cases with known answers: a planted merge must be split and a
true class must not; teaching must pull encodings towards the prototype the
other sense names; nothing may depend on a label.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from agent.core.autoencoder import build_autoencoder, encode
from agent.core.brain import Brain
from agent.core.config import AutoencoderSettings, Config, CortexSettings, RefineSettings, override
from agent.core.merges import MergeSettings, best_cut, split_merges
from agent.core.pairs import cooccurring
from agent.core.refine import refine
from agent.core.teaching import follow_nodes, soft_targets, teach_at_once, teach_encoder
from agent.core.stream import Stream


def _stream(t_visual: np.ndarray, t_audio: np.ndarray, rows_visual: np.ndarray, rows_audio: np.ndarray,
            labels: np.ndarray | None = None) -> Stream:
    t = np.concatenate([t_visual, t_audio])
    mod = np.concatenate([np.zeros(len(t_visual), np.int64), np.ones(len(t_audio), np.int64)])
    idx = np.concatenate([rows_visual, rows_audio]).astype(np.int64)
    order = np.argsort(t, kind="stable")
    label = np.zeros(len(t), np.int64) if labels is None else labels
    return Stream(("visual", "audio"), t[order], mod[order], idx[order], np.arange(len(t)), label[order])


# ---------------------------------------------------------------------------------------- pairs
def test_cooccurring_pairs_exactly_the_stimuli_within_the_window():
    s = _stream(np.array([0.0, 10.0, 20.0]), np.array([0.4, 10.9, 21.5, 30.0]),
                np.array([5, 6, 7]), np.array([50, 60, 70, 80]))
    a, b = cooccurring(s, "visual", "audio", 1.0)
    assert sorted(zip(a.tolist(), b.tolist())) == [(5, 50), (6, 60)]
    a, b = cooccurring(s, "visual", "audio", 2.0)
    assert sorted(zip(a.tolist(), b.tolist())) == [(5, 50), (6, 60), (7, 70)]
    a, b = cooccurring(s, "visual", "audio", 2.0, lo=0, hi=3)  # only the first three stimuli in time
    assert sorted(zip(a.tolist(), b.tolist())) == [(5, 50)]


# ---------------------------------------------------------------------------------------- the cut
def test_best_cut_finds_two_blocks_and_not_one_random_class():
    rng = np.random.default_rng(0)
    # two classes: rows 0-19 pair only with cols 0-9, rows 20-39 only with cols 10-19
    cls = rng.integers(0, 2, 3000)
    rows = cls * 20 + rng.integers(0, 20, 3000)
    cols = cls * 10 + rng.integers(0, 10, 3000)
    phi, r_ids, r_side, c_ids, c_side = best_cut(rows, cols, 0.1)
    assert phi < 0.05
    assert len(set(r_side[r_ids < 20])) == 1 and len(set(r_side[r_ids >= 20])) == 1
    assert r_side[0] != r_side[-1] and c_side[0] != c_side[-1]
    # one class: any row with any col
    phi_one = best_cut(rng.integers(0, 40, 3000), rng.integers(0, 20, 3000), 0.1)[0]
    assert phi_one > 0.6


# ---------------------------------------------------------------------------------------- merge rule
def _planted_merge_brain(seed: int = 0):
    """Two digits per sense, each sense's nodes all in ONE cluster, CDZ linking the two clusters."""
    rng = np.random.default_rng(seed)
    config = override(Config(), ["cortex.initial_nodes=8", "cdz.window_s=1.0"])
    brain = Brain(config, {"visual": 2, "audio": 2}, {"visual": 1000, "audio": 1000})
    centres = {"visual": np.array([[0, 0], [10, 0]], np.float32), "audio": np.array([[0, 0], [0, 10]], np.float32)}
    codes = {}
    for m, cortex in brain.cortices.items():
        for k in range(8):  # 4 nodes around each digit's centre
            cortex.excite(centres[m][k // 4] + rng.normal(0, 1, 2).astype(np.float32), t=float(k))
        cortex.drain_changes()
        ids = cortex.alive_cluster_ids()
        keep = int(ids[0])
        for nid in list(cortex.node_slot):  # plant the merge: every node belongs to the first cluster
            slot = cortex.node_slot[nid]
            cortex.link[slot, : cortex.c_hi] = 0.0
            cortex.link[slot, cortex.cluster_slot[keep]] = 1.0
        for cid in ids[1:]:
            cortex._delete_clusters(np.array([cortex.cluster_slot[int(cid)]]))
        cortex.drain_changes()  # the CDZ never saw the deleted clusters; set_row registers the kept one
        digit = np.repeat([0, 1], 200)
        codes[m] = (centres[m][digit] + rng.normal(0, 1, (400, 2))).astype(np.float32)
    brain.cdz.set_row("visual", 0, "audio", {0: 1.0}, 50)
    brain.cdz.set_row("audio", 0, "visual", {0: 1.0}, 50)
    return brain, codes


def test_the_merge_rule_splits_a_planted_merge_in_both_senses():
    brain, codes = _planted_merge_brain()
    rng = np.random.default_rng(1)
    digit = rng.integers(0, 2, 2000)  # each event shows and says the same digit
    rows_v = digit * 200 + rng.integers(0, 200, 2000)
    rows_a = digit * 200 + rng.integers(0, 200, 2000)
    assert {m: c.n_clusters for m, c in brain.cortices.items()} == {"visual": 1, "audio": 1}
    splits = split_merges(brain, codes, "visual", "audio", rows_v, rows_a, MergeSettings())
    assert {s.modality for s in splits} == {"visual", "audio"}
    for m in ("visual", "audio"):
        clusters = brain.classify(m, codes[m])
        assert len(np.unique(clusters)) == 2
        assert len(np.unique(clusters[:200])) == 1 and len(np.unique(clusters[200:])) == 1  # digit = cluster
    # and the CDZ now links digit to digit
    rv = brain.recall("visual", codes["visual"][[0, 399]])[1]["audio"]
    ca = brain.classify("audio", codes["audio"][[0, 399]])
    assert rv.tolist() == ca.tolist()


def test_the_merge_rule_leaves_a_class_alone_when_the_senses_pair_at_random():
    brain, codes = _planted_merge_brain()
    rng = np.random.default_rng(2)
    rows_v, rows_a = rng.integers(0, 400, 2000), rng.integers(0, 400, 2000)  # no digit carries over
    before = copy.deepcopy(brain.state_dict())
    assert split_merges(brain, codes, "visual", "audio", rows_v, rows_a, MergeSettings()) == []
    after = brain.state_dict()
    assert all(np.array_equal(before[k], after[k]) for k in before)


# ---------------------------------------------------------------------------------------- teaching
def _two_blob_images(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(n, 8, 8) images in [0, 1]: a bright bar at a random row (the nuisance that dominates
    reconstruction) and a faint class signal, a column at 1 or at 6."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    x = rng.uniform(0, 0.2, (n, 8, 8)).astype(np.float32)
    x[np.arange(n), rng.integers(0, 8, n), :] += 0.7
    x[y == 0, :, 1] += 0.15
    x[y == 1, :, 6] += 0.15
    return np.clip(x, 0, 1), y


def _separation(z: np.ndarray, y: np.ndarray) -> float:
    """Between-class distance of the means over the mean within-class spread."""
    mu = np.stack([z[y == k].mean(0) for k in (0, 1)])
    spread = np.mean([np.linalg.norm(z[y == k] - mu[k], axis=1).mean() for k in (0, 1)])
    return float(np.linalg.norm(mu[0] - mu[1]) / spread)


def test_teaching_pulls_encodings_towards_the_cluster_the_other_sense_names():
    torch.manual_seed(0)
    x, y = _two_blob_images(600, 0)
    model = build_autoencoder((8, 8), AutoencoderSettings(arch="mlp", code_dim=4, batch_size=32))
    rows = np.arange(len(x))
    soft = np.eye(2, dtype=np.float32)[y]  # what the other sense says: the class, via the CDZ
    before = _separation(encode(model, x), y)
    teach_encoder(model, x, rows, soft, weight=1.0, epochs=1, min_steps=300, lr=3e-3, batch_size=32, seed=0,
                  sharpness=10.0)
    after = _separation(encode(model, x), y)
    assert after > 4 * before
    # reconstruction alone spends the code on the nuisance and does not separate the classes
    torch.manual_seed(0)
    plain = build_autoencoder((8, 8), AutoencoderSettings(arch="mlp", code_dim=4, batch_size=32))
    teach_encoder(plain, x, rows, soft, weight=0.0, epochs=1, min_steps=300, lr=3e-3, batch_size=32, seed=0)
    assert after > 10 * _separation(encode(plain, x), y)


def test_agreement_pulls_two_augmented_copies_of_a_stimulus_together():
    """With `agree`, the encodings of two differently augmented copies of the same stimulus end
    closer together than teaching without it leaves them (no label is involved)."""
    x, y = _two_blob_images(300, 2)
    soft = np.eye(2, dtype=np.float32)[y]

    def augment(rows: np.ndarray, seed: int) -> np.ndarray:  # a nuisance no label explains: noise and a shift
        rng = np.random.default_rng(seed)
        shifted = np.roll(x[rows], int(rng.integers(-1, 2)), axis=2)
        return np.clip(shifted + rng.normal(0, 0.15, shifted.shape), 0, 1).astype(np.float32)

    gaps = {}
    for agree in (0.0, 3.0):
        torch.manual_seed(0)
        model = build_autoencoder((8, 8), AutoencoderSettings(arch="linear", code_dim=4, batch_size=32))
        teach_encoder(model, x, np.arange(300), soft, weight=0.3, epochs=1, min_steps=300, lr=3e-3, batch_size=32,
                      seed=0, augment=augment, sharpness=10.0, agree=agree)
        a, b = encode(model, augment(np.arange(300), 101)), encode(model, augment(np.arange(300), 202))
        gaps[agree] = float(((a - b) ** 2).sum(1).mean() / _spread(encode(model, x)))
    assert gaps[3.0] < 0.8 * gaps[0.0], gaps  # measured: 0.71 against 0.95


def _spread(z: np.ndarray) -> float:
    return float(((z - z.mean(0)) ** 2).sum(1).mean())


def test_teaching_is_deterministic_for_a_seed():
    x, y = _two_blob_images(200, 1)
    soft = np.eye(2, dtype=np.float32)[y]
    out = []
    for _ in range(2):
        torch.manual_seed(3)
        model = build_autoencoder((8, 8), AutoencoderSettings(arch="linear", code_dim=4, batch_size=32))
        teach_encoder(model, x, np.arange(200), soft, weight=1.0, epochs=2, min_steps=0, lr=1e-3, batch_size=32,
                      seed=5)
        out.append(encode(model, x))
    assert np.array_equal(out[0], out[1])


def test_senses_taught_at_once_get_the_bits_of_one_after_the_other():
    """`refine` teaches the senses in threads; both augment through torch's global generator
    (kornia), which only the lock in `agent.core.global_rng` keeps apart."""
    from replay.data.augment import ImageAugmenter

    rng = np.random.default_rng(2)
    x = rng.random((256, 28, 28), dtype=np.float32)
    soft = np.eye(3, dtype=np.float32)[rng.integers(0, 3, len(x))]
    images = ImageAugmenter()

    def job(k: int):
        torch.manual_seed(k)
        model = build_autoencoder((28, 28), AutoencoderSettings(code_dim=8, channels=4, batch_size=32))
        augment = lambda rows, seed: images(torch.from_numpy(x[rows]), seed)  # noqa: E731
        run = lambda: teach_encoder(model, x, np.arange(len(x)), soft, weight=1.0, epochs=3, min_steps=0,  # noqa: E731
                                    lr=1e-3, batch_size=32, seed=k, augment=augment)
        return model, run

    alone = []
    for k in range(2):
        model, run = job(k)
        run()
        alone.append(model)
    jobs = {k: job(k) for k in range(2)}
    teach_at_once({k: run for k, (_, run) in jobs.items()})
    for k, a in enumerate(alone):
        for (name, p), q in zip(a.state_dict().items(), jobs[k][0].state_dict().values()):
            assert torch.equal(p, q), (k, name)


def test_a_sense_is_taught_for_its_share_of_the_steps():
    brain, codes = _planted_merge_brain()
    brain.config = override(brain.config, ["senses.audio.teach_steps_scale=2.5"])
    rng = np.random.default_rng(3)
    digit = rng.integers(0, 2, 400)
    rows = digit * 200 + rng.integers(0, 200, 400)
    t = np.arange(400) * 2.0
    stream = _stream(t, t + 0.3, rows, rows)
    torch.manual_seed(0)
    models = {m: build_autoencoder((1, 2), AutoencoderSettings(arch="linear", code_dim=2, batch_size=400))
              for m in codes}
    x = {m: c.reshape(-1, 1, 2).clip(0, 1) for m, c in codes.items()}
    codes_in = {m: encode(models[m], x[m]) for m in codes}
    _, report = refine(brain, models, x, codes_in, stream, len(stream),
                       RefineSettings(teach_min_steps=20, augment=False, merge_conductance=0.0), seed=1)
    assert report.taught["visual"]["steps"] == 20 and report.taught["audio"]["steps"] == 50


def test_soft_targets_count_what_the_partners_recall():
    brain, codes = _planted_merge_brain()
    rows_a = np.array([0, 0, 0, 5])
    rows_b = np.array([0, 1, 2, 3])
    rows, ids, soft = soft_targets(brain, codes, "visual", "audio", rows_a, rows_b)
    assert rows.tolist() == [0, 5] and ids.tolist() == [0]
    assert np.allclose(soft, 1.0)


def test_nodes_follow_their_stimuli_into_the_new_encoding_space():
    brain, codes = _planted_merge_brain()
    cortex = brain.cortices["visual"]
    ids_before = sorted(cortex.node_slot)
    links_before = cortex.link.copy()
    shifted = codes["visual"] * 2.0 + 5.0  # an encoder that changed: every encoding moved
    model = build_autoencoder((1, 2), AutoencoderSettings(arch="linear", code_dim=2))
    moved = follow_nodes(cortex, codes["visual"], shifted, model, model)
    assert moved >= 1
    nodes_before, _ = cortex.assign(shifted)
    assert sorted(cortex.node_slot) == ids_before and np.array_equal(cortex.link, links_before)
    # each stimulus still excites the node it excited before
    node_ids_old = brain.cortices["visual"].assign(shifted)[0]
    assert np.array_equal(nodes_before, node_ids_old)


# ---------------------------------------------------------------------------------------- no labels
def test_refinement_reads_no_label():
    """Shuffling the labels carried beside the stream changes nothing that is learned."""
    results = []
    for shuffle in (False, True):
        brain, codes = _planted_merge_brain()
        rng = np.random.default_rng(4)
        digit = rng.integers(0, 2, 600)
        rows_v = digit * 200 + rng.integers(0, 200, 600)
        rows_a = digit * 200 + rng.integers(0, 200, 600)
        t = np.arange(600) * 2.0
        labels = np.concatenate([digit, digit])
        if shuffle:
            labels = np.random.default_rng(9).permutation(labels)
        stream = _stream(t, t + 0.3, rows_v, rows_a, labels)
        torch.manual_seed(0)
        models = {m: build_autoencoder((1, 2), AutoencoderSettings(arch="linear", code_dim=2)) for m in codes}
        x = {m: c.reshape(-1, 1, 2).clip(0, 1) for m, c in codes.items()}
        codes_in = {m: encode(models[m], x[m]) for m in codes}
        settings = RefineSettings(teach_min_steps=20, augment=False)
        new_codes, report = refine(brain, models, x, codes_in, stream, len(stream), settings, seed=1)
        results.append((brain.state_dict(), new_codes, {m: mdl.state_dict() for m, mdl in models.items()}))
    (s0, c0, w0), (s1, c1, w1) = results
    assert all(np.array_equal(s0[k], s1[k]) for k in s0)
    assert all(np.array_equal(c0[m], c1[m]) for m in c0)
    assert all(torch.equal(w0[m][k], w1[m][k]) for m in w0 for k in w0[m])


# ---------------------------------------------------------------------------------------- augmentation
def test_image_augmentation_keeps_shape_and_range_and_is_seeded():
    from replay.data.augment import ImageAugmenter

    x = torch.zeros(16, 28, 28)
    x[:, 8:20, 12:16] = 1.0
    aug = ImageAugmenter()
    a, b, c = aug(x, 1), aug(x, 1), aug(x, 2)
    assert a.shape == x.shape and float(a.min()) >= 0.0 and float(a.max()) <= 1.0
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert not torch.equal(a, x)


def test_sound_augmentation_keeps_shape_and_range_and_is_seeded(data_dir):
    from replay.data.augment import SoundAugmenter
    from replay.data.datasets import list_fsdd_files

    files = list_fsdd_files("train", digits=[0, 1], per_class=3, speakers=["jackson"])
    aug = SoundAugmenter(files)
    rows = np.arange(len(files))
    a, b, c = aug(rows, 7), aug(rows, 7), aug(rows, 8)
    assert a.shape == (len(files), 64, 64) and a.dtype == np.float32
    assert a.min() >= 0.0 and a.max() <= 1.0
    assert np.array_equal(a, b) and not np.array_equal(a, c)


def test_lived_spectrograms_are_masked_in_time_not_in_frequency():
    """A sleep's spectrogram augmentation masks a gap of a few frames across many mel bins (what
    docs/LEARNING.md says), not a band of frequencies: each erased rectangle is tall and narrow."""
    import kornia.augmentation as K

    from replay.data.augment import SpectrogramAugmenter, torch_seeded

    erasers = [e for e in SpectrogramAugmenter().warp if isinstance(e, K.RandomErasing)]
    assert erasers
    for erase in erasers:
        with torch_seeded(0), torch.no_grad():
            masked = erase(torch.ones(100, 1, 64, 64))[:, 0] == 0.0
        gaps = [m for m in masked if m.any()]
        assert gaps, "nothing was masked"
        for m in gaps:  # rows are mel bins, columns are frames
            frames, bins = int(m.any(0).sum()), int(m.any(1).sum())
            assert frames < bins, f"masked {bins} mel bins over {frames} frames: a band of frequencies"


def test_refine_settings_refuse_nonsense():
    with pytest.raises(ValueError):
        RefineSettings(at=(0.7, 0.4))
    with pytest.raises(ValueError):
        RefineSettings(at=(1.5,))
    with pytest.raises(ValueError):
        RefineSettings(teach_sharpness=0.0)
    assert CortexSettings()  # the other sections are unaffected
