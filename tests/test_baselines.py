"""Tests of tools.scoring.baselines: scores, the three unsupervised baselines and the probe."""

from __future__ import annotations

import numpy as np
import pytest

from tools.scoring.baselines import (
    all_baselines,
    clustering_scores,
    dp_gmm,
    hdbscan,
    kmeans_silhouette,
    supervised_probe,
)


def _blobs(n_per: int, k: int = 5, d: int = 64, sep: float = 12.0, seed: int = 0, centre_seed: int = 0):
    """k well-separated isotropic gaussian blobs in d dims (centres from centre_seed), shuffled."""
    centres = np.random.default_rng(centre_seed).standard_normal((k, d))
    centres *= sep / np.linalg.norm(centres, axis=1, keepdims=True)
    rng = np.random.default_rng(seed)
    y = rng.permutation(np.repeat(np.arange(k), n_per))
    z = centres[y] + rng.standard_normal((k * n_per, d))
    return z, y


@pytest.fixture(scope="module")
def blobs():
    z_train, y_train = _blobs(200, seed=1)  # 1000 x 64
    z_test, y_test = _blobs(60, seed=2)  # 300 x 64, same centres
    return z_train, y_train, z_test, y_test


def _strip_seconds(d: dict) -> dict:
    return {k: v for k, v in d.items() if k != "seconds"}


# ---------------------------------------------------------------- scores

def test_scores_perfect_assignment_is_one():
    y = np.array([0, 0, 1, 1, 2, 2, 2])
    s = clustering_scores(y.copy(), y)
    assert s == pytest.approx({"purity": 1.0, "ari": 1.0, "nmi": 1.0})


def test_scores_invariant_to_cluster_renaming():
    y = np.array([0, 0, 0, 1, 1, 2, 2, 2, 1, 0])
    a = np.array([0, 0, 1, 1, 1, 2, 2, 0, 1, 0])
    renamed = np.array([7, 3, 11])[a]
    assert clustering_scores(renamed, y) == pytest.approx(clustering_scores(a, y))


def test_scores_merged_classes_lower_purity_and_ari():
    y = np.array([0] * 10 + [1] * 10 + [2] * 10)
    merged = np.array([0] * 20 + [1] * 10)  # classes 0 and 1 in one cluster
    s = clustering_scores(merged, y)
    assert s["purity"] == pytest.approx(20 / 30)
    assert s["ari"] < 0.9
    assert s["nmi"] < 0.95
    # splitting a class keeps purity 1 but lowers ARI
    split = np.array([0] * 5 + [3] * 5 + [1] * 10 + [2] * 10)
    s2 = clustering_scores(split, y)
    assert s2["purity"] == 1.0
    assert s2["ari"] < 1.0


def test_scores_hand_computed_purity():
    a = np.array([0, 0, 0, 1, 1, 1])
    y = np.array([0, 0, 1, 1, 1, 1])
    assert clustering_scores(a, y)["purity"] == pytest.approx(5 / 6)


def test_scores_noise_counts_as_one_group():
    y = np.array([0] * 5 + [1] * 5)
    all_noise = np.full(10, -1)
    s = clustering_scores(all_noise, y)
    assert s["purity"] == pytest.approx(0.5)
    assert s["ari"] == pytest.approx(0.0)
    # -1 is one group: noise spread over both classes is not a perfect cluster
    a = np.array([0, 0, 0, -1, -1, -1, -1, 1, 1, 1])
    s = clustering_scores(a, y)
    assert s["purity"] == pytest.approx(8 / 10)
    assert s["ari"] < 1.0


def test_scores_bad_input():
    with pytest.raises(ValueError):
        clustering_scores(np.array([0, 1, 2]), np.array([0, 1]))
    with pytest.raises(ValueError):
        clustering_scores(np.zeros((2, 2), int), np.zeros((2, 2), int))
    with pytest.raises(ValueError):
        clustering_scores(np.array([]), np.array([]))
    with pytest.raises(ValueError):
        clustering_scores(np.array([0.5, 1.0]), np.array([0, 1]))


# ---------------------------------------------------------------- unsupervised

def test_kmeans_silhouette_finds_five_blobs(blobs):
    z_train, _, z_test, y_test = blobs
    r = kmeans_silhouette(z_train, z_test, y_test, seed=0)
    assert r["k"] == 5
    assert r["ari"] > 0.9
    assert r["seconds"] > 0
    assert _strip_seconds(kmeans_silhouette(z_train, z_test, y_test, seed=0)) == _strip_seconds(r)


def test_kmeans_silhouette_subsamples(blobs):
    z_train, _, z_test, y_test = blobs
    r = kmeans_silhouette(z_train, z_test, y_test, seed=3, k_range=range(2, 9), max_points=300,
                          silhouette_points=200)
    assert r["k"] == 5 and r["ari"] > 0.9


def test_dp_gmm_finds_five_blobs(blobs):
    z_train, _, z_test, y_test = blobs
    r = dp_gmm(z_train, z_test, y_test, seed=0)
    assert r["k"] == 5
    assert r["k_test"] == 5
    assert r["ari"] > 0.9
    assert r["seconds"] > 0


def test_hdbscan_finds_five_blobs(blobs):
    z_train, _, z_test, y_test = blobs
    r = hdbscan(z_train, z_test, y_test, seed=0)
    assert r["k"] == 5
    assert r["ari"] > 0.9
    assert 0.0 <= r["noise_fraction"] < 0.5
    assert r["min_cluster_size"] == 10  # 1% of 1000


