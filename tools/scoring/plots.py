"""Pictures of what the agent learned, for people who would rather look than read.

Every function renders on matplotlib's Agg canvas (bare ``Figure`` objects,
never pyplot, never ``plt.show``),
writes one PNG (creating the parent folder), closes its figure and returns
the path it wrote.

* ``plot_tsne``: t-SNE of encodings, coloured by discovered cluster (left)
  and by true label (right), a class one colour in both (``tsne_colours``).
* ``plot_mode_grid``: the modes (prototypes) of clusters, a block of rows per
  modality, each cell captioned (e.g. ``c17 '7'``).
* ``plot_learning_curves``: classes alive and running recall accuracy over
  the stimuli seen, one line per modality.
* ``plot_recall``: a stimulus next to what the agent recalls in the other
  modality.

Arrays are drawn by kind: an *image* (28x28, or a flat 784-vector) in grey on
a fixed [0, 1] scale with row 0 at the top; anything else 2-d is taken for a
*spectrogram* (time on x, frequency on y, ``origin="lower"``, magma, scaled
per cell), with axes: time in seconds (a column is ``FRAME_S``) and mel bands
marked in Hz (0 Hz at the bottom, ``F_MAX`` at the top); 1-d arrays are drawn
as a line.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Mapping, Sequence

import matplotlib
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from sensors.sound_features import F_MAX, HOP, SAMPLE_RATE, _hz_to_mel

__all__ = ["plot_tsne", "tsne_colours", "plot_mode_grid", "plot_learning_curves", "plot_recall"]

DPI = 110
#: Cells per row in ``plot_mode_grid`` before a modality wraps onto another row.
GRID_COLUMNS = 10
_AUDIO_WORDS = ("audio", "sound", "spec", "speech", "voice", "ear")
#: A spectrogram column's length in seconds (64 frames of 1/64 s make a 1 s stimulus).
FRAME_S = HOP / SAMPLE_RATE
#: Frequencies marked on a spectrogram's (mel) y axis.
HZ_TICKS = (0.0, 500.0, 1000.0, 2000.0, 4000.0)


# --------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------

def _save(fig: Figure, path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fig.savefig(path, dpi=DPI, facecolor="white")
    finally:
        fig.clear()
    return path


def _figure(w: float, h: float) -> Figure:
    # A bare Figure on an Agg canvas, never registered with pyplot: no GUI
    # backend can be triggered, the process-wide backend is left alone and
    # nothing outlives the call (the figure is cleared after saving).
    fig = Figure(figsize=(w, h))
    FigureCanvasAgg(fig)
    return fig


def _finite_array(a, name: str) -> np.ndarray:
    try:
        arr = np.asarray(a, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be numeric: {exc}") from None
    if arr.size and not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains non-finite values")
    return arr


def _kind_of(arr: np.ndarray, hint: str | None = None) -> str:
    """'image', 'spectrogram' or 'line' for an array (``hint`` may force one)."""
    if hint in ("image", "spectrogram", "line"):
        return hint
    if arr.ndim == 1:
        return "image" if arr.size == 784 else "line"
    if hint and any(w in hint.lower() for w in _AUDIO_WORDS):
        return "spectrogram"
    if hint and any(w in hint.lower() for w in ("visual", "image", "vision", "eye", "mnist")):
        return "image"
    return "image" if arr.shape == (28, 28) else "spectrogram"


def _show(ax, arr: np.ndarray, kind: str) -> None:
    """Draw one array on ``ax`` as an image, a spectrogram or a line."""
    if kind == "image" and arr.ndim == 1:
        side = int(round(math.sqrt(arr.size)))
        if side * side == arr.size:
            arr = arr.reshape(side, side)
    if arr.ndim == 1 or kind == "line":
        ax.plot(arr.ravel(), color="tab:blue", lw=1)
        ax.set_xticks([])
        ax.set_yticks([])
        return
    if arr.ndim != 2:
        arr = arr.reshape(arr.shape[0], -1)
    if kind == "image":
        ax.imshow(arr, cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
    else:
        lo, hi = (float(arr.min()), float(arr.max())) if arr.size else (0.0, 1.0)
        if hi <= lo:
            hi = lo + 1.0
        ax.imshow(arr, cmap="magma", origin="lower", aspect="auto", vmin=lo, vmax=hi,
                  interpolation="nearest", extent=(0.0, arr.shape[1] * FRAME_S, 0.0, 1.0))
        _spectrogram_axes(ax)
        return
    ax.set_xticks([])
    ax.set_yticks([])


def _spectrogram_axes(ax) -> None:
    """Time and frequency on a spectrogram drawn over ``extent=(0, seconds, 0, 1)``.

    Without them a spectrogram is an unreadable texture. Rows are mel bands from 0 Hz
    (bottom) to ``F_MAX`` (top), equally spaced in mel, so the Hz ticks sit at their mel
    height and bunch up towards the top.
    """
    seconds = ax.get_xlim()[1]
    ax.set_xticks([0.0, seconds / 2, seconds], [f"{t:.2g}" for t in (0.0, seconds / 2, seconds)])
    top = float(_hz_to_mel(F_MAX))
    ax.set_yticks([float(_hz_to_mel(hz)) / top for hz in HZ_TICKS],
                  [f"{hz / 1000:g}k" if hz >= 1000 else f"{hz:g}" for hz in HZ_TICKS])
    ax.set_xlabel("time (s)", fontsize=7, labelpad=1)
    ax.set_ylabel("mel band (Hz)", fontsize=7, labelpad=1)
    ax.tick_params(labelsize=6, length=2, pad=1)


def _palette(n: int) -> np.ndarray:
    """``n`` distinguishable RGBA colours (tab10/tab20, then a hue wheel)."""
    if n <= 10:
        return matplotlib.colormaps["tab10"](np.arange(n))
    if n <= 20:
        return matplotlib.colormaps["tab20"](np.arange(n))
    # golden-ratio hue steps keep neighbours in id order apart
    hues = (np.arange(n) * 0.618033988749895) % 1.0
    return matplotlib.colormaps["hsv"](hues)


#: A cluster with no scoring name (black: tab10 gives digit 7 grey, and points of no cluster are light grey).
UNNAMED = (0.0, 0.0, 0.0, 1.0)


def _majority_names(clusters: np.ndarray, labels: np.ndarray) -> dict[int, int]:
    """Each cluster's scoring name: the majority label of its points (as ``replay.naming.cluster_names``)."""
    names = {}
    for cid in np.unique(clusters[clusters >= 0]):
        lab = labels[(clusters == cid) & (labels >= 0)]
        if lab.size:
            names[int(cid)] = int(np.bincount(lab).argmax())
    return names


