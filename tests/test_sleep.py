"""Experience and sleep: the buffer keeps what was lived, sleep teaches the sense that met
something new, changes nothing when it cannot teach, and does not forget."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

from agent.core.autoencoder import encode, load_autoencoder
from agent.core.checkpoint import RunFolder
from agent.core.experience import Experience
from agent.core.pairs import pairs_within
from agent.core.sleep import learns, novelty
from tools.cli import main

from tests.runs import train_run


# ---------------------------------------------------------------------------------------- the buffer
def test_experience_keeps_the_newest_stimuli_oldest_first():
    e = Experience((2, 2), capacity=3)
    assert len(e) == 0 and e.arrays()[0].shape == (0, 2, 2)
    for k in range(5):
        e.add(np.full((2, 2), k, np.float32), 100 + k)
    x, t = e.arrays()
    assert t.tolist() == [102, 103, 104] and x[:, 0, 0].tolist() == [2, 3, 4]
    assert len(e) == 3 and e.seen == 5
    assert e.newest(2)[1].tolist() == [103, 104] and e.newest(9)[1].tolist() == [102, 103, 104]
    assert e.newest(0)[0].shape == (0, 2, 2)


def test_what_was_lived_since_a_saved_cut_is_the_newest_tail():
    """After a swap a worker learns again what it lived since the checkpoint's cut (agent.runtime.worker.reload)."""
    e = Experience((1,), capacity=4)
    for k in range(3):
        e.add(np.full(1, k, np.float32), k)
    cut = e.state_dict("experience.v")
    for k in range(3, 9):
        e.add(np.full(1, k, np.float32), k)
    since = e.seen - Experience((1,), capacity=4).seen_in(cut, "experience.v")
    assert since == 6 and e.newest(since)[1].tolist() == [5, 6, 7, 8]  # all the buffer still holds of them


@pytest.mark.parametrize("added", [0, 2, 3, 7])
def test_experience_survives_a_checkpoint_round_trip(added):
    e = Experience((2,), capacity=3)
    for k in range(added):
        e.add(np.array([k, -k], np.float32), k)
    again = Experience((2,), capacity=3)
    again.load_state_dict(e.state_dict("experience.v"), "experience.v")
    for a, b in zip(e.arrays(), again.arrays()):
        np.testing.assert_array_equal(a, b)
    again.add(np.array([9, 9], np.float32), 99)  # and it goes on in the right order
    e.add(np.array([9, 9], np.float32), 99)
    np.testing.assert_array_equal(e.arrays()[1], again.arrays()[1])


def test_experience_refuses_wrong_shapes():
    e = Experience((2, 2), capacity=3)
    with pytest.raises(ValueError, match="shape"):
        e.add(np.zeros((3, 2), np.float32), 0)
    with pytest.raises(ValueError, match="expected"):
        e.load_state_dict({"p.x": np.zeros((2, 5)), "p.t_ns": np.zeros(2, np.int64)}, "p")


def test_pairs_within_finds_exactly_the_events_within_the_window():
    a, b = pairs_within(np.array([0, 10, 20]), np.array([30, 9, 11, 0]), 1)
    assert sorted(zip(a.tolist(), b.tolist())) == [(0, 3), (1, 1), (1, 2)]


def test_novelty_tells_a_new_voice_from_a_familiar_one():
    from agent.core.config import CortexSettings
    from agent.core.cortex import Cortex

    rng = np.random.default_rng(0)
    cortex = Cortex("audio", 4, CortexSettings(initial_nodes=50), epoch=1000)
    old = rng.normal(size=(2000, 4)).astype(np.float32)
    for k, z in enumerate(old[:500]):
        cortex.excite(z, float(k))
    familiar = rng.normal(size=(300, 4)).astype(np.float32)
    new = familiar + np.float32(1.5)  # the same shapes, somewhere else
    assert 0.3 < novelty(cortex, familiar, old) < 0.7
    assert novelty(cortex, new, old) > 0.9


def test_only_a_sense_that_met_something_newer_than_its_partner_learns():
    assert learns("audio", {"visual": 0.45, "audio": 1.0}, 0.65)
    assert not learns("visual", {"visual": 0.45, "audio": 1.0}, 0.65)  # familiar: it teaches
    assert not learns("visual", {"visual": 0.8, "audio": 0.95}, 0.65)  # new, but taught by a newer one
    assert learns("visual", {"visual": 0.95, "audio": 0.95}, 0.65) and learns("audio", {"visual": 0.95, "audio": 0.95}, 0.65)
    assert not learns("audio", {"visual": 0.5, "audio": 0.6}, 0.65)


