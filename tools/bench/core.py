"""Benchmark of the learning core: the Brain with compiled kernels, with numpy ones, and the step written plainly.

docs/EVALUATION.md ("Benchmarks"): benchmarks are commands, not timed tests; they report
medians over repeats and, since the absolute figure depends on the machine, the ratio
to a baseline measured in the same run. For the learning core the baseline is
`tools.bench.plain_core`, the same per-stimulus rules with Python objects and loops.

The Brain runs twice per repeat, once with each of `agent.core.kernels` (numba, the
default, and numpy, the reference), so their ratio comes from one run. A third numpy run
checks, before every stimulus, which node the compiled nearest-node kernel would pick on
the very same state: how often the two differ (ties, last-bit differences) is reported
apart from how far the two whole runs drift apart. The compile time of the kernels is
measured in fresh processes, with an empty disk cache and then with the cache filled.

All implementations learn the same stream (`replay.data.teacher.make_stream`, default
`TeacherSettings`) over the same encodings, fed the way `agent.core.brain.learn_stream`
feeds them (event-time order, growth stopping for the last part, one recall per
stimulus). The vectorised brain learns all `n_stimuli`; the plain one, much slower,
learns the first `plain_stimuli` of the same stream. Repeats alternate the two so
machine noise hits both alike.

Data: by default synthetic encodings, one set of gaussian blobs per modality (class
centres drawn from N(0, 1) per dimension, samples scattered around them with a
per-class standard deviation of about `spread`), overlapping enough that nodes on
class borders are ambiguous, receive conflicting feedback and are split. Each
training set holds `n_stimuli / (modalities * teacher.epochs)` rows, so the stream
makes `teacher.epochs` passes over it like a real run. A trained run's encodings
can be passed instead (`encodings`, `labels`).
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import replace

import numpy as np
from tqdm import tqdm

from agent.core.brain import Brain, learn_stream
from agent.core.config import Config, RuntimeSettings, TeacherSettings
from agent.core.kernels import compiled, reference
from agent.runtime.launcher import REPOSITORY
from replay.data.teacher import make_stream
from tools.bench.plain_core import PlainBrain, as_lists, plain_learn_stream

__all__ = ["bench_core", "format_core", "synthetic_encodings"]


def synthetic_encodings(n: int, dim: int = 64, classes: int = 10, seed: int = 0, spread: float = 2.5,
                        modalities: tuple[str, ...] = ("visual", "audio")
                        ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Gaussian blobs: n float32 encodings (n, dim) and int64 labels per modality.

    Each modality has its own class centres (N(0, 1) per dimension, so two centres
    are about sqrt(2 * dim) apart) and per-class standard deviations drawn in
    [0.7, 1.3] * spread. The default spread makes neighbouring classes overlap a
    little (nearest-centre accuracy a few percent under 100%, like good autoencoder codes).
    """
    if n < classes or dim < 1 or classes < 1:
        raise ValueError(f"need n >= classes >= 1 and dim >= 1, got n={n}, dim={dim}, classes={classes}")
    rng = np.random.default_rng(seed)
    encodings, labels = {}, {}
    for m in modalities:
        centres = rng.normal(0.0, 1.0, (classes, dim))
        sigma = spread * rng.uniform(0.7, 1.3, classes)
        y = np.concatenate([np.arange(classes), rng.integers(0, classes, n - classes)])  # every class present
        rng.shuffle(y)
        z = centres[y] + rng.normal(0.0, 1.0, (n, dim)) * sigma[y, None]
        encodings[m], labels[m] = z.astype(np.float32), y.astype(np.int64)
    return encodings, labels


