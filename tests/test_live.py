"""`cdz live`: the event log that joins excitations with recalls, and the whole live agent on real parts."""

from __future__ import annotations

import io
import json
import time

from agent.core.messages import Excitation, Recall
from tools.live import EventLog
from tools.bench.live_session import recall_in_halves

NAMES = {"visual": {3: 7, 4: 1}, "audio": {10: 7, 11: 1}}


def lines(out: io.StringIO) -> list[dict]:
    return [json.loads(line) for line in out.getvalue().splitlines()]


def test_an_excitation_and_its_recall_make_one_line_with_scoring_names():
    out = io.StringIO()
    log = EventLog(out, ("visual", "audio"), NAMES)
    log.add(Excitation(modality="visual", t_ns=2_000_000_000, seq=5, cluster_id=3, node_id=9))
    assert out.getvalue() == ""  # waits for the recall
    log.add(Recall(modality="audio", t_ns=2_000_000_000, seq=5, cluster_id=10, cue_modality="visual", cue_cluster=3))
    (event,) = lines(out)
    assert event == {"t": 2.0, "modality": "visual", "seq": 5, "cluster": 3, "cluster_name": 7,
                     "recalled": {"audio": 10}, "recalled_names": {"audio": 7}}


def test_a_stimulus_that_recalls_nothing_is_written_after_the_wait():
    out = io.StringIO()
    log = EventLog(out, ("visual", "audio"), NAMES, wait_s=0.05)
    log.add(Excitation(modality="audio", t_ns=1, seq=8, cluster_id=99,
                       node_id=1))  # a cluster born live: no scoring name
    log.flush()
    assert out.getvalue() == ""
    time.sleep(0.06)
    log.flush()
    (event,) = lines(out)
    assert event["cluster_name"] is None and event["recalled"] == {"visual": None}
    assert log.written == 1


def test_a_session_is_scored_by_halves_from_the_event_log_strictly():
    """Each said word is matched to the first audio event stamped near it; a word never heard,
    or one whose stimulus recalled another digit or nothing, counts as wrong."""
    out = io.StringIO()
    log = EventLog(out, ("visual", "audio"), NAMES)
    said = [(10.0, 7), (12.0, 1), (14.0, 7), (16.0, 1), (18.0, 7), (20.0, 1)]
    heard = {10.0: 11, 12.0: 11, 16.0: 11, 18.0: 10, 20.0: 10}  # said at -> the visual cluster the word recalled
    for seq, (at, cluster) in enumerate(heard.items()):
        t_ns = int((at + 0.05) * 1e9)  # the word's onset, a little after it was played
        log.add(Excitation(modality="audio", t_ns=t_ns, seq=seq, cluster_id=10, node_id=1))
        log.add(Recall(modality="visual", t_ns=t_ns, seq=seq, cluster_id={10: 3, 11: 4}[cluster], cue_modality="audio",
                       cue_cluster=10))
    log.add(Excitation(modality="visual", t_ns=int(14.1e9), seq=99, cluster_id=3,
                       node_id=2))  # a card near a word: not a word
    log.add(Recall(modality="audio", t_ns=int(14.1e9), seq=99, cluster_id=10, cue_modality="visual", cue_cluster=3))
    # first half: 7 -> 1 (wrong), 1 -> 1 (right), 7 unheard (wrong); second: 1 -> 1, 7 -> 7 (right), 1 -> 7 (wrong)
    score = recall_in_halves(lines(out), said, "audio", "visual")
    assert score == {"items": 6, "heard": 5, "first_half": 1 / 3, "second_half": 2 / 3, "all": 0.5}


def test_recalls_of_other_stimuli_do_not_mix():
    out = io.StringIO()
    log = EventLog(out, ("visual", "audio"), NAMES)
    log.add(Excitation(modality="visual", t_ns=1, seq=1, cluster_id=3, node_id=0))
    log.add(Excitation(modality="visual", t_ns=2, seq=2, cluster_id=4, node_id=0))
    log.add(Recall(modality="audio", t_ns=2, seq=2, cluster_id=11, cue_modality="visual", cue_cluster=4))
    log.add(Recall(modality="audio", t_ns=9, seq=7, cluster_id=10, cue_modality="visual", cue_cluster=3))  # nobody's
    log.flush(everything=True)
    got = {e["seq"]: e["recalled"]["audio"] for e in lines(out)}
    assert got == {2: 11, 1: None}