def tsne_colours(
    clusters: np.ndarray, labels: np.ndarray, names: Mapping[int, int] | None = None
) -> tuple[dict[int, tuple], dict[int, tuple]]:
    """Colours of the two t-SNE panels: ``({cluster id: RGBA}, {label: RGBA})``.

    One colour map keyed by class (digit) serves both panels, and a cluster takes
    the colour of its scoring name (``names``; by default the majority label of its
    points), so a '7' is one colour left and right. Colouring each panel by its own
    group order gave the same digit two colours. Clusters without a name are
    ``UNNAMED``; digits keep tab10's colours (digit d is colour d).
    """
    clusters = np.asarray(clusters).astype(np.int64).ravel()
    labels = np.asarray(labels).astype(np.int64).ravel()
    if names is None:
        names = _majority_names(clusters, labels)
    ids = [int(c) for c in np.unique(clusters[clusters >= 0])]
    named = {names[c] for c in ids if c in names and names[c] >= 0}
    classes = sorted(named | {int(v) for v in np.unique(labels[labels >= 0])})
    if classes and classes[-1] < 10:  # digits: digit d has tab10's colour d in every figure
        rgbas = matplotlib.colormaps["tab10"](np.array(classes))
    else:
        rgbas = _palette(len(classes))
    by_class = {c: tuple(float(v) for v in rgba) for c, rgba in zip(classes, rgbas)}
    by_cluster = {c: by_class.get(names.get(c, -1), UNNAMED) for c in ids}
    by_label = {int(v): by_class[int(v)] for v in np.unique(labels[labels >= 0])}
    return by_cluster, by_label