def bench_core(n_stimuli: int = 60_000, plain_stimuli: int = 3_000, dim: int = 64, classes: int = 10,
               seed: int = 0, repeats: int = 3, progress: bool = True,
               encodings: dict[str, np.ndarray] | None = None, labels: dict[str, np.ndarray] | None = None,
               config: Config | None = None, spread: float = 2.5, compile_time: bool = True) -> dict:
    """Time the learning core with compiled and with numpy kernels, and its plain baseline, on one stream.

    Returns (rates are medians over `repeats`, in stimuli per second of wall time):

    * ``stimuli_per_s``: the `Brain` with compiled kernels over the whole stream (`n_stimuli`);
    * ``plain_stimuli_per_s``: `tools.bench.plain_core` over the first `plain_stimuli`;
    * ``speedup``: ``stimuli_per_s / plain_stimuli_per_s``. The two rates cover
      different spans of the stream (the plain one only its start), so this is the
      headline figure asked for, not a like-for-like ratio;
    * ``prefix_stimuli_per_s`` and ``prefix_speedup``: the compiled rate over the
      very same first `plain_stimuli` stimuli, and its ratio to the plain rate
      (like for like: same stimuli, same state);
    * ``nodes``: nodes alive at the end of the vectorised run, all modalities
      (``nodes_per_modality`` splits it); ``clusters``, ``splits``, ``pruned_nodes``,
      ``feedback``: the same run's cortex counters per modality;
    * ``agreement``: share of the first `plain_stimuli` stimuli whose excited cluster
      is the same in both implementations (a correctness check of the baseline);
    * ``numpy_stimuli_per_s``: the same `Brain` with the numpy kernels (`runtime.kernels =
      "numpy"`), and ``kernel_speedup``, the compiled rate over it;
    * ``numpy_agreement``: share of the whole stream whose excited cluster is the same with
      both kernels (last-bit differences can grow into other splits over a long run);
    * ``nearest_checked``, ``nearest_differs``: stimuli of a numpy run at which the compiled
      nearest-node kernel was asked on the same state, and how many times it picked another
      node; ``nearest_differs_gap``, the largest relative gap between the two nodes' exact
      squared distances there (near 0: a tie);
    * ``compile_s``, ``cached_compile_s``: seconds a fresh process needs to import numba and
      ready the kernels, with an empty disk cache and with the cache filled (NaN unless
      `compile_time`);
    * ``n_stimuli``, ``plain_stimuli``, ``repeats``, ``dim``, ``modalities``,
      ``seconds`` / ``numpy_seconds`` / ``plain_seconds`` (every repeat's wall time).

    `encodings`/`labels` (modality -> array, same keys; the first modality is the
    "image" of the teacher) replace the synthetic blobs; `dim`, `classes` and `spread`
    then do nothing. `config` (default `Config()` with the modalities of the data)
    gives the cortex and CDZ settings; the teacher is always `TeacherSettings()`.
    """
    if repeats < 1 or n_stimuli < 2 or plain_stimuli < 1:
        raise ValueError("repeats, plain_stimuli must be >= 1 and n_stimuli >= 2")
    teacher = TeacherSettings()
    if encodings is None:
        mods = tuple(config.modalities) if config is not None else Config().modalities
        n_train = max(classes, int(round(n_stimuli / (len(mods) * teacher.epochs))))
        encodings, labels = synthetic_encodings(n_train, dim, classes, seed, spread, mods)
    elif labels is None or set(labels) != set(encodings):
        raise ValueError("give labels for exactly the modalities of `encodings`")
    else:
        encodings = {m: np.asarray(z, np.float32) for m, z in encodings.items()}
        labels = {m: np.asarray(labels[m], np.int64) for m in encodings}
    mods = tuple(encodings)
    config = Config(modalities=mods) if config is None else config
    if tuple(config.modalities) != mods:
        raise ValueError(f"config modalities {config.modalities} differ from the encodings' {mods}")

    stream = make_stream(labels, teacher, max(1, n_stimuli // len(mods)), seed)
    n = len(stream)
    n_plain = min(plain_stimuli, n)
    dims = {m: int(encodings[m].shape[1]) for m in mods}
    epochs = {m: max(1, int(stream.count(m) / teacher.epochs)) for m in mods}
    plain_data = as_lists(encodings)  # precomputed, like the arrays the vectorised run reads

    compiled_config = replace(config, runtime=RuntimeSettings(kernels="numba"))
    numpy_config = replace(config, runtime=RuntimeSettings(kernels="numpy"))
    vec_s, prefix_s, numpy_s, plain_s = [], [], [], []
    bar = tqdm(total=3 * repeats + 1, desc="bench core", unit="run", disable=not progress, file=sys.stderr)
    for _ in range(repeats):
        brain = Brain(compiled_config, dims, epochs)
        t0 = time.perf_counter()
        head = learn_stream(brain, stream, encodings, 0, n_plain, progress=False)
        t1 = time.perf_counter()
        tail = learn_stream(brain, stream, encodings, n_plain, n, progress=False)
        t2 = time.perf_counter()
        vec_s.append(t2 - t0)
        prefix_s.append(t1 - t0)
        bar.update(1)

        numpy_brain = Brain(numpy_config, dims, epochs)
        t3 = time.perf_counter()
        numpy_log = learn_stream(numpy_brain, stream, encodings, 0, n, progress=False)
        numpy_s.append(time.perf_counter() - t3)
        bar.update(1)

        plain = PlainBrain(config, dims, epochs)
        t3 = time.perf_counter()
        plain_clusters, _ = plain_learn_stream(plain, stream, plain_data, 0, n_plain)
        plain_s.append(time.perf_counter() - t3)
        bar.update(1)
    check = _NearestCheck()
    checked_brain = Brain(numpy_config, dims, epochs)
    for cortex in checked_brain.cortices.values():
        cortex.kernels = check
    learn_stream(checked_brain, stream, encodings, 0, n, progress=False)
    bar.update(1)
    bar.close()
    compile_s, cached_compile_s = kernel_compile_seconds() if compile_time else (float("nan"), float("nan"))

    rate = n / statistics.median(vec_s)
    numpy_rate = n / statistics.median(numpy_s)
    compiled_clusters = np.concatenate([head.cluster, tail.cluster])
    plain_rate = n_plain / statistics.median(plain_s)
    prefix_rate = n_plain / statistics.median(prefix_s)
    cortices = brain.cortices
    nodes = {m: c.n_nodes for m, c in cortices.items()}
    return {
        "stimuli_per_s": rate,
        "plain_stimuli_per_s": plain_rate,
        "speedup": rate / plain_rate,
        "prefix_stimuli_per_s": prefix_rate,
        "prefix_speedup": prefix_rate / plain_rate,
        "nodes": sum(nodes.values()),  # alive at the end, all modalities (the JSON contract's number)
        "nodes_per_modality": nodes,
        "clusters": {m: c.n_clusters for m, c in cortices.items()},
        "splits": {m: c.counters.splits for m, c in cortices.items()},
        "pruned_nodes": {m: c.counters.pruned_nodes for m, c in cortices.items()},
        "feedback": {m: c.counters.feedback for m, c in cortices.items()},
        "agreement": float(np.mean(np.asarray(plain_clusters) == head.cluster)),
        "numpy_stimuli_per_s": numpy_rate,
        "kernel_speedup": rate / numpy_rate,
        "numpy_agreement": float(np.mean(compiled_clusters == numpy_log.cluster)),
        "nearest_checked": check.checked,
        "nearest_differs": check.differs,
        "nearest_differs_gap": check.gap,
        "compile_s": compile_s,
        "cached_compile_s": cached_compile_s,
        "n_stimuli": n,
        "plain_stimuli": n_plain,
        "repeats": repeats,
        "dim": dims,
        "modalities": list(mods),
        "seconds": vec_s,
        "numpy_seconds": numpy_s,
        "plain_seconds": plain_s,
    }


class _NearestCheck:
    """The numpy kernels, asking before every move which node the compiled kernel would pick on
    the very same state; counts the stimuli where the two differ and how close those were to a tie."""

    def __init__(self) -> None:
        self.checked = 0
        self.differs = 0
        self.gap = 0.0  # largest |d_a - d_b| / max(d_a, d_b) of the exact squared distances where they differ

    def __getattr__(self, name: str):  # noqa: ANN204 - every other kernel is the numpy one
        return getattr(reference, name)

    def fire(self, pos, pos_sq, link, mode_link, last_z, node_last, cluster_last, z, n_hi, *rest):  # noqa: ANN001, ANN201
        if np.isfinite(z).all():
            a, b = reference.nearest(pos, pos_sq, z, n_hi), compiled.nearest(pos, pos_sq, z, n_hi)
            self.checked += 1
            if a != b:
                self.differs += 1
                da, db = (float(np.sum((pos[i].astype(np.float64) - z) ** 2)) for i in (a, b))
                self.gap = max(self.gap, abs(da - db) / max(da, db, 1e-300))
        return reference.fire(pos, pos_sq, link, mode_link, last_z, node_last, cluster_last, z, n_hi, *rest)


def kernel_compile_seconds() -> tuple[float, float]:
    """Seconds a fresh process takes to import numba and make the compiled kernels ready: with an
    empty disk cache (a first run), then with the cache that run left."""
    code = ("import time; t = time.perf_counter(); from agent.core.kernels import load; load('numba'); "
            "print(time.perf_counter() - t)")
    with tempfile.TemporaryDirectory(prefix="cdz-numba-cache-") as cache:
        env = {**os.environ, "NUMBA_CACHE_DIR": cache}

        def once() -> float:
            done = subprocess.run([sys.executable, "-c", code], cwd=REPOSITORY, env=env, capture_output=True,
                                  text=True, timeout=600)
            if done.returncode:
                raise RuntimeError(f"compiling the kernels failed: {done.stderr.strip()[-500:]}")
            return float(done.stdout)

        return once(), once()



def format_core(result: dict) -> str:
    """A small human table of a `bench_core` result."""
    r = result
    per_mod = "  ".join(f"{m} {n}/{r['clusters'][m]}/{r['splits'][m]}" for m, n in r["nodes_per_modality"].items())
    plain = r["plain_stimuli_per_s"]
    rows = [
        ("compiled kernels (whole stream)", f"{r['n_stimuli']:,}", f"{r['stimuli_per_s']:,.0f}", f"{r['speedup']:.1f}x"),
        ("numpy kernels (whole stream)", f"{r['n_stimuli']:,}", f"{r['numpy_stimuli_per_s']:,.0f}",
         f"{r['numpy_stimuli_per_s'] / plain:.1f}x"),
        (f"compiled kernels (first {r['plain_stimuli']:,})", f"{r['plain_stimuli']:,}",
         f"{r['prefix_stimuli_per_s']:,.0f}", f"{r['prefix_speedup']:.1f}x"),
        ("plain Python baseline", f"{r['plain_stimuli']:,}", f"{plain:,.0f}", "1.0x"),
    ]
    head = ("learning core", "stimuli", "stimuli/s", "vs plain")
    widths = [max(len(row[i]) for row in [head, *rows]) for i in range(4)]
    line = lambda row: "  ".join(  # noqa: E731
        cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in enumerate(zip(row, widths)))
    out = [line(head), "  ".join("-" * w for w in widths), *(line(row) for row in rows)]
    out.append(f"median of {r['repeats']} repeats; nodes/clusters/splits at the end: {per_mod}")
    out.append(f"compiled kernels {r['kernel_speedup']:.2f}x the numpy ones in the same run")
    out.append(f"plain and compiled excited the same cluster for {100 * r['agreement']:.2f}% "
               f"of the first {r['plain_stimuli']:,} stimuli; compiled and numpy for {100 * r['numpy_agreement']:.2f}% "
               "of the whole stream")
    out.append(f"nearest node, same state: compiled and numpy differ at {r['nearest_differs']} of "
               f"{r['nearest_checked']:,} stimuli (largest relative distance gap there {r['nearest_differs_gap']:.1e})")
    out.append(f"kernels ready in a fresh process: {r['compile_s']:.1f} s with an empty cache, "
               f"{r['cached_compile_s']:.1f} s from the cache")
    return "\n".join(out)