# ---------------------------------------------------------------------- the whole live agent
import os  # noqa: E402
import signal  # noqa: E402
import sys  # noqa: E402
import subprocess  # noqa: E402
from pathlib import Path  # noqa: E402

import re  # noqa: E402
import threading  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from agent.runtime.bus import BusClient, BusError  # noqa: E402
from agent.core.messages import Control, Stats  # noqa: E402

try:
    from tests.processes import wait_for
    from tests.pulse import play_wav_into_sink, pulse_sink  # noqa: F401  (pulse_sink is a fixture)
except ImportError:  # pragma: no cover - run from inside tests/
    from processes import wait_for
    from pulse import play_wav_into_sink, pulse_sink  # noqa: F401

TINY = ["data.digits=[0,1]", 'data.speakers=["jackson"]', "data.per_class=40", "data.test_per_class=10",
        "teacher.epochs=6", "cortex.initial_nodes=20", "senses.audio.encoder.arch=linear", "senses.visual.encoder.epochs=2", "senses.visual.encoder.batch_size=16"]


def digits_at(events: list[dict], spans: list[tuple[float, float, int]], prior: float | None = None) -> list:
    """The digit of the span (start s, end s, digit; times from the start of the video or recording)
    each event falls in, None for none. The sensors stamp wall-clock times that start at an unknown
    moment: the one offset that puts the most events inside spans is used (nearest `prior` on ties)."""
    ts = [e["t"] for e in events]

    def digits(offset: float, slack: float = 0.05) -> list:
        return [next((d for a, b, d in spans if a - slack <= t - offset <= b + slack), None) for t in ts]

    offsets = [t - a for t in ts for a, _, _ in spans]  # some event at the start of some span
    if not offsets:
        return []
    best = max(offsets, key=lambda o: (sum(d is not None for d in digits(o)), -abs(o - (prior or o))))
    return digits(best)


