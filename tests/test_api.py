"""The newcomer's path: the Python API (`agent.api.Agent`), packs (`cdz pack`), familiarity, words in a
recording, and `cdz think` leaving the run it reads alone."""

from __future__ import annotations

import io
import json
import re
import zipfile
from pathlib import Path

import cv2
import numpy as np
import pytest
from scipy.io import wavfile

from agent.core.storage import RunError
from tools.cli import main

from tests.runs import train_run

REPO = Path(__file__).resolve().parents[1]
TINY = ["data.digits=[0,1]", 'data.speakers=["jackson"]', "data.per_class=40", "data.test_per_class=5",
        "teacher.epochs=2", "cortex.initial_nodes=10", "senses.audio.encoder.arch=linear", "senses.visual.encoder.epochs=1",
        "senses.visual.encoder.batch_size=16", "refine.at=[]"]


@pytest.fixture(scope="module")
def run(tmp_path_factory, data_dir) -> Path:
    return train_run(tmp_path_factory, data_dir, TINY, name="api")


@pytest.fixture(scope="module")
def one_png(data_dir, tmp_path_factory) -> Path:
    """A handwritten 1 (an MNIST test digit) drawn dark on a large white page, off centre."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CDZ_DATA_DIR", str(data_dir))
        from replay.data.datasets import load_mnist

        split = load_mnist("test", digits=[1], per_class=1)
    page = np.full((300, 400), 240, np.uint8)
    page[40:152, 220:332] = 240 - np.round(cv2.resize(split.x[0], (112, 112)) * 220).astype(np.uint8)
    path = tmp_path_factory.mktemp("pictures") / "one.png"
    cv2.imwrite(str(path), page)
    return path


def _word(data_dir: Path, name: str) -> tuple[np.ndarray, int]:
    rate, wave = wavfile.read(data_dir / "fsdd" / name)
    return wave.astype(np.float32) / 32768.0, rate


def test_the_readme_example_runs_as_written(run, one_png, data_dir, tmp_path, monkeypatch):
    """The README's API example, taken from the README itself, on a tiny run."""
    readme = (REPO / "README.md").read_text()
    section = readme[readme.index("## Python API"):]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs").mkdir()
    (tmp_path / "runs" / "demo").symlink_to(run, target_is_directory=True)
    (tmp_path / "seven.png").write_bytes(one_png.read_bytes())
    image = cv2.imread(str(one_png), cv2.IMREAD_GRAYSCALE)
    wave, rate = _word(data_dir, "1_jackson_5.wav")
    scope = {"image": image, "wave": wave, "rate": rate}
    exec(compile(code, "README.md", "exec"), scope)
    r, agent = scope["r"], scope["agent"]
    assert r.sense == "visual" and r.cluster >= 0 and 0.0 <= r.familiarity <= 1.0
    assert r.recalled["audio"].cluster is not None and r.imagined["audio"].shape == (64, 64)
    assert (tmp_path / "runs" / "demo-more" / "checkpoints" / "LATEST").exists()
    from agent import Agent

    again = Agent.load(tmp_path / "runs" / "demo-more")
    assert again.stimuli_learned == agent.stimuli_learned
    state, saved = agent.brain.state_dict(), again.brain.state_dict()
    assert state.keys() == saved.keys() and all(np.array_equal(state[k], saved[k]) for k in state)


def test_learning_a_pair_moves_the_brain_and_each_input_must_hold_one_stimulus(run, one_png, data_dir):
    from agent import Agent
    from sensors.errors import FeatureError

    agent = Agent.load(run)
    before = agent.stimuli_learned
    clusters = agent.learn(one_png, _word(data_dir, "1_jackson_5.wav"))
    assert len(clusters) == 2 and all(c >= 0 for c in clusters)
    assert agent.stimuli_learned == before + 2
    two_words = _two_words(data_dir)
    with pytest.raises(FeatureError, match="holds 2"):
        agent.learn(one_png, two_words)
    with pytest.raises(FeatureError, match="cannot perceive"):
        agent.recall(["not", "an", "input"])


def _two_words(data_dir: Path) -> tuple[np.ndarray, int]:
    """Two FSDD words with half a second of faint noise before, between and after them."""
    (a, rate), (b, _) = _word(data_dir, "0_jackson_5.wav"), _word(data_dir, "1_jackson_6.wav")
    quiet = np.random.default_rng(0).normal(0.0, 1e-3, int(0.5 * rate)).astype(np.float32)
    return np.concatenate([quiet, a, quiet, b, quiet]), rate