def _scatter_groups(ax, xy: np.ndarray, groups: np.ndarray, title: str, prefix: str,
                    colour_of: Mapping[int, tuple]) -> None:
    """Scatter coloured by group (``colour_of``), -1 in grey; group names at their medians."""
    ids = [g for g in np.unique(groups) if g >= 0]
    colours = [colour_of[int(g)] for g in ids]
    noise = groups < 0
    if noise.any():
        ax.scatter(xy[noise, 0], xy[noise, 1], s=4, c="lightgrey", lw=0, label="none")
    # largest groups first, so small groups stay visible on top
    order = sorted(range(len(ids)), key=lambda i: -np.count_nonzero(groups == ids[i]))
    for i in order:
        m = groups == ids[i]
        ax.scatter(xy[m, 0], xy[m, 1], s=4, color=colours[i], lw=0)
    if len(ids) <= 40:
        for i, g in enumerate(ids):
            m = groups == g
            if m.sum() < max(3, 0.005 * groups.size):
                continue
            cx, cy = np.median(xy[m], axis=0)
            ax.text(cx, cy, f"{prefix}{g}", fontsize=8, weight="bold", ha="center", va="center",
                    color="white" if colours[i] == UNNAMED else "black",
                    bbox=dict(boxstyle="round,pad=0.15", fc=colours[i], ec="none", alpha=0.75))
    ax.set_title(title, fontsize=10)
    ax.set_xticks([])
    ax.set_yticks([])


# --------------------------------------------------------------------------
# t-SNE
# --------------------------------------------------------------------------

def plot_tsne(
    z: np.ndarray,
    clusters: np.ndarray,
    labels: np.ndarray,
    path: Path,
    title: str,
    seed: int,
    max_points: int = 3000,
    threads: int | None = 1,
    names: Mapping[int, int] | None = None,
) -> Path:
    """Two t-SNE panels of the encodings ``z`` (n, d): coloured by discovered
    cluster (left, -1 = none in grey) and by true label (right), one colour per
    class in both: a cluster is drawn in the colour of its scoring name
    (``names``, {cluster id: label}; by default the majority label of its
    points), see ``tsne_colours``.

    At most ``max_points`` points (drawn with ``np.random.default_rng(seed)``)
    are embedded with sklearn's Barnes-Hut TSNE (pca init, 500 iterations,
    ``random_state=seed``, perplexity min(30, (n-1)/3)), about 10 s for 3000
    points. ``threads`` caps the OpenMP/BLAS threads t-SNE uses (None: the
    library default); on the shared 2-core machines one thread took 9 s for
    3000 points where two took 39 s. Deterministic for a seed.
    """
    from sklearn.manifold import TSNE

    z = _finite_array(z, "z")
    if z.ndim != 2 or z.shape[0] < 2 or z.shape[1] < 1:
        raise ValueError(f"z must be 2-d with at least 2 rows, got shape {z.shape}")
    clusters = np.asarray(clusters).astype(np.int64).ravel()
    labels = np.asarray(labels).astype(np.int64).ravel()
    if clusters.shape[0] != z.shape[0] or labels.shape[0] != z.shape[0]:
        raise ValueError(
            f"z, clusters and labels must have the same length, got {z.shape[0]}, "
            f"{clusters.shape[0]}, {labels.shape[0]}"
        )
    if threads is not None and int(threads) < 1:
        raise ValueError(f"threads must be >= 1 or None, got {threads}")
    if int(max_points) < 2:
        raise ValueError(f"max_points must be >= 2, got {max_points}")
    n_all = z.shape[0]
    rng = np.random.default_rng(seed)
    if n_all > max_points:
        idx = np.sort(rng.choice(n_all, size=int(max_points), replace=False))
        z, clusters, labels = z[idx], clusters[idx], labels[idx]
    n = z.shape[0]
    if z.shape[1] == 1:  # t-SNE of 1-d data: pad so PCA init has 2 components
        z = np.hstack([z, np.zeros_like(z)])
    init = "pca" if n > 2 else "random"
    tsne = TSNE(
        n_components=2,
        perplexity=float(max(1.0, min(30.0, (n - 1) / 3.0))),
        init=init,
        learning_rate="auto",
        max_iter=500,
        random_state=int(seed),
    )
    if n < 4:
        xy = z[:, :2] if z.shape[1] >= 2 else np.hstack([z, np.zeros_like(z)])
    else:
        from contextlib import nullcontext

        from threadpoolctl import threadpool_limits

        limit = nullcontext() if threads is None else threadpool_limits(limits=int(threads))
        with limit:
            xy = tsne.fit_transform(z.astype(np.float32))

    fig = _figure(12.0, 6.0)
    ax1, ax2 = fig.subplots(1, 2)
    by_cluster, by_label = tsne_colours(clusters, labels, names)
    k = int(np.unique(clusters[clusters >= 0]).size)
    _scatter_groups(ax1, xy, clusters, f"discovered clusters ({k}), coloured by name", "c", by_cluster)
    n_lab = int(np.unique(labels[labels >= 0]).size)
    _scatter_groups(ax2, xy, labels, f"true labels ({n_lab})", "", by_label)
    shown = f"{n} of {n_all} points" if n < n_all else f"{n} points"
    fig.suptitle(f"{title}  ({shown}, t-SNE)" if title else f"t-SNE, {shown}", fontsize=12)
    fig.tight_layout()
    return _save(fig, path)