def _has_events(path: Path, visual: int, audio: int) -> bool:
    """Whether the live event log holds at least this many visual and audio events (whole lines only)."""
    lines = path.read_text().split("\n")[:-1] if path.exists() else []
    kinds = [json.loads(line)["modality"] for line in lines]
    return kinds.count("visual") >= visual and kinds.count("audio") >= audio


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_cdz_live_sees_hears_recalls_and_checkpoints(tmp_path, data_dir, pulse_sink):
    """The live agent on a trained run: a filmed card video as the camera, spoken digits played into a
    real (null) sound device, the viewer headless. Every card and word becomes an event with a
    cluster, the viewer draws, a live checkpoint is saved, and nothing is left running."""
    from agent.core.config import Config, override
    from replay.data.datasets import list_fsdd_files, load_mnist
    from tools.material.card_video import make_card_video
    from replay.driver import train
    from tools.material.utterance_audio import build_recording, write_wav

    run = train(override(Config(), TINY), tmp_path / "run", progress=False)
    base_step = run.load_checkpoint()[0]
    test = load_mnist("test", digits=[0, 1], per_class=3)
    cards = make_card_video(tmp_path / "cards.avi", test.x, test.y, seed=0)
    words = list_fsdd_files("test", digits=[0, 1], per_class=2, speakers=["jackson"])
    wave, said = build_recording(words, seed=0)
    wav = write_wav(tmp_path / "words.wav", wave)
    events, view = tmp_path / "events.jsonl", tmp_path / "view"
    cmd = [sys.executable, "-m", "tools.cli", "live", "--run", str(run.path), "--camera", str(tmp_path / "cards.avi"),
           "--mic", pulse_sink.device, "--headless", str(view), "--duration", "60", "--events-out", str(events),
           "--quiet"]
    live = subprocess.Popen(cmd, env={**os.environ, "CDZ_DATA_DIR": str(data_dir)},
                            cwd=Path(__file__).resolve().parent.parent, stderr=subprocess.PIPE, text=True)
    err_lines: list[str] = []
    reader = threading.Thread(target=lambda: err_lines.extend(iter(live.stderr.readline, "")), daemon=True)
    reader.start()
    try:
        # started: `cdz live` names its bus once hub and workers are ready ...
        line = wait_for(lambda: next((x for x in err_lines if "running on" in x), None) or live.poll() is not None,
                        90, "`cdz live` to say it is running")
        assert isinstance(line, str), "".join(err_lines)[-3000:]
        bus, keys = re.search(r"running on (\S+) with the keys in (\S+)", line).groups()
        # its bus is keyed for this session: a process without the keys hears nothing, and its stop
        # (which would end every process) never arrives
        intruder = BusClient(bus, "intruder", [b"stats"])
        try:
            with pytest.raises(BusError, match="no answer"):
                intruder.handshake(timeout_s=3)
            for _ in range(20):
                intruder.send(Control(command="stop", args={}, source="intruder"))
        finally:
            intruder.close()
        # ... and the microphone listens: it publishes stats only once its device delivers sound
        listener = BusClient(bus, "test", [b"stats"], keys=keys)
        try:
            listener.handshake(timeout_s=30)

            def microphone_stats() -> bool:
                msg = listener.recv(100)
                return isinstance(msg, Stats) and msg.source == "microphone" or live.poll() is not None

            wait_for(microphone_stats, 30, "the microphone's first stats (it is listening)", interval=0)
        finally:
            listener.close()
        assert live.poll() is None, "".join(err_lines)[-3000:]
        played_at = time.time()  # the wall clock the sensors stamp stimuli with
        play_wav_into_sink(wav)
        # once every card and word has its event (or 10 s on), stop it as a user would: Ctrl-C
        deadline = time.monotonic() + 10.0
        while live.poll() is None and time.monotonic() < deadline and not _has_events(events, len(cards), len(said)):
            time.sleep(0.2)
        if live.poll() is None:
            live.send_signal(signal.SIGINT)
        live.wait(timeout=60)
    finally:
        if live.poll() is None:
            live.kill()
        reader.join(10)
    err = "".join(err_lines)
    assert live.returncode == 0, err[-3000:]
    got = [json.loads(line) for line in events.read_text().splitlines()]
    seen = [e for e in got if e["modality"] == "visual"]
    heard = [e for e in got if e["modality"] == "audio"]
    print(f"{len(seen)} visual events for {len(cards)} cards, {len(heard)} audio events for {len(said)} words")
    assert len(seen) >= len(cards) and all(e["cluster"] >= 0 for e in seen)
    assert len(heard) >= len(said) - 1 and all(e["cluster"] >= 0 for e in heard)
    # what it recalled is the digit it was shown or told (the truth is read only here)
    fps = 15  # make_card_video's default
    shown = digits_at(seen, [(c["first"] / fps, (c["last"] + 2) / fps, c["label"]) for c in cards])
    told = digits_at(heard, [(u.start_s - 0.2, u.end_s, u.digit) for u in said], prior=played_at)
    for name, events_, truth, other in (("cards", seen, shown, "audio"), ("words", heard, told, "visual")):
        right = [e["recalled_names"][other] == d for e, d in zip(events_, truth)]
        wrong = [e["recalled_names"][other] not in (None, d) for e, d in zip(events_, truth)]
        print(f"{name}: shown {truth}; named {[e['cluster_name'] for e in events_]}; recalled "
              f"{[e['recalled_names'][other] for e in events_]}: {sum(right)} right, {sum(wrong)} wrong")
        assert None not in truth, f"an event of the {name} falls outside every {name[:-1]}"
        if name == "cards":
            assert np.mean(right) >= 0.75, f"only {sum(right)} of {len(right)} cards recall their digit"
        else:  # four words: half must recall their digit, at most one another digit
            assert sum(right) >= len(said) // 2 and sum(wrong) <= 1, (right, wrong)
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


def test_a_live_session_bench_without_a_new_voice_is_a_clear_error(tmp_path, capsys):
    from tools.cli import main

    assert main(["bench", "live", "--run", str(tmp_path), "--session-sink", "cdz_null"]) == 2
    err = capsys.readouterr().err
    assert "--session-sink needs --speaker" in err and "Traceback" not in err
