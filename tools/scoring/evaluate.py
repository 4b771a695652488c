"""`cdz eval`: every score of docs/EVALUATION.md, from a run folder, with learning off.

Held-out stimuli are presented alone; nothing in the brain changes (the brain is
rebuilt from the checkpoint and only its pure reading methods are called).
Clusters are *named* for scoring only, by the majority label of the training
stimuli that excite them. Nothing is excluded from any score.
"""

from __future__ import annotations

import hashlib
import os
import platform
import resource
import time
from typing import Any, Callable

import numpy as np

from agent.core.autoencoder import load_autoencoder
from agent.core.brain import Brain
from agent.core.checkpoint import RunFolder
from agent.core.config import Config, to_dict
from agent.core.recollection import imagine
from agent.core.stream import logged_partner
from replay.data.datasets import Split, cache_dir
from tools.scoring.baselines import all_baselines, clustering_scores
from tools.scoring.judge import Judge, load_judge, predict, save_judge, train_judge
from replay.naming import cluster_names
from replay.pipeline import Encodings, load_brain
from replay.data.senses import sense
from replay.data.splits import load_splits

MIN_CLASS_SHARE = 0.01
JUDGE_VERSION = 1  # bump when the judge's design or training changes: cached judges are then retrained  # a cluster is a discovered class when >= 1% of training stimuli excite it


def name_of(ids: np.ndarray, names: dict[int, int]) -> np.ndarray:
    """Vectorised dict lookup; -1 for clusters without a name (or -1 ids)."""
    return np.array([names.get(int(i), -1) for i in ids], np.int64)


def seed_score(recalled: np.ndarray, labels: np.ndarray) -> float:
    """The seed's lenient measure: per label, the share of stimuli recalling that label's
    most common recalled cluster, averaged over labels (a merge of two digits can hide here)."""
    shares = []
    for lab in np.unique(labels):
        rec = recalled[labels == lab]
        _, counts = np.unique(rec[rec >= 0], return_counts=True)  # "recalls nothing" is never a hit
        shares.append(counts.max() / len(rec) if counts.size else 0.0)
    return float(np.mean(shares)) if shares else 0.0


def classes_discovered(train_clusters: np.ndarray) -> int:
    ids, counts = np.unique(train_clusters[train_clusters >= 0], return_counts=True)
    return int((counts >= MIN_CLASS_SHARE * len(train_clusters)).sum())


def pair_name(a: str, b: str) -> str:
    return f"{a}->{b}"


def scored_pair(config: Config, a: str, b: str) -> Callable[[np.ndarray], np.ndarray]:
    """What recall a->b is scored in: the classes of the sense whose clusters stand for
    coarser classes than digits (a reward), else the digits themselves."""
    for m in (b, a):
        info = sense(m)
        if info.classes is not None:
            return lambda labels, info=info: info.scored(config, labels)
    return lambda labels: labels


def score(config: Config, enc: Encodings, brain: Brain) -> dict[str, Any]:
    """Label-based scores of a trained brain (no judges, no baselines): fast and pure.

    A cluster's name is the majority class (`replay.data.senses`) of the training stimuli
    exciting it; a recall a->b is right when the recalled cluster's name is the class
    of the stimulus, both read in the pair's classes (`scored_pair`).
    """
    mods = config.modalities
    train_c = {m: brain.classify(m, enc.train[m]) for m in mods}
    test_c = {m: brain.classify(m, enc.test[m]) for m in mods}
    names = {m: cluster_names(train_c[m], sense(m).scored(config, enc.train_y[m])) for m in mods}
    out: dict[str, Any] = {"recall_accuracy": {}, "seed_score": {}, "classes_discovered": {},
                           "clusters_alive": {}, "clustering": {}, "n_test": {}, "recalled": {},
                           "true_classes": {}}
    for m in mods:
        out["classes_discovered"][m] = classes_discovered(train_c[m])
        out["clusters_alive"][m] = brain.cortices[m].n_clusters
        out["clustering"][m] = clustering_scores(test_c[m], sense(m).scored(config, enc.test_y[m]))
        out["n_test"][m] = int(len(enc.test_y[m]))
        out["true_classes"][m] = int(len(np.unique(sense(m).scored(config, enc.train_y[m]))))
    for a in mods:
        recalled = brain.cdz.recall_many(a, test_c[a])
        for b in mods:
            if b == a:
                continue
            classes = scored_pair(config, a, b)
            pred = name_of(recalled[b], names[b])
            if sense(b).classes is None:  # b's names are digits: read them in the pair's classes
                pred = classes(pred)
            out["recall_accuracy"][pair_name(a, b)] = float(np.mean(pred == classes(enc.test_y[a])))
            out["recalled"][pair_name(a, b)] = recalled[b]
        out["seed_score"][a] = seed_score(recalled[logged_partner(mods)[a]], enc.test_y[a])
    out["names"] = names
    return out


