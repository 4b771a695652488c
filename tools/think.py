"""Chains of thought in process: the agent recalling from its own recollections, measured.

`think_report` runs the step of the stream of thought (`agent.runtime.thought.ThoughtLoop`,
started as a process by `cdz think`: tools/processes/thinker.py) in process on a run's
test digits, and measures how long chains stay on the digit they started from.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING, NamedTuple

import numpy as np

from agent.core.checkpoint import RunFolder

if TYPE_CHECKING:
    from agent.core.autoencoder import Autoencoder
    from agent.core.brain import Brain
    from agent.core.config import Config


# ---------------------------------------------------------------------- in process
class Step(NamedTuple):
    """One thought in process: what `x` excited and what that recalls next."""

    modality: str
    cluster: int  # -1: rejected
    name: int | None  # scoring name of `cluster`
    target: str  # the modality recalled
    recalled: int | None  # None: the cluster recalls nothing there
    recalled_name: int | None
    next_x: np.ndarray | None  # the decoded mode: the next thought (None: the chain ends)


@dataclass
class Mind:
    """A run's brain, autoencoders and scoring names, to think without the bus."""

    config: Config
    brain: Brain
    coders: dict[str, Autoencoder]
    names: dict[str, dict[int, int]]

    @property
    def modalities(self) -> tuple[str, ...]:
        return tuple(self.config.modalities)


def load_mind(run: RunFolder) -> Mind:
    from agent.core.autoencoder import load_autoencoder
    from replay.naming import scoring_names
    from replay.pipeline import load_brain

    loaded = load_brain(run)
    names = scoring_names(loaded.config, loaded.enc, loaded.brain)
    coders = {m: load_autoencoder(run.encoder_path(m)) for m in loaded.config.modalities}
    return Mind(loaded.config, loaded.brain, coders, names)


def think_step(mind: Mind, modality: str, x: np.ndarray) -> Step:
    """stimulus -> encode -> classify -> recall the next modality -> decode its mode
    (`agent.core.recollection`, the path the workers and the hub take on the bus)."""
    from agent.core.recollection import next_modality, recollect

    target = next_modality(mind.modalities, modality)
    r = recollect(mind.brain, mind.coders, modality, x)
    got = r.recalled[target]
    name = mind.names[modality].get(r.cluster)
    if r.cluster < 0 or got < 0:
        return Step(modality, r.cluster, name, target, None, None, None)
    return Step(modality, r.cluster, name, target, got, mind.names[target].get(got), r.imagined[target])


def think_chain(mind: Mind, modality: str, x: np.ndarray, depth: int, noise: float = 0.0,
                rng: np.random.Generator | None = None) -> list[Step]:
    """The seed's step (depth 0), then up to `depth` thoughts (fewer if the chain dies)."""
    from agent.core.recollection import feed_back

    rng = rng or np.random.default_rng(0)
    steps = [think_step(mind, modality, x)]
    while len(steps) <= depth and steps[-1].next_x is not None:
        last = steps[-1]
        steps.append(think_step(mind, last.target, feed_back(last.next_x, noise, rng)))
    return steps


def _outcome(steps: list[Step], digit: int, depth: int, config: Config) -> dict:
    """stay: leading thoughts (depth >= 1) named `digit` (in a reward's steps: named the digit's
    reward class); then stayed, drifted (to what) or ended."""
    from replay.data.senses import sense

    def expected(modality: str) -> int:
        return int(sense(modality).scored(config, np.array([digit]))[0])

    names = [s.name for s in steps[1:]]
    stay = next((k for k, s in enumerate(steps[1:]) if s.name != expected(s.modality)), len(names))
    out = {"stay": stay, "seed_on_digit": steps[0].name == expected(steps[0].modality), "drift_to": None,
           "drift_step": None}
    if stay >= depth:
        out["end"] = "stayed"
    elif stay < len(names):
        out.update(end="drifted", drift_to="none" if names[stay] is None else str(names[stay]), drift_step=stay + 1)
    else:
        out["end"] = "ended"  # the chain died (nothing recalled) while still on the digit
    return out


def _summary(outcomes: list[dict]) -> dict:
    n = len(outcomes)
    ends = Counter(o["end"] for o in outcomes)
    drift_steps = [o["drift_step"] for o in outcomes if o["drift_step"] is not None]
    return {"chains": n, "mean_stay": float(np.mean([o["stay"] for o in outcomes])) if n else 0.0,
            "stayed": ends["stayed"] / n if n else 0.0, "drifted": ends["drifted"] / n if n else 0.0,
            "ended": ends["ended"] / n if n else 0.0,
            "seed_on_digit": sum(o["seed_on_digit"] for o in outcomes) / n if n else 0.0,
            "mean_drift_step": float(np.mean(drift_steps)) if drift_steps else None,
            "drift_to": dict(sorted(Counter(o["drift_to"] for o in outcomes if o["drift_to"] is not None).items()))}


def think_report(run: RunFolder, per_digit: int = 5, depth: int = 10) -> dict:
    """Chains of `depth` thoughts from the first `per_digit` test stimuli of every digit and modality,
    in process and without noise (a pure function of the run): how long they stay on their digit
    (by scoring name), the share that drift off it within `depth` thoughts, and where to."""
    from replay.data.splits import load_splits

    mind = load_mind(run)
    tests = load_splits(mind.config, "test")
    by_modality: dict[str, list[dict]] = {}
    by_digit: dict[str, list[dict]] = {}
    for m in mind.modalities:
        split = tests[m]
        for d in np.unique(split.y):
            for i in np.flatnonzero(split.y == d)[:per_digit]:
                o = _outcome(think_chain(mind, m, split.x[i], depth), int(d), depth, mind.config)
                by_modality.setdefault(m, []).append(o)
                by_digit.setdefault(str(int(d)), []).append(o)
    everything = [o for os_ in by_modality.values() for o in os_]
    return {"depth": depth, "per_digit": per_digit, **_summary(everything),
            "modalities": {m: _summary(v) for m, v in by_modality.items()},
            "digits": {d: _summary(v) for d, v in sorted(by_digit.items(), key=lambda kv: int(kv[0]))}}


# ---------------------------------------------------------------------- the command