# --------------------------------------------------------------------------
# mode grid
# --------------------------------------------------------------------------

def plot_mode_grid(
    rows: Mapping[str, Sequence[tuple[str, np.ndarray]]],
    path: Path,
    title: str = "",
) -> Path:
    """One grid of cluster modes: a block of rows per modality.

    ``rows`` maps a modality name to a list of ``(caption, array)``; e.g.
    ``{"visual": [("c17 '7'", img28x28), ...], "audio": [("c3 '7'", spec64x64), ...]}``.
    Cells wrap after ``GRID_COLUMNS`` per row; captions go under each cell;
    the modality name labels the first cell of its block. Modalities whose
    name says audio/spectrogram (or whose arrays are not 28x28) are drawn as
    spectrograms (``origin="lower"``, magma), the others as greyscale images
    on [0, 1]. Any number of modalities and cells works, including a modality
    with no cells (shown as "(none)") and an empty ``rows``.
    """
    if not isinstance(rows, Mapping):
        raise ValueError("rows must be a mapping {modality: [(caption, array), ...]}")
    blocks = []  # (name, cells, n_rows)
    for name, cells in rows.items():
        cells = list(cells)
        checked = []
        for j, cell in enumerate(cells):
            if not isinstance(cell, (tuple, list)) or len(cell) != 2:
                raise ValueError(f"rows[{name!r}][{j}] must be a (caption, array) pair")
            cap, arr = cell
            arr = _finite_array(arr, f"rows[{name!r}][{j}]")
            if arr.ndim not in (1, 2) or arr.size == 0:
                raise ValueError(f"rows[{name!r}][{j}] must be a non-empty 1-d or 2-d array, "
                                 f"got shape {arr.shape}")
            checked.append((str(cap), arr))
        n_rows = max(1, math.ceil(len(checked) / GRID_COLUMNS))
        blocks.append((str(name), checked, n_rows))

    n_cols = max([min(GRID_COLUMNS, len(c)) for _, c, _ in blocks] + [1])
    total_rows = sum(r for _, _, r in blocks) or 1
    cell_w, cell_h = 1.25, 1.55
    fig = _figure(max(3.0, n_cols * cell_w + 0.6), total_rows * cell_h + (0.5 if title else 0.15))
    if not blocks:
        fig.text(0.5, 0.5, "(nothing to show)", ha="center", va="center")
    else:
        axes = np.atleast_2d(fig.subplots(total_rows, n_cols, squeeze=False))
        r0 = 0
        for name, cells, n_rows in blocks:
            for rr in range(n_rows):
                for cc in range(n_cols):
                    ax = axes[r0 + rr, cc]
                    j = rr * GRID_COLUMNS + cc
                    if j < len(cells):
                        cap, arr = cells[j]
                        kind = _kind_of(arr, name)
                        _show(ax, arr, kind)
                        if kind == "spectrogram":  # the caption goes under the time axis's name
                            cap = f"{ax.get_xlabel()}\n{cap}"
                        ax.set_xlabel(cap, fontsize=8 if kind != "spectrogram" else 7, labelpad=2)
                    else:
                        ax.axis("off")
            first = axes[r0, 0]
            if cells:
                unit = first.get_ylabel()  # a spectrogram's frequency axis keeps its name under the modality's
                first.set_ylabel(f"{name}\n{unit}" if unit else name, fontsize=10 if not unit else 8,
                                 weight="bold")
            else:
                first.axis("on")
                first.set_xticks([])
                first.set_yticks([])
                for sp in first.spines.values():
                    sp.set_visible(False)
                first.set_ylabel(name, fontsize=10, weight="bold")
                first.text(0.5, 0.5, "(none)", ha="center", va="center", fontsize=9,
                           color="grey", transform=first.transAxes)
            r0 += n_rows
    if title:
        fig.suptitle(title, fontsize=11)
    fig.tight_layout(pad=0.4, h_pad=0.3, w_pad=0.3)
    return _save(fig, path)


# --------------------------------------------------------------------------
# learning curves
# --------------------------------------------------------------------------