def test_living_the_experience_again_leaves_the_cdz_clock_where_it_was():
    """After a sleep the live stream goes on at wall-clock times: the rehearsal must not leave
    the CDZ in the future, or every later excitation would be dropped as stale. The nodes learn
    the experience again; the CDZ's connections, which counted it once while awake, do not."""
    from agent.core.brain import Brain
    from agent.core.config import Config, CortexSettings
    from agent.core.sleep import rehearse

    rng = np.random.default_rng(1)
    brain = Brain(Config(cortex=CortexSettings(initial_nodes=10)), {"visual": 3, "audio": 3}, {"visual": 100, "audio": 100})
    for k in range(40):
        brain.learn("visual" if k % 2 else "audio", rng.normal(size=3).astype(np.float32), 100.0 + k * 0.7)
    t_max, recent = brain.cdz.t_max, list(brain.cdz.recent)
    w_before = {p: w.copy() for p, w in brain.cdz.W.items()}
    age_before = {p: a.copy() for p, a in brain.cdz.age.items()}
    pos_before = {m: c.pos[: c.n_hi].copy() for m, c in brain.cortices.items()}
    pairs_before = brain.cdz.counters.pairs
    codes = {m: rng.normal(size=(20, 3)).astype(np.float32) for m in ("visual", "audio")}
    times = {m: (np.arange(20) * 1.5e9 + 0.3e9 * k).astype(np.int64) for k, m in enumerate(("visual", "audio"))}
    assert rehearse(brain, codes, times) == 40
    assert brain.cdz.t_max == t_max and list(brain.cdz.recent) == recent and brain.cdz.associating
    assert brain.cdz.counters.pairs > pairs_before  # the pairs were seen again (and gave feedback) ...
    assert all(np.array_equal(w, w_before[p]) for p, w in brain.cdz.W.items())  # ... but grew nothing
    assert all(np.array_equal(a, age_before[p]) for p, a in brain.cdz.age.items())
    assert any(not np.array_equal(c.pos[: len(pos_before[m])], pos_before[m]) for m, c in brain.cortices.items())
    assert brain.learn("visual", codes["visual"][0], t_max + 0.5) is not None
    assert brain.cdz.counters.stale == 0


# ---------------------------------------------------------------------------------------- sleep on a run
TINY = ["data.digits=[0,1,2]", 'data.speakers=["jackson"]', "data.per_class=150", "data.test_per_class=300",
        "teacher.epochs=6", "cortex.initial_nodes=40", "senses.audio.encoder.arch=linear", "senses.visual.encoder.epochs=8", "senses.visual.encoder.batch_size=32"]
NEW_VOICE = "theo"


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, data_dir) -> Path:
    with pytest.MonkeyPatch.context() as mp:  # `cdz sleep` reads old training stimuli: keep the data there
        mp.setenv("CDZ_DATA_DIR", str(data_dir))
        yield train_run(tmp_path_factory, data_dir, TINY)


def _digest(run: Path) -> dict[str, str]:
    """Content hash of every file that sleep may write."""
    files = [*sorted((run / "encoders").glob("*.pt")), *sorted((run / "checkpoints").rglob("*.npz")), run / "encodings.npz"]
    return {str(f.relative_to(run)): hashlib.sha256(f.read_bytes()).hexdigest() for f in files}


def _with_experience(run: RunFolder, experience: dict[str, tuple[np.ndarray, np.ndarray]]) -> None:
    """Put a lived experience into the newest checkpoint, as the live workers save it."""
    step, state = run.load_checkpoint()
    for m, (x, t) in experience.items():
        state |= {f"experience.{m}.x": x, f"experience.{m}.t_ns": t, f"experience.{m}.seen": np.array(len(x))}
    run.save_checkpoint(step, state)


def test_sleep_without_a_shared_experience_is_a_clear_error_and_changes_nothing(tiny_run, tmp_path, capsys):
    import shutil

    from replay.data.datasets import load_mnist

    run_path = tmp_path / "run"
    shutil.copytree(tiny_run, run_path)
    run = RunFolder(run_path)
    before = _digest(run_path)
    assert main(["sleep", "--run", str(run_path)]) == 2  # a run that never lived: no experience at all
    assert "holds no visual or audio stimuli" in capsys.readouterr().err
    assert _digest(run_path) == before
    images = load_mnist("train", digits=[0, 1, 2], per_class=5).x
    _with_experience(run, {"visual": (images, np.arange(len(images), dtype=np.int64) * 10**9)})
    before = _digest(run_path)
    assert main(["sleep", "--run", str(run_path)]) == 2  # only images, no words
    assert "holds no audio stimuli" in capsys.readouterr().err
    assert _digest(run_path) == before


def test_sleep_offline_without_its_data_says_so_and_downloads_nothing(tiny_run, tmp_path, capsys, monkeypatch):
    """A sleep replays old training stimuli. Where they are missing and CDZ_NO_DOWNLOAD is set, it stops
    with the data message (where it looked, how to fix it), asks the network for nothing, changes nothing."""
    import shutil
    import urllib.request

    from replay.data.datasets import load_mnist

    run_path = tmp_path / "run"
    shutil.copytree(tiny_run, run_path)
    run = RunFolder(run_path)
    images = load_mnist("train", digits=[0, 1], per_class=10).x  # lived before the data went away
    sounds = np.random.default_rng(0).random((20, 64, 64)).astype(np.float32)
    times = np.arange(20, dtype=np.int64) * 10**9
    _with_experience(run, {"visual": (images, times), "audio": (sounds, times + 10**8)})
    before = _digest(run_path)
    monkeypatch.setenv("CDZ_DATA_DIR", str(tmp_path / "no-data"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "no-cache"))
    monkeypatch.setenv("CDZ_NO_DOWNLOAD", "1")
    asked: list[object] = []
    monkeypatch.setattr(urllib.request, "urlopen", lambda *a, **k: asked.append(a) or pytest.fail("downloaded"))
    assert main(["sleep", "--run", str(run_path)]) == 2
    err = capsys.readouterr().err
    assert "data not found" in err and "CDZ_NO_DOWNLOAD is set" in err and str(tmp_path / "no-data") in err, err
    assert not asked and _digest(run_path) == before


