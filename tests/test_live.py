"""`cdz live`: the event log that joins excitations with recalls, and the whole live agent on real parts."""

from __future__ import annotations

import io
import json
import time

from agent.wire import Excite, Recall
from tools.live import EventLog

NAMES = {"visual": {3: 7, 4: 1}, "audio": {10: 7, 11: 1}}


def lines(out: io.StringIO) -> list[dict]:
    return [json.loads(line) for line in out.getvalue().splitlines()]


def test_an_excitation_and_its_recall_make_one_line_with_scoring_names():
    out = io.StringIO()
    log = EventLog(out, ("visual", "audio"), NAMES)
    log.add(Excite("visual", 2_000_000_000, 5, cluster_id=3, node_id=9))
    assert out.getvalue() == ""  # waits for the recall
    log.add(Recall("audio", 2_000_000_000, 5, cluster_id=10, cue_modality="visual", cue_cluster=3))
    (event,) = lines(out)
    assert event == {"t": 2.0, "modality": "visual", "seq": 5, "cluster": 3, "cluster_name": 7,
                     "recalled": {"audio": 10}, "recalled_names": {"audio": 7}}


def test_a_stimulus_that_recalls_nothing_is_written_after_the_wait():
    out = io.StringIO()
    log = EventLog(out, ("visual", "audio"), NAMES, wait_s=0.05)
    log.add(Excite("audio", 1, 8, cluster_id=99, node_id=1))  # a cluster born live: no scoring name
    log.flush()
    assert out.getvalue() == ""
    time.sleep(0.06)
    log.flush()
    (event,) = lines(out)
    assert event["cluster_name"] is None and event["recalled"] == {"visual": None}
    assert log.written == 1


def test_recalls_of_other_stimuli_do_not_mix():
    out = io.StringIO()
    log = EventLog(out, ("visual", "audio"), NAMES)
    log.add(Excite("visual", 1, 1, cluster_id=3, node_id=0))
    log.add(Excite("visual", 2, 2, cluster_id=4, node_id=0))
    log.add(Recall("audio", 2, 2, cluster_id=11, cue_modality="visual", cue_cluster=4))
    log.add(Recall("audio", 9, 7, cluster_id=10, cue_modality="visual", cue_cluster=3))  # nobody's
    log.flush(everything=True)
    got = {e["seq"]: e["recalled"]["audio"] for e in lines(out)}
    assert got == {2: 11, 1: None}


# ---------------------------------------------------------------------- the whole live agent
import os  # noqa: E402
import sys  # noqa: E402
import subprocess  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402

try:
    from tests.pulse import play_wav_into_sink, pulse_sink  # noqa: F401  (pulse_sink is a fixture)
except ImportError:  # pragma: no cover - run from inside tests/
    from pulse import play_wav_into_sink, pulse_sink  # noqa: F401

TINY = ["data.digits=[0,1]", 'data.speakers=["jackson"]', "data.per_class=40", "data.test_per_class=10",
        "teacher.epochs=6", "cortex.initial_nodes=20", "visual_encoder.epochs=2", "visual_encoder.batch_size=16"]


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_cdz_live_sees_hears_recalls_and_checkpoints(tmp_path, data_dir, pulse_sink):
    """The live agent on a trained run: a filmed card video as the camera, spoken digits played into a
    real (null) sound device, the viewer headless. Every card and word becomes an event with a
    cluster, the viewer draws, a live checkpoint is saved, and nothing is left running."""
    from agent.config import Config, override
    from replay.datasets import list_fsdd_files, load_mnist
    from tools.card_video import make_card_video
    from tools.train import train
    from tools.utterance_audio import build_recording, write_wav

    run = train(override(Config(), TINY), tmp_path / "run", progress=False)
    base_step = run.load_checkpoint()[0]
    test = load_mnist("test", digits=[0, 1], per_class=3)
    cards = make_card_video(tmp_path / "cards.avi", test.x, test.y, seed=0)
    words = list_fsdd_files("test", digits=[0, 1], per_class=2, speakers=["jackson"])
    wave, said = build_recording(words, seed=0)
    wav = write_wav(tmp_path / "words.wav", wave)
    events, view = tmp_path / "events.jsonl", tmp_path / "view"
    cmd = [sys.executable, "-m", "tools.cli", "live", "--run", str(run.path), "--camera", str(tmp_path / "cards.avi"),
           "--mic", pulse_sink.device, "--headless", str(view), "--duration", "25", "--events-out", str(events),
           "--quiet"]
    live = subprocess.Popen(cmd, env={**os.environ, "CDZ_DATA_DIR": str(data_dir)},
                            cwd=Path(__file__).resolve().parent.parent, stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(12)  # the processes start; the video plays in real time from its start
        play_wav_into_sink(wav)
        _, err = live.communicate(timeout=120)
    finally:
        if live.poll() is None:
            live.kill()
    assert live.returncode == 0, err[-3000:]
    got = [json.loads(line) for line in events.read_text().splitlines()]
    seen = [e for e in got if e["modality"] == "visual"]
    heard = [e for e in got if e["modality"] == "audio"]
    print(f"{len(seen)} visual events for {len(cards)} cards, {len(heard)} audio events for {len(said)} words")
    assert len(seen) >= len(cards) and all(e["cluster"] >= 0 for e in seen)
    assert len(heard) >= len(said) - 1 and all(e["cluster"] >= 0 for e in heard)
    assert any(e["recalled"]["audio"] is not None for e in seen)
    assert list(view.glob("*.png")) and list(view.glob("*.avi"))
    step, state = run.load_checkpoint()
    assert step > base_step and (run.checkpoints_dir / f"{step:012d}" / "cdz.npz").exists()
    assert int(state["cortex.visual.scalars"][0]) > int(np.load(run.checkpoints_dir / f"{base_step:012d}" / "brain.npz")
                                                      ["cortex.visual.scalars"][0])  # it went on learning
    # what it lived through is kept for sleep: every learned card and word, with increasing event times
    for m, lo, hi in (("visual", len(cards), len(seen)), ("audio", len(said) - 1, len(heard))):
        x, t = state[f"experience.{m}.x"], state[f"experience.{m}.t_ns"]
        assert len(x) == len(t) and lo <= len(x) <= hi, (m, len(x), lo, hi)
        assert np.isfinite(x).all() and (np.diff(t) >= 0).all()
