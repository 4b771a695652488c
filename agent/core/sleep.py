"""Sleep: the encoders learn from what the agent lived through (`cdz sleep`).

A new user's voice lands in the wrong place of the encoding space, and moving
nodes cannot fix an encoder. During sleep each encoder is taught on the buffered
experience (`agent.core.experience`) exactly as in a refinement (`agent.core.teaching`):
the stimuli of the other sense that co-occurred within B excite clusters, those
recall clusters of this sense through the CDZ, and these are the targets.

Against forgetting, old material is rehearsed beside the new (generative replay
in the broad sense): each replayed stimulus is pulled towards the cluster it
excites now, so the old classes keep their places. Replay is either a sample of
old stimuli or decoded node positions with noise (`SleepSettings.replay`).
The nodes then follow the old material into the new encoding space by their mean
shift, so the links and the CDZ keep their meaning. No label is read anywhere.
"""

from __future__ import annotations

import copy
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial

import numpy as np
import torch

from agent.core.autoencoder import Autoencoder, decode, encode
from agent.core.brain import Brain
from agent.core.cortex import Cortex
from agent.core.config import SleepSettings
from agent.core.pairs import pairs_within
from agent.core.teaching import follow_nodes, partner_targets, teach_at_once, teach_encoder

AugmentStimuli = Callable[[np.ndarray, int], np.ndarray | torch.Tensor]  # (stimuli, seed) -> augmented stimuli
MODE_NOISE = 0.1  # "modes" replay: noise std, as a share of the nodes' per-dimension spread


class NothingToLearn(ValueError):
    """The experience cannot teach anything (a sense is missing, or nothing co-occurred); nothing changed."""


@dataclass
class SleepReport:
    pairs: dict[str, int] = field(default_factory=dict)  # "a-b" -> pairs within B
    taught: dict[str, dict] = field(default_factory=dict)  # modality -> teach_encoder info
    experience: dict[str, int] = field(default_factory=dict)  # modality -> stimuli taught with a target
    replayed: dict[str, int] = field(default_factory=dict)  # modality -> old stimuli rehearsed
    followed: dict[str, int] = field(default_factory=dict)  # modality -> nodes moved with their stimuli
    novelty: dict[str, float] = field(default_factory=dict)  # modality -> share of lived stimuli unlike old ones
    rehearsed: int = 0  # stimuli lived again after the encoders changed
    seconds: float = 0.0

    def summary(self) -> str:
        parts = [f"{p} pairs {n}" for p, n in self.pairs.items()]
        parts += [f"{m} novelty {a:.2f}" + ("" if m in self.taught else " (not taught)")
                  for m, a in self.novelty.items()]
        parts += [f"{m}: {self.experience[m]} lived + {self.replayed[m]} replayed, {info['steps']} steps, "
                  f"loss {info['losses'][0]:.4f}->{info['losses'][-1]:.4f}" for m, info in self.taught.items()]
        return "; ".join(parts) + f"; {self.seconds:.1f} s"


def check_experience(modalities: tuple[str, ...], experience: dict[str, tuple[np.ndarray, np.ndarray]],
                     window_s: float) -> dict[tuple[str, str], tuple[np.ndarray, np.ndarray]]:
    """The co-occurring pairs of the experience; NothingToLearn when it cannot teach."""
    empty = [m for m in modalities if m not in experience or len(experience[m][0]) == 0]
    if empty:
        raise NothingToLearn(f"the experience holds no {' or '.join(empty)} stimuli: sleep needs what every "
                             "sense lived through together; nothing was changed")
    window_ns = window_s * 1e9
    pairs = {(a, b): pairs_within(experience[a][1], experience[b][1], window_ns)
             for i, a in enumerate(modalities) for b in modalities[i + 1 :]}
    if all(len(ra) == 0 for ra, _ in pairs.values()):
        raise NothingToLearn(f"no stimuli of different senses lie within B = {window_s} s of each other: "
                             "nothing co-occurred to learn from; nothing was changed")
    return pairs