def plot_learning_curves(curves: Mapping[str, np.ndarray], path: Path) -> Path:
    """Classes and running recall accuracy over the stimuli seen.

    ``curves["stimuli"]`` (n,) is the x axis; for each modality ``m``,
    ``curves["classes.m"]`` (n,) is the number of clusters alive / used by at
    least 1% and ``curves["accuracy.m"]`` (n,) the running recall accuracy in
    [0, 1] (either may be missing for a modality). ``curves["true_classes"]``
    (scalar), if given, is drawn as a dashed line on the classes panel;
    ``curves["refinements"]`` (k,), if given, marks the refinement points on both.
    """
    if not isinstance(curves, Mapping) or "stimuli" not in curves:
        raise ValueError('curves must be a mapping with a "stimuli" entry')
    x = _finite_array(curves["stimuli"], 'curves["stimuli"]').ravel()
    series: dict[str, dict[str, np.ndarray]] = {"classes": {}, "accuracy": {}}
    for key, val in curves.items():
        if "." not in key:
            continue
        what, mod = key.split(".", 1)
        if what not in series:
            continue
        arr = _finite_array(val, f"curves[{key!r}]").ravel()
        if arr.shape[0] != x.shape[0]:
            raise ValueError(f"curves[{key!r}] has {arr.shape[0]} points but stimuli has {x.shape[0]}")
        series[what][mod] = arr
    mods = sorted(set(series["classes"]) | set(series["accuracy"]))
    colours = {m: c for m, c in zip(mods, _palette(max(1, len(mods))))}

    fig = _figure(11.0, 4.2)
    ax1, ax2 = fig.subplots(1, 2)
    for m in mods:
        if m in series["classes"]:
            ax1.plot(x, series["classes"][m], color=colours[m], lw=1.6, label=m)
        if m in series["accuracy"]:
            ax2.plot(x, series["accuracy"][m], color=colours[m], lw=1.6, label=m)
    if "true_classes" in curves:
        tc = float(np.asarray(curves["true_classes"], dtype=np.float64).ravel()[0])
        ax1.axhline(tc, color="black", ls="--", lw=1, label=f"true ({tc:g})")
    marks = _finite_array(curves.get("refinements", np.zeros(0)), 'curves["refinements"]').ravel()
    for k, at in enumerate(marks):
        for ax in (ax1, ax2):
            ax.axvline(at, color="grey", ls=":", lw=1, label="refinement" if k == 0 and ax is ax1 else None)
    ax1.set_title("classes discovered")
    ax1.set_xlabel("stimuli seen")
    ax1.set_ylabel("clusters with >= 1% use")
    ax1.set_ylim(bottom=0)
    ax2.set_title("recall accuracy (running)")
    ax2.set_xlabel("stimuli seen")
    ax2.set_ylabel("accuracy")
    ax2.set_ylim(0, 1.02)
    for ax in (ax1, ax2):
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    return _save(fig, path)


# --------------------------------------------------------------------------
# recall
# --------------------------------------------------------------------------

def plot_recall(
    stimulus: np.ndarray,
    recon: np.ndarray,
    path: Path,
    caption: str,
    stimulus_kind: str | None = None,
    recon_kind: str | None = None,
) -> Path:
    """What was shown/heard (left) next to what the agent recalls in the other
    modality (right), ``caption`` on top.

    Kinds are guessed (28x28 or 784 values: image; other 2-d: spectrogram;
    other 1-d: line) unless ``stimulus_kind`` / ``recon_kind`` say
    ``"image"``, ``"spectrogram"`` or ``"line"``.
    """
    s = _finite_array(stimulus, "stimulus")
    r = _finite_array(recon, "recon")
    for name, a in (("stimulus", s), ("recon", r)):
        if a.ndim not in (1, 2) or a.size == 0:
            raise ValueError(f"{name} must be a non-empty 1-d or 2-d array, got shape {a.shape}")
    ks, kr = _kind_of(s, stimulus_kind), _kind_of(r, recon_kind)
    fig = _figure(6.4, 3.6)
    ax1, ax2 = fig.subplots(1, 2)
    _show(ax1, s, ks)
    _show(ax2, r, kr)
    words = {"image": "image", "spectrogram": "sound", "line": "signal"}
    ax1.set_title(("shown" if ks == "image" else "heard") + f" ({words[ks]})", fontsize=10)
    ax2.set_title(f"recalled ({words[kr]})", fontsize=10)
    fig.suptitle(caption, fontsize=11)
    fig.tight_layout()
    return _save(fig, path)
