"""Which stimuli of two senses co-occurred: pairs by event time within the window B.

This is the only teacher the refinement phases have. It reads times and stimulus
rows, never labels, and pairs exactly what the CDZ would correlate.
"""

from __future__ import annotations

import numpy as np

from agent.core.stream import Stream


def cooccurring(stream: Stream, a: str, b: str, window_s: float, lo: int = 0,
                hi: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Rows (of a's and of b's training split) of every a-b stimulus pair within `window_s`.

    Only stimuli [lo, hi) of the stream are considered. Returns two int64 arrays of
    equal length, one entry per pair; a stimulus may take part in several pairs.
    """
    hi = len(stream) if hi is None else hi
    ka, kb = stream.modalities.index(a), stream.modalities.index(b)
    mods, t, index = stream.modality[lo:hi], stream.t[lo:hi], stream.index[lo:hi]
    ta, ia = t[mods == ka], index[mods == ka]
    tb, ib = t[mods == kb], index[mods == kb]
    a_rows, b_rows = pairs_within(ta, tb, window_s)
    return ia[a_rows].astype(np.int64), ib[b_rows].astype(np.int64)


def pairs_within(t_a: np.ndarray, t_b: np.ndarray, window: float) -> tuple[np.ndarray, np.ndarray]:
    """Indices (into t_a and into t_b) of every pair of events at most `window` apart.

    Times in any unit, as long as `window` is in the same one. A stimulus may take
    part in several pairs. This is what the CDZ correlates.
    """
    order = np.argsort(t_b, kind="stable")
    tb = t_b[order]
    first = np.searchsorted(tb, t_a - window, side="left")
    last = np.searchsorted(tb, t_a + window, side="right")
    counts = last - first
    rows_a = np.repeat(np.arange(len(t_a)), counts)
    starts = np.repeat(first, counts)
    offsets = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
    return rows_a.astype(np.int64), order[starts + offsets].astype(np.int64)
