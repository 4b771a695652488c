"""The compiled kernels do what the numpy reference does, on the same state, up to the last bits."""

from __future__ import annotations

import numpy as np
import pytest

from agent.core.config import Config, SettingsError, override
from agent.core.kernels import compiled, load, reference

N, C, D = 40, 12, 16


def _state(seed: int = 0) -> dict[str, np.ndarray]:
    """A cortex-like state: positions with some free slots, row-normalised links."""
    rng = np.random.default_rng(seed)
    pos = rng.normal(size=(N, D)).astype(np.float32)
    pos_sq = np.einsum("ij,ij->i", pos, pos).astype(np.float32)
    free = rng.random(N) < 0.25
    pos[free], pos_sq[free] = 0.0, np.inf
    link = rng.random((N, C)).astype(np.float32) ** 4
    link /= link.sum(1, keepdims=True)
    mode_link = rng.random((C, N)).astype(np.float32)
    mode_link /= mode_link.sum(1, keepdims=True)
    return {"pos": pos, "pos_sq": pos_sq, "link": link, "mode_link": mode_link,
            "last_z": np.zeros((N, D), np.float32), "node_last": np.zeros(N, np.int64),
            "cluster_last": np.zeros(C, np.int64), "node_feedbacks": rng.integers(0, 50, N),
            "age": rng.integers(0, 50, C)}


def _assert_same(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> None:
    for key in a:
        np.testing.assert_allclose(a[key], b[key], rtol=2e-6, atol=1e-7, err_msg=key)


def test_fire_moves_the_same_node_and_fires_the_same_cluster():
    rng = np.random.default_rng(1)
    for trial in range(50):
        states = [_state(trial), _state(trial)]
        z = rng.normal(size=D).astype(np.float32)
        got = [k.fire(s["pos"], s["pos_sq"], s["link"], s["mode_link"], s["last_z"], s["node_last"],
                      s["cluster_last"], z, N, C, 7, 0.04, 0.02) for k, s in zip((compiled, reference), states)]
        assert tuple(got[0]) == tuple(got[1])
        n, c = got[0]
        assert states[0]["node_last"][n] == 7 and states[0]["cluster_last"][c] == 7
        assert np.isfinite(states[0]["pos_sq"][n])  # never a free slot
        _assert_same(*states)


@pytest.mark.parametrize("kernels", [compiled, reference], ids=["numba", "numpy"])
def test_fire_refuses_an_encoding_with_nan_and_changes_nothing(kernels):
    s, before = _state(), _state()
    z = np.ones(D, np.float32)
    z[3] = np.nan
    got = kernels.fire(s["pos"], s["pos_sq"], s["link"], s["mode_link"], s["last_z"], s["node_last"],
                       s["cluster_last"], z, N, C, 7, 0.04, 0.02)
    assert tuple(got) == (-1, -1)
    for key in s:
        assert np.array_equal(s[key], before[key]), key


def test_feedback_and_pairs_match_the_reference():
    rng = np.random.default_rng(2)
    for trial in range(50):
        states = [_state(trial), _state(trial)]
        accs = [np.zeros(D + 1), np.zeros(D + 1)]
        n, c, cert = int(rng.integers(N)), int(rng.integers(C)), float(rng.random())
        for k, s, acc in zip((compiled, reference), states, accs):
            k.feedback(s["link"], s["node_feedbacks"], s["node_last"], s["cluster_last"], acc, s["pos"][n], n, c, C,
                       9, 0.05, cert, 25.0)
        _assert_same(*states)
        np.testing.assert_allclose(accs[0], accs[1], rtol=1e-12)
        assert accs[0][-1] == 1.0 and states[0]["node_last"][n] == 9
        r_new, r_old = int(rng.integers(N)), int(rng.integers(C))  # rows of link (N x C) and of mode_link (C x N)
        got = [k.pair(s["link"], s["node_feedbacks"], s["mode_link"], s["age"], r_new, r_old, N, C, 0.02, 0.01, 25.0)
               for k, s in zip((compiled, reference), states)]
        assert got[0][0] == got[1][0] and got[0][2] == got[1][2]
        np.testing.assert_allclose([got[0][1], got[0][3]], [got[1][1], got[1][3]], rtol=1e-5)
        _assert_same(*states)


def test_an_empty_row_points_nowhere():
    w, age = np.zeros((3, 3), np.float32), np.zeros(3, np.int64)
    for k in (compiled, reference):
        assert k.pair(w, age, w.copy(), age.copy(), 0, 1, 3, 3, 0.0, 0.0, 25.0)[0::2] == (-1, -1)


def test_kernels_are_named_by_the_runtime_setting():
    assert load("numpy") is reference and load("numba") is compiled
    with pytest.raises(ValueError, match="runtime.kernels"):
        load("fortran")
    assert override(Config(), ["runtime.kernels=numpy"]).runtime.kernels == "numpy"
    with pytest.raises(SettingsError, match="runtime.kernels"):
        override(Config(), ["runtime.kernels=fortran"])
