"""The teacher: a parent with flash cards, as a deterministic stream of timed stimuli.

Each teaching event picks a digit, shows a random training image of it at time
k * gap and says a random training recording of it at k * gap + lag. Some events
show one modality only (`p_unpaired`); some pair two different digits
(`p_mismatch`, teacher mistakes). With `rewards` set, the teacher also gives the
event's reward on the "reward" sense (`with_rewards`). Labels travel with the
stream for the scorer only; the learner never reads them.
"""

from __future__ import annotations

import numpy as np

from agent.core.config import REWARD, Config, TeacherSettings
from agent.core.stream import Stream


def make_stream(labels: dict[str, np.ndarray], settings: TeacherSettings, n_events: int, seed: int) -> Stream:
    """Build the teaching stream over the training sets whose labels are given.

    The first modality is the "image" (time k * gap); every other modality is
    "said" with a lag drawn from `settings.lag_s`.
    """
    modalities = tuple(labels)
    if len(modalities) < 2:
        raise ValueError("the teacher needs at least two modalities")
    if n_events <= 0:
        raise ValueError("n_events must be positive")
    if settings.gap_s <= 0:
        raise ValueError(f"teacher.gap_s must be positive, got {settings.gap_s}")
    lo, hi = settings.lag_s
    if lo > hi:
        raise ValueError(f"teacher.lag_s must be (low, high), got {settings.lag_s}")
    for name, p in (("p_unpaired", settings.p_unpaired), ("p_mismatch", settings.p_mismatch)):
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"teacher.{name} must be in [0, 1], got {p}")
    digits = sorted(set.intersection(*(set(np.unique(y).tolist()) for y in labels.values())))
    if not digits:
        raise ValueError("the modalities share no label: nothing to teach")
    rng = np.random.default_rng(seed)
    digit = rng.choice(np.array(digits), size=n_events)
    mismatch = rng.random(n_events) < settings.p_mismatch
    unpaired = rng.random(n_events) < settings.p_unpaired
    kept_modality = rng.integers(0, len(modalities), size=n_events)  # the one shown when unpaired
    base_t = np.arange(n_events, dtype=np.float64) * settings.gap_s

    parts = []
    for k, m in enumerate(modalities):
        said = digit.copy()
        if k > 0 and len(digits) > 1:  # a mistaken teacher says another digit
            shift = rng.integers(1, len(digits), size=n_events)
            pos = np.searchsorted(digits, digit)
            said = np.where(mismatch, np.array(digits)[(pos + shift) % len(digits)], digit)
        index = _pick(labels[m], said, rng)
        lag = np.zeros(n_events) if k == 0 else rng.uniform(lo, hi, size=n_events)
        present = ~unpaired | (kept_modality == k)
        ev = np.flatnonzero(present)
        parts.append((base_t[ev] + lag[ev], np.full(ev.size, k), index[ev], ev, said[ev]))
    t, mod, idx, ev, lab = (np.concatenate(col) for col in zip(*parts))
    t = np.round(t * 1e9) / 1e9  # whole nanoseconds, as on the wire: t_ns / 1e9 gives back exactly t
    order = np.lexsort((mod, t))  # event time, then modality for exact ties: deterministic
    return Stream(modalities, t[order], mod[order].astype(np.int64), idx[order].astype(np.int64),
                  ev[order].astype(np.int64), lab[order].astype(np.int64))


def _pick(y: np.ndarray, wanted: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A uniformly random row of `y` with label wanted[i], for every i (vectorised per label)."""
    out = np.empty(len(wanted), np.int64)
    for digit in np.unique(wanted):
        pool = np.flatnonzero(y == digit)
        where = np.flatnonzero(wanted == digit)
        out[where] = pool[rng.integers(0, len(pool), size=where.size)]
    return out


def n_events(config: Config, train: dict[str, np.ndarray]) -> int:
    """Stream length: `teacher.epochs` passes over the largest training set."""
    return max(1, int(round(config.teacher.epochs * max(len(y) for y in train.values()))))


def with_rewards(stream: Stream, reward_labels: np.ndarray, settings: TeacherSettings, seed: int) -> Stream:
    """The stream plus, for each event, a reward for its digit on the "reward" sense.

    The reward comes a lag drawn from `lag_s` after the event's first stimulus; a share
    `p_reward_missing` of events earns none. Rewards are drawn from a generator of their
    own, so the other senses' stimuli are exactly those of the stream without rewards.
    """
    if REWARD in stream.modalities:
        raise ValueError("the stream already has rewards")
    events, first = np.unique(stream.event, return_index=True)  # each event's earliest stimulus (time order)
    rng = np.random.default_rng([seed, 0x5EED])
    kept = rng.random(len(events)) >= settings.p_reward_missing
    events, first = events[kept], first[kept]
    digit = stream.label[first]
    if not np.isin(digit, reward_labels).all():
        raise ValueError("some taught digit has no reward to give")
    index = _pick(reward_labels, digit, rng)
    t = np.round((stream.t[first] + rng.uniform(*settings.lag_s, size=len(events))) * 1e9) / 1e9
    k = len(stream.modalities)
    t_all = np.concatenate([stream.t, t])
    mod = np.concatenate([stream.modality, np.full(len(events), k, np.int64)])
    order = np.lexsort((mod, t_all))
    cols = (np.concatenate([stream.index, index]), np.concatenate([stream.event, events]),
            np.concatenate([stream.label, digit]))
    return Stream((*stream.modalities, REWARD), t_all[order], mod[order], *(c[order].astype(np.int64) for c in cols))


def teaching_stream(config: Config, train_labels: dict[str, np.ndarray]) -> Stream:
    """The run's teaching stream: a function of the config and the training labels only."""
    taught = {m: y for m, y in train_labels.items() if m != REWARD}
    stream = make_stream(taught, config.teacher, n_events(config, taught), config.seed)
    if REWARD in train_labels:
        stream = with_rewards(stream, train_labels[REWARD], config.teacher, config.seed)
    return stream