def test_each_word_of_a_recording_is_recalled(run, data_dir, tmp_path, capsys):
    wave, rate = _two_words(data_dir)
    path = tmp_path / "two.wav"
    wavfile.write(path, rate, np.round(wave * 32767).astype(np.int16))
    capsys.readouterr()
    assert main(["recall", "--run", str(run), str(path), "--out", str(tmp_path / "out"), "--json"]) == 0
    results = json.loads(capsys.readouterr().out)
    assert [r["word"] for r in results] == [1, 2]
    assert results[0]["end_s"] <= results[1]["start_s"]
    first_end = 0.5 + len(_word(data_dir, "0_jackson_5.wav")[0]) / rate
    assert results[0]["start_s"] < first_end < results[1]["start_s"] + 0.2
    for r in results:  # what it heard, what it imagines, and the imagined picture
        assert Path(r["seen"]).exists() and Path(r["recalled"]["visual"]["png"]).exists()


def test_recall_writes_the_imagined_sound(run, one_png, tmp_path, capsys):
    capsys.readouterr()
    assert main(["recall", "--run", str(run), str(one_png), "--out", str(tmp_path), "--json"]) == 0
    (r,) = json.loads(capsys.readouterr().out)
    rate, wave = wavfile.read(r["recalled"]["audio"]["wav"])
    assert rate == 8000 and len(wave) >= 7000 and np.abs(wave).max() > 1000
    assert Path(r["seen"]).name == "one.visual-seen.png"


def test_familiarity_tells_digits_from_noise(run, data_dir):
    from agent import Agent

    agent = Agent.load(run)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CDZ_DATA_DIR", str(data_dir))
        from replay.data.datasets import load_mnist

        digits = load_mnist("test", digits=[0, 1], per_class=5).x
    rng = np.random.default_rng(0)
    known = [agent.recall_stimulus("visual", x).familiarity for x in digits]
    noise = [agent.recall_stimulus("visual", rng.random((28, 28), dtype=np.float32)).familiarity for _ in range(10)]
    assert np.median(known) > 0.2 and max(noise) < 0.02, (known, noise)
    assert all(agent.recall_stimulus("visual", rng.random((28, 28), dtype=np.float32)).novel for _ in range(3))


def test_a_pack_is_small_answers_like_its_run_and_holds_no_pickle(run, one_png, data_dir, tmp_path, capsys,
                                                                  monkeypatch):
    monkeypatch.setenv("CDZ_DATA_DIR", str(data_dir))
    pack = tmp_path / "tiny.cdzpack"
    capsys.readouterr()
    assert main(["pack", "--run", str(run), "--out", str(pack)]) == 0
    assert "## Scores" in capsys.readouterr().out
    assert main(["pack", "--run", str(run), "--out", str(pack)]) == 2  # one overwrite rule: refused without --overwrite
    assert "--overwrite" in capsys.readouterr().err
    with zipfile.ZipFile(pack) as z:
        names = set(z.namelist())
        assert names == {"pack.json", "card.md", "config.toml", "names.json", "brain.npz", "encoders/visual.npz",
                         "encoders/visual.json", "encoders/audio.npz", "encoders/audio.json"}
        for name in names:
            if name.endswith(".npz"):
                with np.load(io.BytesIO(z.read(name)), allow_pickle=False) as arrays:
                    assert all(arrays[k].dtype != object for k in arrays.files)
    assert pack.stat().st_size < sum(f.stat().st_size for f in run.rglob("*") if f.is_file())
    from agent import Agent

    here, there = Agent.load(run), Agent.load(pack)
    word = _word(data_dir, "1_jackson_5.wav")
    for what in (one_png, word):
        a, b = here.recall(what), there.recall(what)
        assert (a.cluster, a.familiarity, a.recalled) == (b.cluster, b.familiarity, b.recalled)
    capsys.readouterr()
    assert main(["recall", "--run", str(pack), str(one_png), "--out", str(tmp_path / "p"), "--json"]) == 0
    from_pack = json.loads(capsys.readouterr().out)
    assert main(["recall", "--run", str(run), str(one_png), "--out", str(tmp_path / "r"), "--json"]) == 0
    from_run = json.loads(capsys.readouterr().out)
    assert main(["recall", "--run", str(pack), str(one_png)]) == 0  # no --out: beside the pack
    assert (tmp_path / "tiny-recall" / "one.audio.png").exists()
    capsys.readouterr()
    assert [(r["cluster"], r["recalled"]["audio"]["cluster"]) for r in from_pack] == \
        [(r["cluster"], r["recalled"]["audio"]["cluster"]) for r in from_run]
    scores = {}
    for agent_file in (run, pack):  # eval encodes the data with the pack's own encoders
        assert main(["eval", "--run", str(agent_file), "--no-baselines", "--no-judges", "--json", "--quiet"]) == 0
        scores[agent_file] = json.loads(capsys.readouterr().out)
    assert scores[run]["recall_accuracy"] == scores[pack]["recall_accuracy"]
    assert scores[run]["classes_discovered"] == scores[pack]["classes_discovered"]
    assert main(["sleep", "--run", str(pack)]) == 2  # learning is saved into a run folder, not a pack
    assert "cdz unpack" in capsys.readouterr().err
    assert main(["unpack", "--run", str(pack), "--out", str(tmp_path / "mine")]) == 0
    assert Agent.load(tmp_path / "mine").recall(one_png).cluster == here.recall(one_png).cluster