def generation(run: RunFolder, config: Config, brain: Brain, scores: dict[str, Any], enc: Encodings,
               progress: bool = True) -> tuple[dict[str, float], dict[str, float]]:
    """Generation accuracy (decode the recalled cluster's mode, let a judge name it) and judge accuracy.

    Only senses whose clusters stand for digits have a judge (a reward is read directly).
    """
    mods = tuple(m for m in config.modalities if sense(m).classes is None)
    train_raw, test_raw = load_splits(config, "train"), load_splits(config, "test")
    judges = {}
    judge_acc = {}
    for k, m in enumerate(mods):
        judges[m] = _judge_for(run, m, train_raw[m], seed=config.seed * 1000 + 500 + k, progress=progress)
        judge_acc[m] = float(np.mean(predict(judges[m], test_raw[m].x) == test_raw[m].y))
    decoders = {m: load_autoencoder(run.encoder_path(m)) for m in mods}
    gen_acc = {}
    for a in mods:
        for b in mods:
            if a == b:
                continue
            recalled = scores["recalled"][pair_name(a, b)]
            said = judge_modes(brain, decoders[b], judges[b], b, np.unique(recalled))
            pred = name_of(recalled, said)
            gen_acc[pair_name(a, b)] = float(np.mean(pred == enc.test_y[a]))
    return gen_acc, judge_acc


def _judge_for(run: RunFolder, modality: str, train: Split, seed: int, progress: bool) -> Judge:
    """The run's judge: from the run folder, else from the user cache (a judge depends only on its
    training data and seed, so runs on the same data share it), else trained now."""
    key = hashlib.sha256(repr((JUDGE_VERSION, modality, seed, train.names)).encode()).hexdigest()[:16]
    cached = cache_dir() / "judges" / f"{modality}-{key}.pt"
    for path in (run.judge_path(modality), cached):
        if path.exists():
            try:
                judge = load_judge(path)
                break
            except ValueError:  # damaged or from an older judge design: train a new one
                continue
    else:
        judge = train_judge(train.x, train.y, seed=seed, desc=f"{modality} judge", progress=progress)
        save_judge(judge, cached)
    if not run.judge_path(modality).exists():
        save_judge(judge, run.judge_path(modality))
    return judge


def judge_modes(brain: Brain, decoder, judge, modality: str, cluster_ids: np.ndarray) -> dict[int, int]:
    """What the judge calls the decoded mode of each cluster (clusters without a mode are left out)."""
    imagined = imagine(brain.cortices[modality], decoder, cluster_ids)
    if not imagined:
        return {}
    return dict(zip(imagined, predict(judge, np.stack(list(imagined.values()))).tolist()))