def test_playing_a_runs_stream_offline_without_its_data_says_so(tiny_run, tmp_path, capsys, monkeypatch):
    """`cdz play --run` (here for this module's tiny run) reads the run's training stimuli before it
    connects: offline and without them, the same data message, and no network."""
    import urllib.request

    monkeypatch.setenv("CDZ_DATA_DIR", str(tmp_path / "no-data"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "no-cache"))
    monkeypatch.setenv("CDZ_NO_DOWNLOAD", "1")
    monkeypatch.setattr(urllib.request, "urlopen", lambda *a, **k: pytest.fail("downloaded"))
    assert main(["play", "--run", str(tiny_run), "--bus", "tcp://127.0.0.1:5999", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "data not found" in err and "CDZ_NO_DOWNLOAD is set" in err, err


@pytest.mark.parametrize("damage", ["short_times", "negative_seen"])
def test_sleep_refuses_a_damaged_experience_as_a_worker_does_and_changes_nothing(tiny_run, tmp_path, capsys,
                                                                                damage):
    import shutil

    from replay.data.datasets import load_mnist

    run_path = tmp_path / "run"
    shutil.copytree(tiny_run, run_path)
    run = RunFolder(run_path)
    images = load_mnist("train", digits=[0, 1], per_class=10).x
    _with_experience(run, {"visual": (images, np.arange(len(images), dtype=np.int64) * 10**9)})
    step, state = run.load_checkpoint()
    if damage == "short_times":
        state["experience.visual.t_ns"] = state["experience.visual.t_ns"][:5]
    else:
        state["experience.visual.seen"] = np.array(-10)
    run.save_checkpoint(step, state)
    before = _digest(run_path)
    assert main(["sleep", "--run", str(run_path)]) == 2
    err = capsys.readouterr().err
    assert "damaged checkpoint" in err and "experience.visual" in err, err
    assert _digest(run_path) == before


@pytest.mark.slow
def test_sleep_learns_a_new_voice_and_does_not_forget(tiny_run, tmp_path, capsys):
    """Trained on one speaker, shown digits while a new speaker names them, then asleep: the
    new speaker's unheard words are recalled better, and the standard test recall stays
    within 1 point (the forgetting guard)."""
    import shutil

    from replay.data.datasets import load_fsdd, load_mnist
    from replay.data.teacher import make_stream
    from tools.bench.adapt import Agent
    from replay.data.splits import load_splits

    run_path = tmp_path / "run"
    shutil.copytree(tiny_run, run_path)
    run = RunFolder(run_path)
    config = run.config()
    train, test = load_splits(config, "train"), load_splits(config, "test")
    voice = load_fsdd("train", digits=[0, 1, 2], speakers=[NEW_VOICE])
    unheard = load_fsdd("test", digits=[0, 1, 2], speakers=[NEW_VOICE])
    digits = load_mnist("train", digits=[0, 1, 2], per_class=300)

    def scores() -> dict[str, float]:
        agent = Agent.load(run)
        names = {m: agent.names(m, train[m].x, train[m].y) for m in config.modalities}
        out = {"new voice": float(np.mean(agent.recall_names("audio", unheard.x, names["visual"]) == unheard.y))}
        for m, other in (("visual", "audio"), ("audio", "visual")):
            out[m] = float(np.mean(agent.recall_names(m, test[m].x, names[other]) == test[m].y))
        return out

    before = scores()
    stream = make_stream({"visual": digits.y, "audio": voice.y}, config.teacher, 120, seed=1)
    lived = {m: [] for m in config.modalities}
    for t, k, i in zip(stream.t, stream.modality, stream.index):  # what the live workers would have buffered
        m = stream.modalities[k]
        lived[m].append(((digits if m == "visual" else voice).x[i], int(t * 1e9)))
    _with_experience(run, {m: (np.stack([x for x, _ in v]), np.array([t for _, t in v], np.int64))
                           for m, v in lived.items()})
    capsys.readouterr()
    assert main(["sleep", "--run", str(run_path)]) == 0
    said = capsys.readouterr().out
    assert "audio novelty" in said and "now stage 3" in said
    after = scores()
    print(before, after, said)
    assert after["new voice"] >= before["new voice"] + 0.1
    assert after["visual"] >= before["visual"] - 0.01 and after["audio"] >= before["audio"] - 0.01
    assert load_autoencoder(run.stage_encoder_path("audio", 3)) is not None
    z = encode(load_autoencoder(run.encoder_path("audio")), unheard.x[:2])
    assert np.isfinite(z).all()