def replay_material(brain: Brain, modality: str, model: Autoencoder, settings: SleepSettings,
                    old_stimuli: np.ndarray | None, seed: int) -> np.ndarray:
    """Old material to rehearse: a sample of old stimuli, or decoded node positions with noise."""
    n = settings.replay_size
    rng = np.random.default_rng(seed)
    if settings.replay == "none" or n == 0:
        return np.zeros((0, *model.input_shape), np.float32)
    if settings.replay == "stimuli":
        if old_stimuli is None or len(old_stimuli) == 0:
            raise NothingToLearn(f"sleep.replay = 'stimuli' needs old {modality} stimuli (the training data); "
                                 "use sleep.replay = 'modes' without them")
        return old_stimuli[np.sort(rng.choice(len(old_stimuli), min(n, len(old_stimuli)), replace=False))]
    cortex = brain.cortices[modality]
    alive = np.flatnonzero(cortex.node_id[: cortex.n_hi] >= 0)
    pos = cortex.pos[alive]
    z = pos[rng.integers(0, len(pos), n)] + rng.standard_normal((n, pos.shape[1])).astype(np.float32) * (
        MODE_NOISE * pos.std(0, keepdims=True))
    return decode(model, z.astype(np.float32)).reshape(n, *model.input_shape).astype(np.float32)


def sleep(brain: Brain, models: dict[str, Autoencoder | None], experience: dict[str, tuple[np.ndarray, np.ndarray]],
          settings: SleepSettings, seed: int, old_stimuli: dict[str, np.ndarray | None] | None = None,
          augment: dict[str, AugmentStimuli] | None = None) -> SleepReport:
    """Teach each encoder (in place) on `experience` (per sense: stimuli, event times in ns).

    Raises NothingToLearn, having changed nothing, when a sense has no experience or
    nothing co-occurred. Modalities whose encoder is None or "identity" are not taught.
    """
    t0 = time.perf_counter()
    mods = brain.modalities
    pairs = check_experience(mods, experience, brain.config.cdz.window_s)
    report = SleepReport(pairs={f"{a}-{b}": len(ra) for (a, b), (ra, _) in pairs.items()})
    codes = {m: _encode(models.get(m), experience[m][0]) for m in mods}
    plan = {}
    for m in mods:  # every target is read before any encoder or node changes
        model = models.get(m)
        if model is None or not model.learnable:
            continue
        rows, ids, soft = partner_targets(brain, codes, pairs, m)
        replay = replay_material(brain, m, model, settings, (old_stimuli or {}).get(m), seed * 1000 + 7)
        replay_z = encode(model, replay) if len(replay) else np.zeros((0, brain.cortices[m].dim), np.float32)
        report.novelty[m] = novelty(brain.cortices[m], codes[m], replay_z)
        replay_cl = brain.classify(m, replay_z) if len(replay) else np.zeros(0, np.int64)
        keep = replay_cl >= 0
        plan[m] = (rows, ids, soft, replay[keep], replay_z[keep], replay_cl[keep])
    jobs, follow = {}, {}
    for k, m in enumerate(mods):
        if m not in plan or not learns(m, report.novelty, settings.novel):
            continue
        rows, ids, soft, replay, replay_z, replay_cl = plan[m]
        model = models[m]
        copies = _copies(len(rows), len(replay), settings.experience_share)
        lived = experience[m][0][rows].astype(np.float32)
        x = np.concatenate([np.repeat(lived[None], copies, 0).reshape(-1, *lived.shape[1:]), replay])
        targets = _join_targets(ids, np.tile(soft, (copies, 1)), replay_cl)
        report.experience[m], report.replayed[m] = len(rows), len(replay)
        if len(x) == 0:
            continue
        aug = (augment or {}).get(m) if settings.augment else None
        jobs[m] = partial(teach_encoder, model, x, np.arange(len(x)), targets, weight=settings.teach_weight,
                          epochs=settings.teach_epochs, min_steps=settings.teach_min_steps, lr=settings.teach_lr,
                          batch_size=model.settings.batch_size, seed=seed * 1000 + k,
                          augment=None if aug is None else (lambda r, s, x=x, aug=aug: aug(x[r], s)),
                          sharpness=settings.teach_sharpness)
        # nodes follow the old material when there is some
        follow[m] = (copy.deepcopy(model), replay if len(replay) else experience[m][0][rows],
                     replay_z if len(replay) else codes[m][rows])
    report.taught = teach_at_once(jobs)  # the senses learn at the same time, as in a refinement
    for m, (old_model, material, old_z) in follow.items():
        new_z = encode(models[m], material)
        report.followed[m] = follow_nodes(brain.cortices[m], old_z, new_z, old_model, models[m], shift=True)
    lived = sum(len(experience[m][1]) for m in mods)
    budget = settings.rehearse * sum(c.step for c in brain.cortices.values())  # a share of all it learned
    passes = 0 if settings.rehearse == 0 else max(1, round(budget / lived))
    for _ in range(passes):
        report.rehearsed += rehearse(brain, {m: _encode(models.get(m), experience[m][0]) for m in mods},
                                     {m: experience[m][1] for m in mods})
    report.seconds = time.perf_counter() - t0
    return report


