"""Tests of tools.plots: every plot writes a readable PNG of the expected size."""

from __future__ import annotations

import matplotlib.image as mpimg
import numpy as np
import pytest

from tools import plots
from tools.plots import plot_learning_curves, plot_mode_grid, plot_recall, plot_tsne


def _read(path, w_in: float, h_in: float) -> np.ndarray:
    """Read the PNG back and check its size against the figure size in inches."""
    assert path.exists() and path.stat().st_size > 1000
    img = mpimg.imread(path)
    h, w = img.shape[:2]
    assert abs(w - w_in * plots.DPI) <= 2, (w, w_in * plots.DPI)
    assert abs(h - h_in * plots.DPI) <= 2, (h, h_in * plots.DPI)
    assert img[..., :3].std() > 0.02  # not a blank canvas
    return img


def test_plot_tsne(tmp_path):
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(3), 20)
    z = rng.standard_normal((60, 8)) + 6 * np.eye(8)[labels]
    clusters = labels.copy()
    clusters[:5] = -1
    out = tmp_path / "new" / "dir" / "tsne.png"
    got = plot_tsne(z, clusters, labels, out, "tiny", seed=0, max_points=40)
    assert got == out
    _read(out, 12.0, 6.0)
    # deterministic for a seed
    again = plot_tsne(z, clusters, labels, tmp_path / "again.png", "tiny", seed=0, max_points=40)
    assert again.read_bytes() == out.read_bytes()


def test_plot_tsne_bad_input(tmp_path):
    z = np.zeros((10, 3))
    with pytest.raises(ValueError):
        plot_tsne(z, np.zeros(9), np.zeros(10), tmp_path / "x.png", "", seed=0)
    bad = z.copy()
    bad[0, 0] = np.nan
    with pytest.raises(ValueError):
        plot_tsne(bad, np.zeros(10), np.zeros(10), tmp_path / "x.png", "", seed=0)
    assert not (tmp_path / "x.png").exists()


def test_plot_mode_grid(tmp_path):
    rng = np.random.default_rng(0)
    rows = {
        "visual": [(f"c{i} '{i}'", rng.random((28, 28))) for i in range(12)],  # wraps to 2 rows
        "audio": [(f"c{i} '{i}'", rng.random((64, 64))) for i in range(3)],
        "touch": [],  # no cells
    }
    out = plot_mode_grid(rows, tmp_path / "g" / "grid.png", title="modes")
    n_cols, n_rows = 10, 2 + 1 + 1
    _read(out, n_cols * 1.25 + 0.6, n_rows * 1.55 + 0.5)


def test_plot_mode_grid_empty_and_bad(tmp_path):
    out = plot_mode_grid({}, tmp_path / "empty.png")
    assert out.exists() and out.stat().st_size > 0
    with pytest.raises(ValueError):
        plot_mode_grid({"visual": [np.zeros((28, 28))]}, tmp_path / "bad.png")  # no caption
    with pytest.raises(ValueError):
        plot_mode_grid({"visual": [("c0", np.zeros((2, 2, 2, 2)))]}, tmp_path / "bad.png")


def test_plot_learning_curves(tmp_path):
    x = np.arange(1, 51) * 10
    curves = {
        "stimuli": x,
        "classes.visual": np.minimum(10, x // 40),
        "classes.audio": np.minimum(12, x // 30),
        "accuracy.visual": 1 - np.exp(-x / 200),
        "accuracy.audio": 1 - np.exp(-x / 300),
        "true_classes": np.array(10),
    }
    out = plot_learning_curves(curves, tmp_path / "c" / "curves.png")
    _read(out, 11.0, 4.2)
    with pytest.raises(ValueError):
        plot_learning_curves({"classes.visual": x}, tmp_path / "bad.png")
    with pytest.raises(ValueError):
        plot_learning_curves({"stimuli": x, "accuracy.audio": x[:-1]}, tmp_path / "bad.png")


def test_plot_recall(tmp_path):
    img = np.zeros((28, 28))
    img[4:24, 12:16] = 1.0
    spec = np.random.default_rng(0).random((64, 64))
    out = plot_recall(img, spec, tmp_path / "r" / "recall.png", "shown '1' -> recalls c3")
    px = _read(out, 6.4, 3.6)
    # the left panel holds the white bar of the image: bright pixels left of centre
    grey = px[..., :3].mean(axis=2)
    mid = grey.shape[1] // 2
    dark_left = (grey[:, :mid] < 0.1).mean()
    assert dark_left > 0.2  # the black background of the digit is on the left
    with pytest.raises(ValueError):
        plot_recall(np.zeros((2, 2, 2)), spec, tmp_path / "bad.png", "")
