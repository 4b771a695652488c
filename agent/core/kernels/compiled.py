"""The learning rules' per-stimulus steps compiled with numba: the default `agent.core.kernels`.

Each function does what its namesake in `agent.core.kernels.reference` does, with loops
instead of numpy calls, so one stimulus costs one call into machine code per rule rather
than dozens of small numpy calls. State stays float32 as in the reference, but every sum
(distances, squared lengths, the totals rows are renormalised by) accumulates in float64:
numpy's float32 sums round differently, so results may differ from the reference in the
last bits, and a near-tie of two distances resolves as exact arithmetic would (as
`tools.bench.plain_core`, in float64, resolves it). Only the distance's dot product may reorder its
additions (into SIMD lanes, as the machine's BLAS does for numpy), so the same machine always
gives the same bits; every other sum runs in the order written here.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from agent.core.kernels import certainty as _certainty

_jit = njit(cache=True, nogil=True)
certainty = _jit(_certainty)


@njit(cache=True, nogil=True, fastmath={"reassoc", "contract"})
def _dot(pos, i, z):  # noqa: ANN001, ANN201 - numba infers the types
    acc = 0.0
    for k in range(z.shape[0]):
        acc += np.float64(pos[i, k]) * np.float64(z[k])
    return acc


@_jit
def _renormalise(matrix, r, hi):  # noqa: ANN001, ANN201
    """Row `r` of `matrix` (its first `hi` entries) divided by its total; False, unchanged, if that is 0."""
    total = 0.0
    for j in range(hi):
        total += np.float64(matrix[r, j])
    if total <= 0.0:
        return False
    t32 = np.float32(total)
    for j in range(hi):
        matrix[r, j] /= t32
    return True


@_jit
def nearest(pos, pos_sq, z, n_hi):  # noqa: ANN001, ANN201
    best, best_d = 0, np.inf
    for i in range(n_hi):
        if pos_sq[i] == np.inf:  # a free slot
            continue
        v = np.float64(pos_sq[i]) - 2.0 * _dot(pos, i, z)
        if v < best_d:  # the first of equals wins, as numpy's argmin
            best, best_d = i, v
    return best


@_jit
def fire(pos, pos_sq, link, mode_link, last_z, node_last, cluster_last, z, n_hi, c_hi, step,  # noqa: ANN001, ANN201
         node_lr, cluster_node_lr):
    d = z.shape[0]
    for k in range(d):
        if not np.isfinite(z[k]):
            return -1, -1
    n = nearest(pos, pos_sq, z, n_hi)
    lr = np.float32(node_lr)
    sq = 0.0
    for k in range(d):
        p = pos[n, k] + lr * (z[k] - pos[n, k])
        pos[n, k] = p
        sq += np.float64(p) * np.float64(p)
        last_z[n, k] = z[k]
    pos_sq[n] = sq
    c, top = 0, link[n, 0]
    for j in range(1, c_hi):
        if link[n, j] > top:
            c, top = j, link[n, j]
    mode_link[c, n] += np.float32(cluster_node_lr)
    _renormalise(mode_link, c, n_hi)
    node_last[n] = step
    cluster_last[c] = step
    return n, c


@_jit
def feedback_step(link, node_feedbacks, n, c_hi, feedback_lr, connection_certainty, age_factor):  # noqa: ANN001, ANN201
    top = link[n, 0]
    for j in range(1, c_hi):
        top = max(top, link[n, j])
    node_certainty = certainty(np.float64(top), np.float64(node_feedbacks[n]), age_factor)
    return feedback_lr * (1.0 + node_certainty * connection_certainty) ** 2


@_jit
def feedback(link, node_feedbacks, node_last, cluster_last, acc, z, n, c, c_hi, at, feedback_lr,  # noqa: ANN001, ANN201
             connection_certainty, age_factor):
    link[n, c] += np.float32(feedback_step(link, node_feedbacks, n, c_hi, feedback_lr, connection_certainty,
                                           age_factor))
    _renormalise(link, n, c_hi)
    node_feedbacks[n] += 1
    node_last[n] = max(node_last[n], at)
    cluster_last[c] = max(cluster_last[c], at)
    d = z.shape[0]
    for k in range(d):
        acc[k] += np.float64(z[k])
    acc[d] += 1.0


@_jit
def connect(w, age, r_a, r_b, hi_b, amount):  # noqa: ANN001, ANN201
    w[r_a, r_b] += np.float32(amount)
    if _renormalise(w, r_a, hi_b):
        age[r_a] += 1


@_jit
def strongest(w, r, hi):  # noqa: ANN001, ANN201
    best, top = 0, w[r, 0]
    for j in range(1, hi):
        if w[r, j] > top:
            best, top = j, w[r, j]
    return best, np.float64(top)


@_jit
def _pointed(w, age, r, hi, age_factor):  # noqa: ANN001, ANN201
    best, top = strongest(w, r, hi)
    if top <= 0.0:
        return -1, 0.0
    return best, certainty(top, np.float64(age[r]), age_factor)


@_jit
def pair(w_to_old, age_to_old, w_to_new, age_to_new, r_new, r_old, hi_new, hi_old,  # noqa: ANN001, ANN201
         amount_to_old, amount_to_new, age_factor):
    if amount_to_old > 0.0:
        connect(w_to_old, age_to_old, r_new, r_old, hi_old, amount_to_old)
    if amount_to_new > 0.0:
        connect(w_to_new, age_to_new, r_old, r_new, hi_new, amount_to_new)
    best_new, conf_new = _pointed(w_to_new, age_to_new, r_old, hi_new, age_factor)
    best_old, conf_old = _pointed(w_to_old, age_to_old, r_new, hi_old, age_factor)
    return best_new, conf_new, best_old, conf_old


def warm_up() -> None:
    """Compile (or load from the disk cache) every kernel for the types the agent passes, so the
    first stimulus of a run does not wait for the compiler."""
    pos = np.zeros((4, 2), np.float32)
    pos_sq = np.array([0.0, 1.0, np.inf, np.inf], np.float32)
    link = np.full((4, 4), 0.25, np.float32)
    mode_link = np.full((4, 4), 0.25, np.float32)
    last_z = np.zeros((4, 2), np.float32)
    stamps, ages, counts = np.zeros(4, np.int64), np.zeros(4, np.int64), np.zeros(4, np.int64)
    z, acc = np.ones(2, np.float32), np.zeros(3, np.float64)
    fire(pos, pos_sq, link, mode_link, last_z, stamps, stamps, z, 2, 2, 1, 0.1, 0.1)
    nearest(pos, pos_sq, z, 2)
    feedback(link, counts, stamps, stamps, acc, last_z[0], 0, 1, 2, 1, 0.1, 0.5, 25.0)
    feedback_step(link, counts, 0, 2, 0.1, 1.0, 25.0)
    connect(link, ages, 0, 1, 2, 0.1)
    strongest(link, 0, 2)
    pair(link, ages, mode_link, counts, 0, 1, 2, 2, 0.1, 0.05, 25.0)