def rehearse(brain: Brain, codes: dict[str, np.ndarray], t_ns: dict[str, np.ndarray]) -> int:
    """Live the experience again in the new encoding space: every stimulus, in event-time order,
    learned as when it happened, moved after the brain's newest event time. The nodes learn and
    take the CDZ's feedback; the CDZ's connections do not grow, because it counted these
    co-occurrences once already, while awake: counting them again would let one session outweigh
    everything consolidated before it (measured: a voice heard as two clusters flipped a digit's
    association and cost 10 points of visual->audio recall). The CDZ's clock and its window of
    recent excitations are put back afterwards, so the live stream that follows pairs as if no
    time had passed. Returns stimuli learned."""
    mods = [m for m in codes if len(codes[m])]
    t = np.concatenate([t_ns[m] for m in mods]) / 1e9
    which = np.concatenate([np.full(len(t_ns[m]), k) for k, m in enumerate(mods)])
    row = np.concatenate([np.arange(len(t_ns[m])) for m in mods])
    order = np.argsort(t, kind="stable")
    shift = max(brain.cdz.t_max, float(t.max())) + 10 * brain.config.cdz.window_s - float(t.min())
    learned = 0
    recent, t_max = deque(brain.cdz.recent), brain.cdz.t_max
    brain.cdz.associating = False
    try:
        for j in order:
            m = mods[which[j]]
            learned += brain.learn(m, codes[m][row[j]], float(t[j] + shift)) is not None
    finally:
        brain.cdz.recent, brain.cdz.t_max = recent, t_max
        brain.cdz.associating = True
    return learned


def learns(modality: str, novelties: dict[str, float], threshold: float) -> bool:
    """A sense learns from its partners when what it lived through is new to it (novelty at
    least `threshold`) and no partner met something newer: the more familiar sense teaches.
    A familiar sense taught by a confused one would learn the confusion."""
    mine = novelties[modality]
    return mine >= threshold and all(mine >= v for m, v in novelties.items() if m != modality)


def novelty(cortex: Cortex, lived: np.ndarray, old: np.ndarray) -> float:
    """Share of lived encodings farther from their nearest node than the median old one is.

    About 0.5 when the experience is like what the sense already knew; near 1 for a
    voice or a hand it never met. Without old material nothing counts as familiar (1.0).
    """
    if len(old) == 0 or len(lived) == 0:
        return 1.0
    return float(np.mean(nearest_distance(cortex, lived) > np.median(nearest_distance(cortex, old))))


def nearest_distance(cortex: Cortex, z: np.ndarray) -> np.ndarray:
    """Euclidean distance of each encoding to its nearest node."""
    nodes, _ = cortex.assign(z)
    slots = np.array([cortex.node_slot[int(n)] for n in nodes], np.int64)
    return np.linalg.norm(z - cortex.pos[slots], axis=1)


def _copies(n_lived: int, n_replayed: int, share: float) -> int:
    """How often each lived stimulus is repeated so that they make about `share` of what is taught."""
    if n_lived == 0 or n_replayed == 0 or share <= 0:
        return 1
    return max(1, int(round(share / (1 - share) * n_replayed / n_lived)))


def _join_targets(ids: np.ndarray, soft: np.ndarray, replay_clusters: np.ndarray) -> np.ndarray:
    """Soft targets of the experience rows, then one-hot targets of the replayed rows, over one id set."""
    all_ids = np.union1d(ids, replay_clusters).astype(np.int64)
    out = np.zeros((len(soft) + len(replay_clusters), len(all_ids)), np.float32)
    out[: len(soft), np.searchsorted(all_ids, ids)] = soft
    out[np.arange(len(soft), len(out)), np.searchsorted(all_ids, replay_clusters)] = 1.0
    return out


def _encode(model: Autoencoder | None, x: np.ndarray) -> np.ndarray:
    return x.reshape(len(x), -1).astype(np.float32) if model is None else encode(model, x.astype(np.float32))