def evaluate(run: RunFolder, progress: bool = True, baselines: bool = True, judges: bool = True) -> dict[str, Any]:
    """Every score, in the JSON contract of the README."""
    t0 = time.perf_counter()
    config, enc, brain, step, stream_len = load_brain(run)
    for m in config.modalities:
        if len(enc.test_y[m]) == 0:
            raise ValueError(f"{run.path}: the {m} test set is empty; nothing to score")
    scores = score(config, enc, brain)
    result: dict[str, Any] = {
        "stream_complete": step >= stream_len,  # False: scored from a checkpoint of an unfinished run
        "stimuli_learned": step,
        "recall_accuracy": scores["recall_accuracy"],
        "seed_score": scores["seed_score"],
        "classes_discovered": scores["classes_discovered"],
        "true_classes": scores["true_classes"],
        "clusters_alive": scores["clusters_alive"],
        "clustering": scores["clustering"],
        "n_test": scores["n_test"],
    }
    if judges:
        result["generation_accuracy"], result["judge_accuracy"] = generation(run, config, brain, scores, enc, progress)
    if baselines:
        result["baselines"] = {m: all_baselines(enc.train[m], sense(m).scored(config, enc.train_y[m]), enc.test[m],
                                                sense(m).scored(config, enc.test_y[m]), seed=config.seed,
                                                progress=progress) for m in config.modalities}
    t_eval = time.perf_counter() - t0
    trained = run.metrics().get("train", {})
    timing = dict(trained.get("timing_s", {}))
    timing["eval"] = t_eval
    timing["total"] = sum(v for v in timing.values() if isinstance(v, (int, float)))
    result["timing_s"] = timing
    result["stream_stimuli_per_s"] = trained.get("stream_stimuli_per_s")
    result["peak_memory_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    result["machine"] = {"platform": platform.platform(), "cpus": os.cpu_count(), "python": platform.python_version()}
    result["seed"] = config.seed
    result["config"] = to_dict(config)
    run.update_metrics(eval={k: v for k, v in result.items() if k != "config"})
    return result


def format_table(result: dict[str, Any]) -> str:
    """The human score table."""
    lines = []
    if not result.get("stream_complete", True):
        lines.append(f"WARNING: training did not finish; scored after {result['stimuli_learned']} stimuli "
                     "(cdz train --resume RUN continues it)\n")
    ra, gen, ss = result["recall_accuracy"], result.get("generation_accuracy", {}), result["seed_score"]
    lines.append(f"{'score':34s} {'value':>8s}  n")
    lines.append("-" * 52)
    for pair, acc in ra.items():
        src = pair.split("->")[0]
        lines.append(f"{'recall accuracy ' + pair:34s} {acc:8.3f}  {result['n_test'][src]}")
    for pair, acc in gen.items():
        src = pair.split("->")[0]
        lines.append(f"{'generation accuracy ' + pair:34s} {acc:8.3f}  {result['n_test'][src]}")
    for m, v in ss.items():
        lines.append(f"{'seed score ' + m:34s} {v:8.3f}  {result['n_test'][m]}")
    for m, v in result.get("judge_accuracy", {}).items():
        lines.append(f"{'judge accuracy ' + m:34s} {v:8.3f}  {result['n_test'][m]}")
    for m, v in result["classes_discovered"].items():
        c = result["clustering"][m]
        lines.append(f"{'classes discovered ' + m:34s} {v:8d}  (alive {result['clusters_alive'][m]}, "
                     f"purity {c['purity']:.3f}, ARI {c['ari']:.3f}, NMI {c['nmi']:.3f})")
    if "lost_stimuli" in result:
        restarts = result.get("restarts", [])
        lines.append(f"{'lost stimuli (distributed)':34s} {result['lost_stimuli']:8d}  "
                     f"({len(restarts)} process restart{'s' if len(restarts) != 1 else ''})")
    if "baselines" in result:
        lines.append("")
        lines.append(f"{'baseline (same encodings)':34s} {'k':>4s} {'ARI':>7s} {'acc':>7s} {'s':>6s}")
        for m, bl in result["baselines"].items():
            for name, r in bl.items():
                k = r.get("k", "")
                ari = f"{r['ari']:.3f}" if "ari" in r else ""
                acc = f"{r['accuracy']:.3f}" if "accuracy" in r else ""
                lines.append(f"{m + ' ' + name:34s} {k!s:>4s} {ari:>7s} {acc:>7s} {r.get('seconds', 0):6.1f}")
    t = result["timing_s"]
    lines.append("")
    lines.append("time (s): " + ", ".join(f"{k} {v:.1f}" for k, v in t.items()))
    if result.get("stream_stimuli_per_s"):
        lines.append(f"stream learning: {result['stream_stimuli_per_s']:.0f} stimuli/s; "
                     f"peak memory {result['peak_memory_mb']:.0f} MB (this process); {result['machine']['cpus']} CPUs")
    return "\n".join(lines)


def summarise_seeds(results: list[dict[str, Any]]) -> dict[str, Any]:
    """Per seed, mean and min over runs of every per-pair / per-modality score (docs/EVALUATION.md: several seeds)."""
    keys = ("recall_accuracy", "generation_accuracy", "seed_score", "classes_discovered")
    out: dict[str, Any] = {"seeds_run": [r["seed"] for r in results], "mean": {}, "min": {}, "per_seed": {}}
    for key in keys:
        if not all(key in r for r in results):
            continue
        out["mean"][key] = {k: float(np.mean([r[key][k] for r in results])) for k in results[0][key]}
        out["min"][key] = {k: min(r[key][k] for r in results) for k in results[0][key]}
    for r in results:
        out["per_seed"][str(r["seed"])] = {"recall_accuracy": r["recall_accuracy"],
                                           "classes_discovered": r["classes_discovered"]}
    def true(r: dict[str, Any], m: str) -> int:  # results older than "true_classes" were digits only
        return r.get("true_classes", {}).get(m, len(r["config"]["data"]["digits"]))

    out["runs_with_exact_classes"] = sum(
        all(v == true(r, m) for m, v in r["classes_discovered"].items()) for r in results)
    same = len({tuple(true(r, m) for m in r["classes_discovered"]) for r in results}) == 1
    out["exact_classes_per_modality"] = {
        m: sum(r["classes_discovered"][m] == true(r, m) for r in results)
        for m in results[0]["classes_discovered"]} if same else {}
    return out


def format_seeds(summary: dict[str, Any]) -> str:
    per_seed = summary.get("per_seed", {})
    lines = []
    if per_seed:
        first = next(iter(per_seed.values()))
        pairs, mods = list(first["recall_accuracy"]), list(first["classes_discovered"])
        lines.append(f"{'seed':>4s}  " + "  ".join(f"{'recall ' + p:>24s}" for p in pairs) + "  classes "
                     + " / ".join(mods))
        for seed, row in per_seed.items():
            lines.append(f"{seed:>4s}  " + "  ".join(f"{row['recall_accuracy'][p]:24.3f}" for p in pairs) + "  "
                         + " / ".join(str(row["classes_discovered"][m]) for m in mods))
        lines.append("")
    exact = summary.get("exact_classes_per_modality") or {}
    detail = ", ".join(f"{m}: {n}" for m, n in exact.items())
    lines += [f"over seeds {summary['seeds_run']} ({summary['runs_with_exact_classes']} of {len(summary['seeds_run'])} "
              f"found exactly the true number of classes in every modality{'; ' + detail if detail else ''}):",
              f"{'score':34s} {'mean':>8s} {'min':>8s}", "-" * 52]
    for key, per in summary["mean"].items():
        for k, mean in per.items():
            lines.append(f"{key.replace('_', ' ') + ' ' + k:34s} {mean:8.3f} {summary['min'][key][k]:8.3f}")
    return "\n".join(lines)