def test_hdbscan_all_noise_gives_k0():
    rng = np.random.default_rng(0)
    z = rng.standard_normal((40, 8))
    y = rng.integers(0, 2, size=20)
    # a cluster must hold 40 points: nothing qualifies but the root, which is not allowed
    r = hdbscan(z, z[:20], y, seed=0, min_cluster_size=40)
    assert r["k"] == 0
    assert r["noise_fraction"] == 1.0
    assert r["ari"] == pytest.approx(0.0)


def test_unsupervised_baselines_fail_on_structureless_data():
    # one gaussian cloud, labels random: nobody may score a good ARI
    rng = np.random.default_rng(5)
    z = rng.standard_normal((600, 16))
    y = rng.integers(0, 5, size=200)
    zt = rng.standard_normal((200, 16))
    assert kmeans_silhouette(z, zt, y, seed=0, k_range=range(2, 8))["ari"] < 0.1
    assert dp_gmm(z, zt, y, seed=0, max_components=8)["ari"] < 0.1


# ---------------------------------------------------------------- probe

def test_probe_beats_chance_and_needs_the_labels():
    rng = np.random.default_rng(0)
    d, k = 16, 4
    w = rng.standard_normal((d, k))

    def make(n):
        x = rng.standard_normal((n, d))
        y = np.argmax(x @ w + 0.3 * rng.standard_normal((n, k)), axis=1)
        return x, y

    x_tr, y_tr = make(2000)
    x_te, y_te = make(500)
    r = supervised_probe(x_tr, y_tr, x_te, y_te, seed=0, epochs=10)
    assert r["accuracy"] > 0.8  # chance is about 0.25
    assert r["n_test"] == 500
    # with shuffled training labels the probe has nothing to learn
    bad = supervised_probe(x_tr, rng.permutation(y_tr), x_te, y_te, seed=0, epochs=10)
    assert bad["accuracy"] < 0.45
    again = supervised_probe(x_tr, y_tr, x_te, y_te, seed=0, epochs=10)
    assert again["accuracy"] == r["accuracy"]


def test_probe_leaves_torch_threads_alone():
    import torch

    session = torch.get_num_threads()  # tests run with 1 (conftest): start from another value
    rng = np.random.default_rng(0)
    x = rng.standard_normal((50, 4))
    y = (x[:, 0] > 0).astype(int)
    seen = []
    real_set = torch.set_num_threads
    try:
        torch.set_num_threads(2)
        assert torch.get_num_threads() == 2
        with pytest.MonkeyPatch.context() as mp:  # what the probe sets while it runs
            mp.setattr(torch, "set_num_threads", lambda n: (seen.append(n), real_set(n))[1])
            supervised_probe(x, y, x, y, seed=0, epochs=1, threads=1)
        assert seen and seen[0] == 1, seen  # it did cap the threads ...
        assert torch.get_num_threads() == 2  # ... and restored the caller's count
    finally:
        real_set(session)


# ---------------------------------------------------------------- validation

@pytest.mark.parametrize(
    "fn",
    [
        lambda zt, zs, ys: kmeans_silhouette(zt, zs, ys, seed=0, k_range=range(2, 4)),
        lambda zt, zs, ys: dp_gmm(zt, zs, ys, seed=0, max_components=3),
        lambda zt, zs, ys: hdbscan(zt, zs, ys, seed=0),
        lambda zt, zs, ys: supervised_probe(zt, np.arange(zt.shape[0]) % 2, zs, ys, seed=0, epochs=1),
    ],
    ids=["kmeans", "dp_gmm", "hdbscan", "probe"],
)
def test_bad_input_raises_value_error(fn):
    rng = np.random.default_rng(0)
    z = rng.standard_normal((30, 4))
    y = np.arange(10) % 2
    zs = z[:10]
    nan = z.copy()
    nan[3, 2] = np.nan
    inf = zs.copy()
    inf[0, 0] = np.inf
    cases = [
        (nan, zs, y),                      # non-finite train
        (z, inf, y),                       # non-finite test
        (z, rng.standard_normal((10, 5)), y),  # feature mismatch
        (z, zs, y[:9]),                    # label length mismatch
        (z[:, 0], zs, y),                  # 1-d encodings
        (np.zeros((0, 4)), zs, y),         # empty
        (z, zs, np.full(10, "a")),         # non-integer labels
    ]
    for zt, zte, yte in cases:
        with pytest.raises(ValueError):
            fn(zt, zte, yte)
    fn(z, zs, y)  # and the valid input goes through


def test_bad_seed_and_params():
    z, y = _blobs(10, k=2, d=4)
    with pytest.raises(ValueError):
        kmeans_silhouette(z, z, y, seed=-1)
    with pytest.raises(ValueError):
        kmeans_silhouette(z, z, y, seed=0, k_range=[1, 2])
    with pytest.raises(ValueError):
        dp_gmm(z, z, y, seed=0.5)
    with pytest.raises(ValueError):
        hdbscan(z, z, y, seed=0, min_cluster_size=1)
    with pytest.raises(ValueError):
        supervised_probe(z, np.zeros(20, int), z, y, seed=0)  # one class only
    with pytest.raises(ValueError):
        all_baselines(z, y[:5], z, y, seed=0, progress=False)


# ---------------------------------------------------------------- together

def test_all_baselines_structure(blobs, capsys):
    z_train, y_train, z_test, y_test = blobs
    r = all_baselines(z_train, y_train, z_test, y_test, seed=0, progress=False)
    assert set(r) == {"kmeans_silhouette", "dp_gmm", "hdbscan", "supervised_2layer"}
    for name, entry in r.items():
        assert entry["seconds"] > 0, name
    for name in ("kmeans_silhouette", "dp_gmm", "hdbscan"):
        assert r[name]["k"] == 5, name
        assert r[name]["ari"] > 0.9, name
    assert r["supervised_2layer"]["accuracy"] > 0.95
    assert "baselines" not in capsys.readouterr().err  # no bar when progress=False
