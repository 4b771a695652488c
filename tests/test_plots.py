"""Tests of tools.scoring.plots: every plot writes a readable PNG of the expected size."""

from __future__ import annotations

import matplotlib.image as mpimg
import numpy as np
import pytest

from tools.scoring import plots
from tools.scoring.plots import UNNAMED, plot_learning_curves, plot_mode_grid, plot_recall, plot_tsne, tsne_colours


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


def test_tsne_colours_give_a_class_one_colour_in_both_panels():
    """Cluster ids come in another order than the digits they stand for; each panel colouring
    its own groups in order gave digit 2 the colour of digit 0 on the left."""
    labels = np.repeat(np.array([0, 1, 2, 7]), 10)
    clusters = np.repeat(np.array([5, 0, 9, 3]), 10)  # c5 is '0', c0 is '1', c9 is '2', c3 is '7'
    clusters[-5:] = 8  # '7' split over two clusters
    by_cluster, by_label = tsne_colours(clusters, labels, {5: 0, 0: 1, 9: 2, 3: 7, 8: 7})
    assert by_cluster[5] == by_label[0] and by_cluster[0] == by_label[1] and by_cluster[9] == by_label[2]
    assert by_cluster[3] == by_cluster[8] == by_label[7]
    assert len(set(by_label.values())) == 4  # the classes stay apart
    # names by default: the majority label of each cluster's points; a cluster without one is UNNAMED
    default, _ = tsne_colours(clusters, labels)
    assert default == by_cluster
    lone, _ = tsne_colours(clusters, labels, {5: 0})
    assert lone[5] == by_label[0] and lone[0] == UNNAMED
    # a digit keeps its colour when the other digits change
    assert tsne_colours(np.array([1]), np.array([7]))[1][7] == by_label[7]


def _spectrogram_axes_of(kind: str, shape: tuple[int, int]):
    fig = plots._figure(3.0, 3.0)
    ax = fig.subplots()
    plots._show(ax, np.random.default_rng(0).random(shape), kind)
    return ax


def test_spectrograms_have_time_and_frequency_axes():
    """A spectrogram shows 1 s (64 frames of 1/64 s) on x and 0-4 kHz mel bands on y, low ones at the bottom."""
    ax = _spectrogram_axes_of("spectrogram", (64, 64))
    assert "time (s)" in ax.get_xlabel() and "Hz" in ax.get_ylabel()
    assert ax.get_xlim() == pytest.approx((0.0, 1.0))
    assert ax.get_ylim()[0] < ax.get_ylim()[1]  # row 0, the lowest band, at the bottom
    ticks = {t.get_text(): y for t, y in zip(ax.get_yticklabels(), ax.get_yticks())}
    assert ticks["0"] == pytest.approx(0.0) and ticks["4k"] == pytest.approx(1.0)
    assert ticks["0"] < ticks["500"] < ticks["1k"] < ticks["2k"] < ticks["4k"]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["0", "0.5", "1"]
    image = _spectrogram_axes_of("image", (28, 28))  # digits stay bare
    assert not image.get_xlabel() and not image.get_ylabel() and not len(image.get_xticks())


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
