"""The learning-core benchmark: sane fields, and the plain baseline learns like the vectorised Brain."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from agent.core.brain import Brain, learn_stream
from agent.core.config import Config, CortexSettings, RuntimeSettings, TeacherSettings
from replay.data.teacher import make_stream
from tools.bench.core import bench_core, format_core, synthetic_encodings
from tools.bench.plain_core import PlainBrain, as_lists, plain_learn_stream


def _both(config: Config, dim: int, n_events: int, spread: float, n_train: int | None = None, seed: int = 0):
    """Vectorised and plain runs over one stream: (stream, vectorised brain, log, plain brain, clusters, recalled)."""
    teacher = TeacherSettings()
    n_train = max(10, int(n_events / teacher.epochs)) if n_train is None else n_train
    enc, lab = synthetic_encodings(n_train, dim, 10, seed, spread)
    stream = make_stream(lab, teacher, n_events, seed)
    dims = {m: dim for m in enc}
    epochs = {m: max(1, int(stream.count(m) / teacher.epochs)) for m in enc}
    brain = Brain(config, dims, epochs)
    log = learn_stream(brain, stream, enc, progress=False)
    plain = PlainBrain(config, dims, epochs)
    clusters, recalled = plain_learn_stream(plain, stream, as_lists(enc))
    return stream, brain, log, plain, np.array(clusters), np.array(recalled)


KERNELS = pytest.mark.parametrize("kernels", ["numba", "numpy"])


@KERNELS
def test_plain_core_agrees_with_brain_through_maintenance(kernels):
    # Few seeded nodes and a short epoch, so moves, feedback, pruning and splitting all happen.
    config = Config(cortex=dataclasses.replace(CortexSettings(), initial_nodes=20), runtime=RuntimeSettings(kernels))
    stream, brain, log, plain, clusters, recalled = _both(config, dim=8, n_events=1500, spread=0.5)
    assert len(clusters) == len(stream) == 3000
    # The first few hundred stimuli: exactly the same excited clusters and recalls.
    assert np.array_equal(clusters[:500], log.cluster[:500])
    assert np.array_equal(recalled[:500], log.recalled[:500])
    # The whole run, across prune and split rounds (float64 vs float32 near-ties may differ).
    assert np.mean(clusters == log.cluster) >= 0.99
    assert np.mean(recalled == log.recalled) >= 0.99
    for m, cortex in brain.cortices.items():
        assert cortex.counters.pruned_clusters > 0 and cortex.counters.splits > 0
        assert cortex.counters.feedback > 0
        assert len(plain.cortices[m].nodes) == cortex.n_nodes
        assert plain.cortices[m].splits == cortex.counters.splits


@KERNELS
def test_plain_core_agrees_with_default_settings(kernels):
    # 250 seeded nodes, then moves and feedback. The training set is large so that no two
    # seeded nodes sit on the same encoding: such exact distance ties are broken by storage
    # slot in the vectorised core and by id in the plain one, which differ once a short
    # epoch has pruned (and so freed slots) during seeding.
    _, brain, log, _, clusters, recalled = _both(Config(runtime=RuntimeSettings(kernels)), dim=64, n_events=500, spread=2.5, n_train=20_000)
    assert all(c.counters.pruned_clusters > 0 for c in brain.cortices.values())
    assert np.array_equal(clusters, log.cluster)
    assert np.array_equal(recalled, log.recalled)


def test_bench_core_small_run():
    r = bench_core(n_stimuli=1200, plain_stimuli=300, dim=16, classes=4, repeats=2, progress=False)
    assert r["n_stimuli"] == 1200 and r["plain_stimuli"] == 300 and r["repeats"] == 2
    for key in ("stimuli_per_s", "plain_stimuli_per_s", "prefix_stimuli_per_s", "speedup", "prefix_speedup"):
        assert np.isfinite(r[key]) and r[key] > 0, key
    assert r["speedup"] == pytest.approx(r["stimuli_per_s"] / r["plain_stimuli_per_s"])
    assert r["prefix_speedup"] == pytest.approx(r["prefix_stimuli_per_s"] / r["plain_stimuli_per_s"])
    assert set(r["nodes_per_modality"]) == {"visual", "audio"}
    per = r["nodes_per_modality"].values()
    assert all(v > 0 for v in per) and r["nodes"] == sum(per)
    assert len(r["seconds"]) == len(r["plain_seconds"]) == 2
    assert r["agreement"] == 1.0
    assert r["numpy_agreement"] == 1.0 and r["kernel_speedup"] == pytest.approx(
        r["stimuli_per_s"] / r["numpy_stimuli_per_s"])
    assert len(r["numpy_seconds"]) == 2
    assert r["compile_s"] > 0 and r["cached_compile_s"] > 0
    table = format_core(r)
    assert "plain" in table and "stimuli/s" in table and "numpy kernels" in table


def test_bench_core_asks_the_compiled_nearest_node_kernel_at_every_move():
    config = Config(cortex=dataclasses.replace(CortexSettings(), initial_nodes=20))
    r = bench_core(n_stimuli=1200, plain_stimuli=100, dim=16, classes=4, repeats=1, progress=False, config=config,
                   compile_time=False)
    assert r["nearest_checked"] == 1200 - 2 * 20  # every stimulus after each sense's 20 seeds
    assert r["nearest_differs"] == 0 and r["nearest_differs_gap"] == 0.0  # no exact ties in random blobs
    assert r["numpy_agreement"] >= 0.99


def test_bench_core_on_given_encodings():
    enc, lab = synthetic_encodings(200, 6, 3, seed=1, spread=0.3, modalities=("a", "b", "c"))
    r = bench_core(n_stimuli=600, plain_stimuli=150, repeats=1, progress=False, encodings=enc, labels=lab,
                   compile_time=False)
    assert r["modalities"] == ["a", "b", "c"] and r["dim"] == {"a": 6, "b": 6, "c": 6}
    assert r["n_stimuli"] == 600 and r["agreement"] == 1.0
    with pytest.raises(ValueError):
        bench_core(n_stimuli=600, repeats=1, progress=False, encodings=enc, labels={"a": lab["a"]})