def test_a_damaged_pack_is_one_clear_error(run, tmp_path):
    from agent.pack import unpack, write_pack
    from replay.naming import run_names
    from agent.core.checkpoint import RunFolder

    good = tmp_path / "good.cdzpack"
    write_pack(RunFolder(run), good, run_names(RunFolder(run)))
    raw = good.read_bytes()
    cases = {"truncated": raw[: len(raw) // 2], "not a zip": b"hello", "empty": b""}
    buf = io.BytesIO()
    with zipfile.ZipFile(good) as z, zipfile.ZipFile(buf, "w") as out:
        for name in z.namelist():
            data = z.read(name)
            if name == "brain.npz":  # an object array: loading it would need pickle
                objects = io.BytesIO()
                np.savez(objects, **{"cortex.visual.pos": np.array([{"a": 1}], dtype=object)})
                data = objects.getvalue()
            out.writestr(name, data)
    cases["pickled brain"] = buf.getvalue()
    for label, data in cases.items():
        bad = tmp_path / f"{label}.cdzpack"
        bad.write_bytes(data)
        with pytest.raises(RunError, match=str(bad.name)):
            unpack(bad, tmp_path / f"out-{label.replace(' ', '-')}")
        assert not (tmp_path / f"out-{label.replace(' ', '-')}").exists()


def test_think_reads_a_run_without_writing_into_it(run, one_png, data_dir, monkeypatch):
    monkeypatch.setenv("CDZ_DATA_DIR", str(data_dir))
    before = sorted(p.relative_to(run) for p in (run / "checkpoints").rglob("*"))
    assert main(["think", "--run", str(run), "--from", str(one_png), "--max-depth", "3", "--quiet"]) == 0
    assert sorted(p.relative_to(run) for p in (run / "checkpoints").rglob("*")) == before


def test_version(capsys):
    from agent import __version__

    with pytest.raises(SystemExit) as stop:
        main(["--version"])
    assert stop.value.code == 0 and capsys.readouterr().out.strip() == f"cdz-agent {__version__}"


def test_a_saved_config_reruns_and_bars_stay_off_a_log(run, data_dir, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("CDZ_DATA_DIR", str(data_dir))
    capsys.readouterr()
    assert main(["train", "--config", str(run / "config.toml"), "--print-config"]) == 0
    assert capsys.readouterr().out == (run / "config.toml").read_text()
    assert main(["train", "--config", str(run / "config.toml"), "--seed", "3", "--set", "teacher.epochs=1",
                 "--print-config"]) == 0
    printed = capsys.readouterr().out
    assert "seed = 3" in printed and "epochs = 1" in printed
    assert main(["train", "--config", str(tmp_path / "missing.toml"), "--print-config"]) == 2
    assert "missing.toml" in capsys.readouterr().err
    # stderr here is not a terminal: training writes no progress-bar frames into it
    assert main(["train", "--config", str(run / "config.toml"), "--out", str(tmp_path / "again")]) == 0
    err = capsys.readouterr().err
    assert "\r" not in err and "it/s" not in err and "stim/s" not in err, err[-500:]


def test_the_agent_follows_the_voice_it_hears_and_a_new_session_starts_afresh(run, data_dir):
    """A word is heard with the session's mean and spread traded for the training ones (agent.core.session_mean):
    after many words in a tinted 'voice', the tint is mostly gone from what the agent takes in."""
    from agent import Agent
    from replay.data.datasets import load_fsdd

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CDZ_DATA_DIR", str(data_dir))
        said = load_fsdd("test", digits=[0, 1], speakers=["jackson"]).x
    agent = Agent.load(run)
    varied = agent.coders["audio"].input_std.numpy() > 0.01  # bins its training words (nearly) never moved stay put
    tint = np.linspace(0.15, -0.1, said.shape[1], dtype=np.float32)[:, None]
    first = agent.recall_stimulus("audio", np.clip(said[0] + tint, 0, 1))
    np.testing.assert_allclose(first.stimulus[varied], np.clip(said[0] + tint, 0, 1)[varied], atol=1e-5)
    for x in said:
        agent.recall_stimulus("audio", np.clip(x + tint, 0, 1))
    late = agent.recall_stimulus("audio", np.clip(said[0] + tint, 0, 1))
    untinted = np.abs(late.stimulus - said[0])[varied].mean()
    assert untinted < 0.5 * np.abs(np.broadcast_to(tint, said[0].shape))[varied].mean(), untinted
    agent.new_session()
    again = agent.recall_stimulus("audio", np.clip(said[0] + tint, 0, 1)).stimulus
    np.testing.assert_allclose(again, first.stimulus, atol=1e-6)
