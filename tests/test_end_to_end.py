"""One small real run through the CLI: real MNIST and FSDD files, encoders, stream, scores.

Four digits; the 270 first MNIST training images of each and one FSDD speaker
(45 recordings per digit, as in the original one-speaker experiment); about
17,000 stimuli. The agent must find exactly four classes in each modality and
recall the other modality well, and the run folder must serve eval, recall and
plots. The visual encoder gets many small steps on this small set: with too few,
its encodings do not separate the digits and the classes merge.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tools.cli import main

SMALL = [
    "--set", "data.digits=[0,1,2,3]", "--set", 'data.speakers=["jackson"]', "--set", "data.per_class=270",
    "--set", "data.test_per_class=25", "--set", "teacher.epochs=8", "--set", "cortex.initial_nodes=60",
    "--set", "senses.audio.encoder.arch=linear",  # tiny data: see tests/runs.py
    "--set", "senses.visual.encoder.epochs=20", "--set", "senses.visual.encoder.batch_size=32",
]


@pytest.fixture(scope="module")
def small_run(tmp_path_factory, data_dir, monkeypatch_module) -> Path:
    out = tmp_path_factory.mktemp("runs") / "small"
    assert main(["train", "--quiet", "--out", str(out), *SMALL]) == 0
    return out


@pytest.fixture(scope="module")
def monkeypatch_module(data_dir):
    mp = pytest.MonkeyPatch()
    mp.setenv("CDZ_DATA_DIR", str(data_dir))
    mp.setenv("CDZ_NO_DOWNLOAD", "1")
    yield mp
    mp.undo()


def _eval_json(run: Path, capsys, *extra: str) -> dict:
    capsys.readouterr()
    assert main(["eval", "--run", str(run), "--json", "--quiet", *extra]) == 0
    return json.loads(capsys.readouterr().out)


@pytest.mark.slow
def test_small_run_discovers_the_classes_and_recalls(small_run, capsys):
    result = _eval_json(small_run, capsys, "--no-baselines")
    assert result["classes_discovered"] == {"visual": 4, "audio": 4}
    assert result["recall_accuracy"]["visual->audio"] >= 0.85
    assert result["recall_accuracy"]["audio->visual"] >= 0.85
    assert result["generation_accuracy"]["visual->audio"] >= 0.75
    assert result["generation_accuracy"]["audio->visual"] >= 0.75
    assert result["n_test"] == {"visual": 100, "audio": 20}
    for key in ("seed_score", "judge_accuracy", "timing_s", "config"):
        assert key in result


@pytest.mark.slow
def test_eval_changes_nothing_in_the_run(small_run, capsys):
    from agent.core.checkpoint import RunFolder

    run = RunFolder(small_run)
    _, before = run.load_checkpoint()
    first = _eval_json(small_run, capsys, "--no-baselines", "--no-judges")
    second = _eval_json(small_run, capsys, "--no-baselines", "--no-judges")
    _, after = run.load_checkpoint()
    assert first["recall_accuracy"] == second["recall_accuracy"]
    assert before.keys() == after.keys()
    for key in before:
        np.testing.assert_array_equal(before[key], after[key], err_msg=key)


@pytest.mark.slow
def test_recall_of_files_names_the_right_digit(small_run, tmp_path, data_dir, capsys):
    from sensors.file_reading import write_png

    from replay.data.datasets import load_mnist

    img = load_mnist("test", digits=[2], per_class=1).x[0]
    png = tmp_path / "two.png"
    write_png(png, 1.0 - img)  # dark ink on white paper, as a user's photo would be
    wav = data_dir / "fsdd" / "1_jackson_1.wav"
    capsys.readouterr()
    assert main(["recall", "--run", str(small_run), str(png), str(wav), "--json", "--out", str(tmp_path / "out")]) == 0
    results = json.loads(capsys.readouterr().out)
    by_modality = {r["modality"]: r for r in results}
    assert by_modality["visual"]["recalled"]["audio"]["cluster_name"] == 2
    assert by_modality["audio"]["recalled"]["visual"]["cluster_name"] == 1
    for r in results:
        for item in r["recalled"].values():
            assert Path(item["png"]).stat().st_size > 100


@pytest.mark.slow
def test_plots_are_written(small_run):
    assert main(["plots", "--run", str(small_run), "--quiet"]) == 0
    names = {p.name for p in (small_run / "plots").iterdir()}
    assert {"tsne_visual.png", "tsne_audio.png", "cluster_modes.png", "learning_curves.png"} <= names


def test_missing_run_folder_is_a_clear_error(tmp_path, capsys):
    assert main(["eval", "--run", str(tmp_path / "nope")]) == 2
    assert "no run folder" in capsys.readouterr().err


def test_unknown_setting_is_a_clear_error(tmp_path, capsys):
    assert main(["train", "--out", str(tmp_path / "r"), "--set", "cortex.no_such_knob=1"]) == 2
    assert "no_such_knob" in capsys.readouterr().err


def test_missing_data_is_a_clear_error(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("CDZ_DATA_DIR", str(tmp_path / "empty"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("CDZ_NO_DOWNLOAD", "1")
    assert main(["train", "--quiet", "--out", str(tmp_path / "r"), "--set", "data.per_class=5"]) == 2
    err = capsys.readouterr().err
    assert "CDZ_DATA_DIR" in err and "mnist" in err.lower()


def test_help_explains_the_commands():
    out = subprocess.run([sys.executable, "-m", "tools.cli", "--help"], capture_output=True, text=True, check=True).stdout
    for command in ("train", "eval", "replay", "recall", "plots", "bench"):
        assert command in out


def test_seed_score_never_counts_recalling_nothing_as_a_hit():
    from tools.scoring.evaluate import seed_score

    labels = np.array([0, 0, 0, 1, 1])
    assert seed_score(np.array([-1, -1, -1, 5, 5]), labels) == pytest.approx(0.5)
    assert seed_score(np.array([4, 4, -1, 5, 6]), labels) == pytest.approx((2 / 3 + 1 / 2) / 2)


def test_training_into_a_used_folder_needs_overwrite(tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    assert main(["train", "--quiet", "--out", str(out), "--set", "data.per_class=5"]) == 2
    assert "not empty" in capsys.readouterr().err
    assert main(["train", "--quiet", "--overwrite", "--out", str(out), "--set", "data.per_class=5"]) == 2
    assert "not made by cdz" in capsys.readouterr().err
    assert (out / "notes.txt").read_text() == "mine"  # nothing of the user's was deleted


def test_replay_over_seeds_reports_mean_and_min(tmp_path, data_dir, monkeypatch, capsys):
    monkeypatch.setenv("CDZ_DATA_DIR", str(data_dir))
    tiny = ["--set", "data.digits=[0,1]", "--set", 'data.speakers=["jackson"]', "--set", "data.per_class=40",
            "--set", "data.test_per_class=5", "--set", "teacher.epochs=4", "--set", "cortex.initial_nodes=20",
            "--set", "senses.audio.encoder.arch=linear",
            "--set", "senses.visual.encoder.epochs=2", "--set", "refine.at=[]"]  # the summary over seeds, not refinement
    capsys.readouterr()
    assert main(["replay", "--quiet", "--json", "--no-baselines", "--no-judges", "--seeds", "3-4",
                 "--out", str(tmp_path / "r"), *tiny]) == 0
    out = json.loads(capsys.readouterr().out)
    assert [r["seed"] for r in out["seeds"]] == [3, 4]
    assert list(out["per_seed"]) == ["3", "4"]
    for r in out["seeds"]:
        assert out["per_seed"][str(r["seed"])]["classes_discovered"] == r["classes_discovered"]
    exact = [all(v == 2 for v in r["classes_discovered"].values()) for r in out["seeds"]]
    assert out["runs_with_exact_classes"] == sum(exact)
    assert out["exact_classes_per_modality"] == {
        m: sum(r["classes_discovered"][m] == 2 for r in out["seeds"]) for m in ("visual", "audio")}
    for pair, mean in out["mean"]["recall_accuracy"].items():
        values = [r["recall_accuracy"][pair] for r in out["seeds"]]
        assert mean == pytest.approx(sum(values) / 2)
        assert out["min"]["recall_accuracy"][pair] == min(values)
    assert (tmp_path / "r" / "seed3" / "config.toml").exists() and (tmp_path / "r" / "seed4" / "config.toml").exists()


def test_seed_ranges_expand_and_bad_ones_are_refused():
    import argparse

    from tools.cli import _seed_list

    assert _seed_list("0-9") == list(range(10))
    assert _seed_list("0-2,5,7-8,5") == [0, 1, 2, 5, 7, 8]
    for bad in ("5-2", "a", "1-x", ",", ""):
        with pytest.raises(argparse.ArgumentTypeError):
            _seed_list(bad)


@pytest.mark.slow
def test_recall_of_bad_files_is_a_clear_error(small_run, tmp_path, capsys):
    broken = tmp_path / "broken.wav"
    broken.write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk")
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    for bad, word in ((broken, "broken.wav"), (empty, "empty.png"), (tmp_path / "notes.txt", "unknown file type")):
        capsys.readouterr()
        assert main(["recall", "--run", str(small_run), str(bad)]) == 2
        assert word in capsys.readouterr().err
