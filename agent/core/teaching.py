"""Encoders that the other sense teaches (docs/LEARNING.md, "Beyond the first design": cross-modal teaching).

The only teacher is the co-occurring stimulus of the other sense. For every pair
of stimuli within B (`agent.core.pairs`), the other sense's stimulus excites a
cluster, and that cluster recalls, through the CDZ, a cluster of this sense: the
target. A stimulus heard with "seven" twenty times gets the visual cluster that
"seven" recalls twenty times, so targets are soft (counted over all pairs), and
a teacher's occasional mistake is outvoted rather than learned.

The encoder is then refined with its reconstruction loss plus a prototype
softmax: `logits_k = -|z - mu_k|^2 / T`, where `mu_k` is the mean current
encoding of the stimuli whose target is k and `T` their mean squared distance to
it. This pulls each encoding towards the prototype of the class the other sense
names and away from the others, in the same Euclidean geometry the nodes use.
Prototypes stay fixed during a refinement, so the encoding space keeps its frame
and the nodes can follow (`follow_nodes`). Inputs are augmented (`replay.data.augment`)
so the encoders learn what stays the same across hands and voices.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F

from agent.core.autoencoder import Autoencoder, decode, encode
from agent.core.brain import Brain
from agent.core.cortex import Cortex
from agent.core.threads import at_once, check_stop

AUGMENTED_COPIES = 4  # distinct augmented copies of the data per refinement (the rest repeat them)

Augment = Callable[[np.ndarray, int], np.ndarray | torch.Tensor]  # (training rows, seed) -> stimuli


def soft_targets(brain: Brain, codes: dict[str, np.ndarray], a: str, b: str, rows_a: np.ndarray,
                 rows_b: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Cross-modal targets for modality a's stimuli: what their partners in b recall in a.

    Returns (rows of a's training split, target cluster ids (k,), soft targets (rows, k)),
    each row's targets summing to 1. Rows whose partners recall nothing are left out.
    """
    _, cl_b = brain.cortices[b].assign(codes[b])
    recalled = brain.cdz.recall_many(b, cl_b[rows_b])[a]
    ok = recalled >= 0
    rows, targets = rows_a[ok], recalled[ok]
    ids, t = np.unique(targets, return_inverse=True)
    uniq, r = np.unique(rows, return_inverse=True)
    soft = np.zeros((len(uniq), len(ids)), np.float32)
    np.add.at(soft, (r, t), 1.0)
    soft /= soft.sum(1, keepdims=True)
    return uniq, ids, soft


