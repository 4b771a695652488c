"""`cdz plots`: the pictures of a run (t-SNE, decoded cluster modes, learning curves).

Learning curves are computed from the stream log the trainer saved: for each
window of the stream, how many clusters fire for at least 1% of its stimuli
(classes), and how often the cluster recalled right after learning carries the
stimulus's own label (labels read by the scorer only).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from agent.core.autoencoder import decode, load_autoencoder
from agent.core.checkpoint import RunFolder, load_arrays
from agent.core.stream import logged_partner
from replay.naming import cluster_names
from tools.scoring.evaluate import MIN_CLASS_SHARE, name_of
from tools.scoring.plots import plot_learning_curves, plot_mode_grid, plot_tsne


def learning_curves(stream: dict[str, np.ndarray], points: int = 60) -> dict[str, np.ndarray]:
    """Classes and running recall accuracy per modality over the stream (see module doc)."""
    mods = [str(m) for m in stream["modalities"]]
    n = len(stream["cluster"])
    edges = np.linspace(0, n, min(points, max(n // 50, 1)) + 1).astype(int)
    curves: dict[str, np.ndarray] = {"stimuli": edges[1:].astype(np.float64)}
    mod, cl, rec, lab = stream["modality"][:n], stream["cluster"], stream["recalled"], stream["label"][:n]
    for k, m in enumerate(mods):
        nxt = mods.index(logged_partner(mods)[m])
        classes, acc = [], []
        for lo, hi in zip(edges[:-1], edges[1:]):
            mine = mod[lo:hi] == k
            ids = cl[lo:hi][mine]
            _, counts = np.unique(ids[ids >= 0], return_counts=True)
            classes.append(int((counts >= MIN_CLASS_SHARE * max(len(ids), 1)).sum()))
            theirs = mod[lo:hi] == nxt  # name the other modality's clusters within this window
            names = cluster_names(cl[lo:hi][theirs], lab[lo:hi][theirs])
            pred = name_of(rec[lo:hi][mine], names)
            acc.append(float(np.mean(pred == lab[lo:hi][mine])) if mine.any() else np.nan)
        curves[f"classes.{m}"] = np.array(classes, np.float64)
        curves[f"accuracy.{m}"] = np.array(acc, np.float64)
    curves["true_classes"] = np.array(len(np.unique(lab)), np.float64)
    return curves


def make_plots(run: RunFolder, progress: bool = True) -> list[Path]:
    from replay.pipeline import load_brain

    config, enc, brain, _, _ = load_brain(run)
    out = run.plots_dir
    paths = []
    clusters = {m: brain.classify(m, enc.test[m]) for m in config.modalities}
    train_c = {m: brain.classify(m, enc.train[m]) for m in config.modalities}
    names = {m: cluster_names(train_c[m], enc.train_y[m]) for m in config.modalities}
    for m in config.modalities:  # clusters coloured by their scoring name, as the labels are
        paths.append(plot_tsne(enc.test[m], clusters[m], enc.test_y[m], out / f"tsne_{m}.png",
                               title=f"{m} test encodings", seed=config.seed, names=names[m]))
    rows: dict[str, list[tuple[str, np.ndarray]]] = {}
    for m in config.modalities:
        ids, counts = np.unique(train_c[m], return_counts=True)
        big = ids[counts >= MIN_CLASS_SHARE * len(train_c[m])]
        big = sorted(big, key=lambda c: (names[m].get(int(c), -1), int(c)))
        coder = load_autoencoder(run.encoder_path(m))
        cells = []
        for cid in big:
            pos = brain.cortices[m].mode_position(int(cid))
            if pos is not None:
                cells.append((f"c{cid} '{names[m].get(int(cid))}'", decode(coder, pos[None])[0]))
        rows[m] = cells
    paths.append(plot_mode_grid(rows, out / "cluster_modes.png", title="decoded mode of each discovered class"))
    if run.stream_path.exists():
        stream = load_arrays(run.stream_path)
        curves = learning_curves(stream)
        curves["refinements"] = np.array([round(a * len(stream["t"])) for a in config.refine.at], np.float64)
        paths.append(plot_learning_curves(curves, out / "learning_curves.png"))
    return paths
