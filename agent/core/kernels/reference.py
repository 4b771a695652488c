"""The learning rules' per-stimulus steps in numpy: the readable reference of `agent.core.kernels`.

Every function has the signature of its compiled twin in `agent.core.kernels.compiled`.
"""

from __future__ import annotations

import numpy as np

from agent.core.kernels import certainty


def nearest(pos: np.ndarray, pos_sq: np.ndarray, z: np.ndarray, n_hi: int) -> int:
    """Slot of the node nearest to `z` among the first `n_hi` (free slots have pos_sq = inf)."""
    d = pos_sq[:n_hi] - 2.0 * (pos[:n_hi] @ z)  # |p - z|^2 - |z|^2
    return int(d.argmin())


def fire(pos: np.ndarray, pos_sq: np.ndarray, link: np.ndarray, mode_link: np.ndarray, last_z: np.ndarray,
         node_last: np.ndarray, cluster_last: np.ndarray, z: np.ndarray, n_hi: int, c_hi: int, step: int,
         node_lr: float, cluster_node_lr: float) -> tuple[int, int]:
    """Steps 2-4 after seeding: move the nearest node towards `z`, fire its strongest cluster and
    strengthen that cluster's link to the node. Returns (node slot, cluster slot); (-1, -1),
    changing nothing, when `z` holds NaN or inf."""
    if not np.isfinite(z).all():
        return -1, -1
    n = nearest(pos, pos_sq, z, n_hi)
    p = pos[n]
    p += node_lr * (z - p)
    pos_sq[n] = p @ p
    c = int(link[n, :c_hi].argmax())
    row = mode_link[c, :n_hi]
    row[n] += cluster_node_lr  # grow the C->N link, then keep the row summing to 1
    row /= row.sum()
    last_z[n] = z
    node_last[n] = step
    cluster_last[c] = step
    return n, c


def feedback(link: np.ndarray, node_feedbacks: np.ndarray, node_last: np.ndarray, cluster_last: np.ndarray,
             acc: np.ndarray, z: np.ndarray, n: int, c: int, c_hi: int, at: int, feedback_lr: float,
             connection_certainty: float, age_factor: float) -> None:
    """Step 6: node slot `n` links more to cluster slot `c`, by `feedback_step`, and the row is
    renormalised; both are stamped as used at step `at` (the later stamp wins); `z`, the
    encoding that excited the node, is added to `acc` ([sum of encodings, count])."""
    row = link[n, :c_hi]
    row[c] += feedback_step(link, node_feedbacks, n, c_hi, feedback_lr, connection_certainty, age_factor)
    row /= row.sum()
    node_feedbacks[n] += 1
    node_last[n] = max(int(node_last[n]), at)
    cluster_last[c] = max(int(cluster_last[c]), at)
    acc[:-1] += z
    acc[-1] += 1.0


def feedback_step(link: np.ndarray, node_feedbacks: np.ndarray, n: int, c_hi: int, feedback_lr: float,
                  connection_certainty: float, age_factor: float) -> float:
    """What one feedback adds to a link of slot `n` before renormalising:
    feedback_lr * (1 + node certainty * connection certainty)^2."""
    node_certainty = certainty(float(link[n, :c_hi].max()), float(node_feedbacks[n]), age_factor)
    return feedback_lr * (1.0 + node_certainty * connection_certainty) ** 2


def connect(w: np.ndarray, age: np.ndarray, r_a: int, r_b: int, hi_b: int, amount: float) -> None:
    """Step 5: row `r_a` of a CDZ matrix grows towards column `r_b` by `amount`, renormalised
    (the targets compete); the row's age counts the update. An amount too small for float32
    that leaves an empty row empty changes nothing."""
    row = w[r_a, :hi_b]
    row[r_b] += amount
    total = row.sum()
    if total <= 0.0:
        return
    row /= total
    age[r_a] += 1


def strongest(w: np.ndarray, r: int, hi: int) -> tuple[int, float]:
    """(column, weight) of the strongest connection of row `r` among the first `hi` columns."""
    row = w[r, :hi]
    best = int(row.argmax())
    return best, float(row[best])


def pair(w_to_old: np.ndarray, age_to_old: np.ndarray, w_to_new: np.ndarray, age_to_new: np.ndarray, r_new: int,
         r_old: int, hi_new: int, hi_old: int, amount_to_old: float, amount_to_new: float,
         age_factor: float) -> tuple[int, float, int, float]:
    """Steps 5 and 6 for one pair of excitations within the window: a new one (row `r_new` of its
    sense) and an older one of another sense (row `r_old`). `w_to_old` holds the new sense's
    connections towards the old one's clusters, `w_to_new` the reverse. Each grows by its amount
    (`connect`; 0: not at all); then each side learns which of its own clusters the other side's
    cluster points to. Returns (column in the new sense, certainty, column in the old sense,
    certainty); a column is -1 where the row points nowhere."""
    if amount_to_old > 0.0:
        connect(w_to_old, age_to_old, r_new, r_old, hi_old, amount_to_old)
    if amount_to_new > 0.0:
        connect(w_to_new, age_to_new, r_old, r_new, hi_new, amount_to_new)
    best_new, conf_new = _pointed(w_to_new, age_to_new, r_old, hi_new, age_factor)
    best_old, conf_old = _pointed(w_to_old, age_to_old, r_new, hi_old, age_factor)
    return best_new, conf_new, best_old, conf_old


def _pointed(w: np.ndarray, age: np.ndarray, r: int, hi: int, age_factor: float) -> tuple[int, float]:
    """The column row `r` connects to most strongly and the row's certainty; (-1, 0) if none."""
    best, top = strongest(w, r, hi)
    if top <= 0.0:
        return -1, 0.0
    return best, certainty(top, float(age[r]), age_factor)