def partner_targets(brain: Brain, codes: dict[str, np.ndarray], pairs: dict[tuple[str, str], tuple[np.ndarray,
                    np.ndarray]], m: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`soft_targets` of modality m from its teaching partner (two-sense runs: the other sense),
    given the co-occurring pairs of every modality pair (a, b) as (rows of a, rows of b)."""
    other = next(o for o in brain.modalities if o != m)
    rows_m, rows_o = pairs[(m, other)] if (m, other) in pairs else pairs[(other, m)][::-1]
    return soft_targets(brain, codes, m, other, rows_m, rows_o)


def prototypes(z: np.ndarray, soft: np.ndarray) -> tuple[np.ndarray, float]:
    """Soft-weighted mean encoding per target (k, d) and the mean squared distance to it (T)."""
    weights = soft / np.maximum(soft.sum(0, keepdims=True), 1e-12)
    mu = weights.T @ z
    d2 = ((z[:, None, :] - mu[None, :, :]) ** 2).sum(-1)  # (n, k)
    temperature = float((soft * d2).sum() / len(z))
    return mu.astype(np.float32), max(temperature, 1e-6)


def teach_encoder(model: Autoencoder, x: np.ndarray, rows: np.ndarray, soft: np.ndarray, *, weight: float,
                  epochs: int, min_steps: int, lr: float, batch_size: int, seed: int,
                  augment: Augment | None = None, sharpness: float = 1.0, agree: float = 0.0) -> dict:
    """Refine `model` in place on stimuli x[rows] with soft cross-modal targets.

    Loss: reconstruction (of the augmented input) + weight * soft cross-entropy of the
    prototype softmax + agree * how far the encodings of two augmented copies of the same
    stimuli lie apart (squared, in units of the mean squared distance to the prototypes;
    needs `augment`; no labels: the copies only differ by augmentation). Deterministic for a seed, whatever the caller's torch thread count:
    it runs on one thread, because sums split over threads round differently and the
    distributed replay must refine exactly as the one-process run does.
    Returns {"losses": [...], "steps": n, "temperature": T}.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _teach(model, x, rows, soft, weight=weight, epochs=epochs, min_steps=min_steps, lr=lr,
                      batch_size=batch_size, seed=seed, augment=augment, sharpness=sharpness, agree=agree)
    finally:
        torch.set_num_threads(threads)


def teach_at_once(jobs: dict[str, Callable[[], dict]]) -> dict[str, dict]:
    """Run each sense's teaching job at the same time, one thread each; their infos by sense.

    Torch's heavy operations release the GIL, so two senses take about the time of the
    slower one on two cores. The bits are those of one job after the other: torch is held
    to one thread for the span (threads started now inherit it), each job draws from its
    own generator, and global generators are drawn under `agent.core.global_rng`.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return at_once(jobs)  # each job's steps `check_stop`: a stop or a failure ends them all at once
    finally:
        torch.set_num_threads(threads)


def _teach(model: Autoencoder, x: np.ndarray, rows: np.ndarray, soft: np.ndarray, *, weight: float, epochs: int,
           min_steps: int, lr: float, batch_size: int, seed: int, augment: Augment | None,
           sharpness: float, agree: float = 0.0) -> dict:
    z0 = encode(model, x[rows])
    mu, temperature = prototypes(z0, soft)
    spread = temperature  # mean squared distance to the own prototype: the agreement term's unit
    temperature /= sharpness
    mu_t, soft_t = torch.from_numpy(mu), torch.from_numpy(soft)
    n = len(rows)
    steps_per_epoch = math.ceil(n / batch_size)
    epochs = max(epochs, math.ceil(min_steps / steps_per_epoch))
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    total_steps = epochs * steps_per_epoch
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda i: 0.5 * (1 + math.cos(math.pi * i / total_steps)))
    linear = model.settings.arch == "linear"
    losses = []
    model.train()
    pool: dict[int, torch.Tensor] = {}  # augmented copies, reused round-robin on small sets

    def copy(key: int) -> torch.Tensor:
        if key not in pool:
            pool[key] = torch.as_tensor(augment(rows, seed * 1009 + key))
        return pool[key]

    agreeing = agree > 0 and augment is not None
    for epoch in range(epochs):
        data = torch.as_tensor(x[rows]) if augment is None else copy(epoch % AUGMENTED_COPIES)
        twin = copy((epoch + 1) % AUGMENTED_COPIES) if agreeing else None  # the same stimuli, augmented otherwise
        order = torch.randperm(n, generator=gen)
        total = 0.0
        for i in range(0, n, batch_size):
            idx = order[i : i + batch_size]
            xb = data[idx]
            z = model.encode(xb)
            out = model.decode_logits(z)
            recon = F.mse_loss(out, xb) if linear else F.binary_cross_entropy_with_logits(out, xb)
            logits = -torch.cdist(z, mu_t).pow(2) / temperature
            teach = -(soft_t[idx] * F.log_softmax(logits, dim=1)).sum(1).mean()
            loss = recon + weight * teach
            if twin is not None:
                loss = loss + agree * (z - model.encode(twin[idx])).pow(2).sum(1).mean() / spread
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += float(loss.detach()) * len(idx)
            check_stop()
        losses.append(total / n)
    model.eval()
    return {"losses": losses, "steps": total_steps, "temperature": temperature}


def follow_nodes(cortex: Cortex, old_codes: np.ndarray, new_codes: np.ndarray, old_model: Autoencoder,
                 new_model: Autoencoder, shift: bool = False) -> int:
    """Move every node to where its stimuli went: the mean new encoding of the training
    stimuli nearest to it before (with `shift`: its own position plus their mean move,
    which keeps the node's place among few stimuli). A node that is nearest to none is
    carried through the old decoder and the new encoder. Node and cluster ids, links
    and the CDZ are untouched. Returns the number of nodes that moved with their stimuli.
    """
    node_ids, _ = cortex.assign(old_codes)
    alive = np.flatnonzero(cortex.node_id[: cortex.n_hi] >= 0)
    slots = np.array([cortex.node_slot[int(n)] for n in node_ids], np.int64)
    sums = np.zeros((cortex.n_hi, new_codes.shape[1]), np.float64)
    counts = np.zeros(cortex.n_hi, np.int64)
    np.add.at(sums, slots, new_codes - old_codes if shift else new_codes)
    np.add.at(counts, slots, 1)
    positions = np.zeros_like(sums, dtype=np.float32)
    has = counts > 0
    positions[has] = (sums[has] / counts[has, None]).astype(np.float32)
    if shift:
        positions[has] += cortex.pos[: cortex.n_hi][has]
    lonely = alive[~has[alive]]
    if lonely.size:
        positions[lonely] = encode(new_model, decode(old_model, cortex.pos[lonely]))
    cortex.relocate(positions)
    return int(has[alive].sum())
