"""The rule that undoes merges: split a class that the other sense sees as two.

The stream rules can join two digits into one cluster for good once both senses
share the join (README, "Results"). Within a merged class, though, the
co-occurrences still tell the two digits apart: the visual 5s are heard with
"five"s and the 9s with "nine"s, never the other way round, while within one true
class any image is heard with any utterance of it (speaker, style and slant do
not carry over between the senses).

So, for each group of clusters that recall one another, we build the bipartite
graph of co-occurrences between the nodes of one sense and the nodes of the
other (an edge per stimulus pair within B) and look for its best two-way cut
(spectral: the second singular vectors of the normalised co-occurrence matrix,
then a sweep). Its conductance (cut pairs / pairs on the smaller side) is near 0
for two classes that never co-occur and near 0.5 for one class. When it is below
`merge_conductance`, every cluster of the group whose nodes lie on both sides is
split there (`Cortex.split_cluster`), and the CDZ rows of the group's clusters
are set from their co-occurrence counts (`CDZ.set_row`). Repeated, so a merge of
three digits is undone in two rounds. No label is read anywhere.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from agent.core.brain import Brain


@dataclass(frozen=True)
class MergeSettings:
    conductance: float = 0.2  # split where the best cut's conductance is below this
    min_side: float = 0.1  # each side must hold at least this share of the group's pairs
    min_pairs: int = 200  # groups with fewer pairs are left alone (too little evidence)
    rounds: int = 4  # at most this many split rounds (a 3-digit merge needs 2)


@dataclass(frozen=True)
class Split:
    """One undone merge, for logs and tests."""

    modality: str
    cluster: int  # the cluster that was split
    new_cluster: int  # the cluster that took the nodes of one side
    conductance: float  # of the cut that justified it
    pairs: int  # co-occurrences in the group


def best_cut(rows: np.ndarray, cols: np.ndarray, min_side: float) -> tuple[float, np.ndarray, np.ndarray,
                                                                            np.ndarray, np.ndarray]:
    """Lowest-conductance two-way cut of the bipartite graph with one edge per (row, col) pair.

    Returns (conductance, row ids, their side (bool), col ids, their side). Sides are
    found by a sweep over the second singular vectors of D_r^-1/2 M D_c^-1/2; a cut
    whose smaller side holds less than `min_side` of the volume is not considered
    (conductance 1.0 when none is left).
    """
    r_ids, r = np.unique(rows, return_inverse=True)
    c_ids, c = np.unique(cols, return_inverse=True)
    m = np.zeros((len(r_ids), len(c_ids)), np.float64)
    np.add.at(m, (r, c), 1.0)
    dr, dc = m.sum(1), m.sum(0)
    none = (1.0, r_ids, np.zeros(len(r_ids), bool), c_ids, np.zeros(len(c_ids), bool))
    if len(r_ids) < 2 or len(c_ids) < 2:
        return none
    a = m / np.sqrt(dr)[:, None] / np.sqrt(dc)[None, :]
    u, _, vt = np.linalg.svd(a, full_matrices=False)
    er, ec = u[:, 1] / np.sqrt(dr), vt[1] / np.sqrt(dc)
    total = dr.sum() + dc.sum()
    best = none
    for cut_at in np.quantile(np.concatenate([er, ec]), np.linspace(0.05, 0.95, 37)):
        sr, sc = er > cut_at, ec > cut_at
        vol = dr[sr].sum() + dc[sc].sum()
        small = min(vol, total - vol)
        if small < min_side * total:
            continue
        cut = m[np.ix_(sr, ~sc)].sum() + m[np.ix_(~sr, sc)].sum()
        phi = cut / (small / 2.0)  # pairs cut / pairs on the smaller side (each pair has two ends)
        if phi < best[0]:
            best = (float(phi), r_ids, sr, c_ids, sc)
    return best


def _groups(brain: Brain, a: str, b: str, clusters_a: np.ndarray, clusters_b: np.ndarray) -> list[tuple[set, set]]:
    """Clusters that recall one another (a's recalled b-cluster and back), as connected groups."""
    parent: dict[tuple[str, int], tuple[str, int]] = {}

    def find(x: tuple[str, int]) -> tuple[str, int]:
        while parent.setdefault(x, x) != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for m, other, ids in ((a, b, clusters_a), (b, a, clusters_b)):
        ids = np.unique(ids[ids >= 0])
        recalled = brain.cdz.recall_many(m, ids)[other]
        for cid, rid in zip(ids, recalled):
            find((m, int(cid)))
            if rid >= 0:
                parent[find((m, int(cid)))] = find((other, int(rid)))
    groups: dict[tuple[str, int], tuple[set, set]] = {}
    for key in list(parent):
        root = find(key)
        ga, gb = groups.setdefault(root, (set(), set()))
        (ga if key[0] == a else gb).add(key[1])
    return [g for g in groups.values() if g[0] and g[1]]


def split_merges(brain: Brain, codes: dict[str, np.ndarray], a: str, b: str, rows_a: np.ndarray,
                 rows_b: np.ndarray, settings: MergeSettings = MergeSettings()) -> list[Split]:
    """Apply the merge rule to modalities a and b, given co-occurring training rows (`agent.core.pairs`).

    Learning state changes only where a merge is found. Returns the splits made.
    """
    node_a, cl_a = brain.cortices[a].assign(codes[a])
    node_b, cl_b = brain.cortices[b].assign(codes[b])
    pa_node, pb_node = node_a[rows_a], node_b[rows_b]
    pa_cl, pb_cl = cl_a[rows_a].copy(), cl_b[rows_b].copy()
    done: list[Split] = []
    for _ in range(settings.rounds):
        found = False
        for group_a, group_b in _groups(brain, a, b, pa_cl, pb_cl):
            sel = np.isin(pa_cl, list(group_a)) & np.isin(pb_cl, list(group_b))
            if sel.sum() < settings.min_pairs:
                continue
            phi, r_ids, r_side, c_ids, c_side = best_cut(pa_node[sel], pb_node[sel], settings.min_side)
            if phi >= settings.conductance:
                continue
            made = []
            for m, node_col, cl_col, ids, side, group in ((a, pa_node, pa_cl, r_ids, r_side, group_a),
                                                          (b, pb_node, pb_cl, c_ids, c_side, group_b)):
                for cid in sorted(group):
                    members = np.isin(ids, node_col[sel & (cl_col == cid)])
                    on, off = ids[members & side], ids[members & ~side]
                    w_on = np.isin(node_col[sel], on).sum()
                    w_off = np.isin(node_col[sel], off).sum()
                    if min(w_on, w_off) < settings.min_side * max(w_on + w_off, 1):
                        continue
                    moved = on if w_on < w_off else off
                    new = brain.cortices[m].split_cluster(cid, moved)
                    cl_col[np.isin(node_col, moved) & (cl_col == cid)] = new
                    made.append(Split(m, int(cid), new, phi, int(sel.sum())))
            if made:
                found = True
                done.extend(made)
                touched = {(a, c): c for c in group_a} | {(b, c): c for c in group_b}
                touched |= {(s.modality, s.new_cluster): s.cluster for s in made}  # a half ages as its parent
                _reset_rows(brain, a, b, pa_cl, pb_cl, touched)
        for cortex in brain.cortices.values():
            for change in cortex.drain_changes():
                brain.cdz.apply(change)
        if not found:
            break
    return done


def _reset_rows(brain: Brain, a: str, b: str, pa_cl: np.ndarray, pb_cl: np.ndarray,
                touched: dict[tuple[str, int], int]) -> None:
    """Set the CDZ rows of the touched clusters from their co-occurrence counts.

    `touched` maps (modality, cluster) to the cluster whose row age it takes.
    """
    ages = {key: brain.cdz.row_age(key[0], parent, b if key[0] == a else a) for key, parent in touched.items()}
    for cortex in brain.cortices.values():
        for change in cortex.drain_changes():
            brain.cdz.apply(change)
    for m, other, mine, theirs in ((a, b, pa_cl, pb_cl), (b, a, pb_cl, pa_cl)):
        for cid in np.unique(mine):
            if (m, int(cid)) not in touched:
                continue
            partners, counts = np.unique(theirs[mine == cid], return_counts=True)
            brain.cdz.set_row(m, int(cid), other, dict(zip(partners.tolist(), counts.astype(float).tolist())),
                              max(ages[(m, int(cid))], 1))
