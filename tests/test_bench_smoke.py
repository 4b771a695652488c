"""Smoke tests of `cdz bench pipeline` and `cdz bench live` at a tiny size: they run end to end and
report what their JSON promises, with nonzero counts. (Their numbers are measured by `make bench`.)

The pipeline bench trains its tiny run through the real processes; the live bench reuses that run."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

# no refinement: one segment of processes (fast), and a stream the bench's in-process reference learns the same
TINY = ["data.digits=[0,1]", 'data.speakers=["jackson"]', "data.per_class=40", "data.test_per_class=10",
        "teacher.epochs=6", "cortex.initial_nodes=20", "senses.audio.encoder.arch=linear", "senses.visual.encoder.epochs=2", "senses.visual.encoder.batch_size=16",
        "refine.at=[]"]


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory, data_dir) -> tuple[dict, Path]:
    """`bench_pipeline` on the tiny config, 2 s of live feeding; its result and its trained run folder."""
    from tools.bench.pipeline import bench_pipeline, format_pipeline

    out = tmp_path_factory.mktemp("bench-pipeline")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CDZ_DATA_DIR", str(data_dir))
        result = bench_pipeline(seconds=2.0, out=out, progress=False, settings=TINY)
    print(format_pipeline(result))
    return result, out / "run"


def test_bench_pipeline_runs_and_reports_its_keys(pipeline):
    result, _ = pipeline
    result = json.loads(json.dumps(result))  # what `--json` prints
    assert list(result)[:3] == ["lossless_pairs_per_s", "latency_ms", "zmq_baseline_ms"]  # the contract first
    assert set(result) >= {"lossless_stimuli_per_s", "in_process_stimuli_per_s", "stimuli", "pairs", "lost_stimuli",
                           "identical_to_in_process", "latency_samples", "live_sent", "zmq_samples"}
    assert result["stimuli"] > 0 and result["pairs"] > 0 and result["lost_stimuli"] == 0
    assert result["identical_to_in_process"] is True
    for key in ("lossless_pairs_per_s", "lossless_stimuli_per_s", "in_process_stimuli_per_s",
                "lossless_pairs_per_s_unkeyed"):
        assert result[key] > 0, key
    assert set(result["live_sent"]) == {"visual", "audio"} and min(result["live_sent"].values()) > 0
    assert result["live_rates_hz"] == {"visual": 30.0, "audio": 2.0}  # each sense at its declared live rate
    assert result["live_sent"]["visual"] > result["live_sent"]["audio"]
    assert result["latency_samples"] > 0 and result["zmq_samples"] > 0
    for key in ("latency_ms", "latency_ms_unkeyed", "zmq_baseline_ms"):
        p50, p99 = result[key]["p50"], result[key]["p99"]
        assert math.isfinite(p50) and 0 < p50 <= p99, (key, result[key])


def test_bench_live_runs_on_a_trained_run_and_reports_its_keys(pipeline, data_dir, capsys, monkeypatch):
    from tools.cli import main

    _, run = pipeline
    monkeypatch.setenv("CDZ_DATA_DIR", str(data_dir))
    capsys.readouterr()
    assert main(["bench", "live", "--run", str(run), "--cards", "3", "--utterances", "3", "--speaker", "theo",
                 "--json", "--quiet"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert set(result) == {"camera", "microphone", "microphone_noisy", "speaker", "run"} and result["run"] == str(run)
    assert result["speaker"] == "theo"
    cam = result["camera"]
    assert set(cam) == {"cards", "one_stimulus_share", "cards_missed", "cards_with_several", "stray_stimuli",
                        "recall_cards", "recall_clean"}
    assert cam["cards"] == 3 and cam["cards_missed"] < 3 and cam["one_stimulus_share"] > 0
    for part in ("microphone", "microphone_noisy"):
        mic = result[part]
        assert set(mic) == {"utterances", "one_stimulus_share", "spurious_segments", "recall_heard", "recall_clean"}
        assert mic["utterances"] == 3 and mic["one_stimulus_share"] > 0, (part, mic)
    for share in (cam["recall_cards"], cam["recall_clean"], *(result[p][k] for p in ("microphone", "microphone_noisy")
                                                               for k in ("recall_heard", "recall_clean"))):
        assert 0.0 <= share <= 1.0
