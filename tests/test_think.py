"""`cdz think`: the stream of thought.

The loop's logic on a fake bus with a fake clock (alternation, depth limit, rate,
interruption, stalls, seeds), `think_report` on a tiny trained run, and the loop
against a real live hub and workers: it mirrors the in-process chain thought for
thought, keeps its rate, stops at once on real input, and changes no weights
unless told to learn from thoughts.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest

from agent.core.messages import Excitation, Reconstruction, Stimulus
from tests.processes import wait_for
from agent.runtime.thought import SEQ_BASE, ThoughtLoop
from tools.think import think_chain, think_report

pytestmark = pytest.mark.timeout(300)

MODALITIES = ("visual", "audio")
SHAPES = {"visual": (28, 28), "audio": (64, 64)}
TINY = ["data.digits=[0,1]", 'data.speakers=["jackson"]', "data.per_class=40", "data.test_per_class=10",
        "teacher.epochs=6", "cortex.initial_nodes=20", "senses.audio.encoder.arch=linear", "senses.visual.encoder.epochs=2", "senses.visual.encoder.batch_size=16",
        "refine.teach_min_steps=40"]  # refinements run, briefly: they are not what these tests are about


# ---------------------------------------------------------------------- the loop on a fake bus
class FakeBus:
    name = "thinker"
    dropped = 0

    def __init__(self) -> None:
        self.sent: list[Stimulus] = []

    def send(self, msg: Stimulus) -> None:
        self.sent.append(msg)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def fake_loop(**kw) -> tuple[ThoughtLoop, FakeBus, Clock]:
    bus, clock = FakeBus(), Clock()
    loop = ThoughtLoop(bus, MODALITIES, SHAPES, clock=clock, seq_base=SEQ_BASE, **kw)
    return loop, bus, clock


def answer(loop: ThoughtLoop, stim: Stimulus, cluster: int = 3) -> None:
    """What worker, hub and the other worker say to one thought: its cluster, then the recollection."""
    other = "audio" if stim.modality == "visual" else "visual"
    loop.handle(Excitation(modality=stim.modality, t_ns=stim.t_ns, seq=stim.seq, cluster_id=cluster, node_id=7,
                           source=f"worker-{stim.modality}", learn=False))
    loop.handle(Reconstruction(modality=other, t_ns=stim.t_ns, seq=stim.seq, cluster_id=cluster + 1,
                               cue_modality=stim.modality, data=np.full(SHAPES[other], 0.5, np.float32),
                      source=f"worker-{other}"))


def test_a_chain_alternates_keeps_the_rate_and_stops_after_max_depth_thoughts():
    loop, bus, clock = fake_loop(rate=2.0, max_depth=5)
    loop.seed_stimulus("visual", np.zeros(SHAPES["visual"], np.float32))
    while loop.running:
        n = len(bus.sent)
        loop.tick()
        if len(bus.sent) > n:
            answer(loop, bus.sent[-1])  # answered at once: only the rate holds the next thought back
        clock.now += 0.05
    assert [s.depth for s in bus.sent] == [0, 1, 2, 3, 4, 5]
    assert [s.modality for s in bus.sent] == ["visual", "audio"] * 3
    assert all(s.internal and not s.learn and s.seq >= SEQ_BASE for s in bus.sent)
    assert len({s.seq for s in bus.sent}) == 6
    assert np.diff([e["elapsed"] for e in loop.chain]).min() >= 0.5 - 1e-9
    assert loop.endings == {0: "complete"} and loop.chain[-1]["end"] == "complete"
    assert loop.stats()["thoughts"] == 5 and loop.stats()["chains"] == 1
    assert [e["cluster"] for e in loop.chain] == [3] * 6 and [e["recalled"] for e in loop.chain] == [4] * 6


def test_real_input_interrupts_and_late_answers_are_ignored():
    loop, bus, clock = fake_loop(rate=10.0, max_depth=20)
    loop.seed_stimulus("visual", np.zeros(SHAPES["visual"], np.float32))
    loop.tick()
    answer(loop, bus.sent[-1])
    clock.now += 0.2
    loop.tick()
    in_flight = bus.sent[-1]
    loop.handle(Stimulus(modality="visual", t_ns=1, seq=5, data=np.zeros(SHAPES["visual"], np.float32),
                         source="camera"))  # real
    answer(loop, in_flight)  # its answer comes late: no further thought
    for _ in range(10):
        clock.now += 0.2
        loop.tick()
    assert len(bus.sent) == 2 and loop.interrupted == 1 and loop.endings == {0: "interrupted"}
    assert not loop.running  # nothing left to think about


def test_a_chain_interrupted_between_thoughts_still_says_how_it_ended(tmp_path):
    """Every thought answered, the next one waiting for the rate: the last logged thought says so."""
    with open(tmp_path / "log.jsonl", "w") as out:
        loop, bus, clock = fake_loop(rate=1.0, max_depth=20, log_file=out)
        loop.seed_stimulus("visual", np.zeros(SHAPES["visual"], np.float32))
        for _ in range(2):
            loop.tick()
            answer(loop, bus.sent[-1])
            clock.now += 1.1
        loop.handle(Stimulus(modality="visual", t_ns=1, seq=5, data=np.zeros(SHAPES["visual"], np.float32),
                             source="camera"))
    lines = (tmp_path / "log.jsonl").read_text().splitlines()
    assert len(bus.sent) == 2 and loop.endings == {0: "interrupted"}
    assert loop.chain[-1]["end"] == "interrupted" and '"end": "interrupted"' in lines[-1] and len(lines) == 2


def test_own_and_internal_stimuli_are_not_input():
    loop, bus, clock = fake_loop(max_depth=20)
    loop.seed_stimulus("visual", np.zeros(SHAPES["visual"], np.float32))
    loop.tick()
    loop.handle(bus.sent[-1])  # our own thought, back from the bus
    loop.handle(Stimulus(modality="audio", t_ns=1, seq=5, data=np.zeros(SHAPES["audio"], np.float32), source="other",
                         internal=True))
    assert loop.interrupted == 0 and loop.active == 0


def test_a_thought_nobody_answers_stalls_the_chain():
    loop, bus, clock = fake_loop(answer_s=1.0)
    loop.seed_stimulus("audio", np.zeros(SHAPES["audio"], np.float32))
    loop.tick()
    clock.now += 1.5
    loop.tick()
    assert loop.endings == {0: "stalled"} and loop.chain[0]["end"] == "stalled"


def test_finish_logs_the_thought_under_way(tmp_path):
    with open(tmp_path / "log.jsonl", "w") as out:
        loop, bus, clock = fake_loop(log_file=out)
        loop.seed_stimulus("visual", np.zeros(SHAPES["visual"], np.float32))
        loop.tick()
        loop.finish()
    (line,) = (tmp_path / "log.jsonl").read_text().splitlines()
    assert '"end": "stopped"' in line and loop.endings == {0: "stopped"}


def test_from_live_seeds_a_chain_with_the_real_stimulus_and_learn_flag_passes():
    loop, bus, clock = fake_loop(from_live=True, learn_from_thoughts=True)
    heard = np.full(SHAPES["audio"], 0.25, np.float32)
    loop.handle(Stimulus(modality="audio", t_ns=1, seq=9, data=heard, source="microphone", mseq=41))
    loop.tick()
    (seed,) = bus.sent
    assert seed.modality == "audio" and seed.depth == 0 and seed.learn and seed.internal
    assert np.array_equal(seed.data, heard) and seed.mseq == 41  # the sensor's mseq: no false gap at the worker
    assert loop.running  # --from-live waits for more input


def test_spontaneous_chains_start_from_noise_only_when_quiet():
    loop, bus, clock = fake_loop(spontaneous=True, quiet_s=1.0)
    loop.handle(Stimulus(modality="visual", t_ns=1, seq=1, data=np.zeros(SHAPES["visual"], np.float32),
                         source="camera"))
    loop.tick()
    assert bus.sent == []  # input just now: no day-dreaming yet
    clock.now += 1.1
    loop.tick()
    (seed,) = bus.sent
    assert seed.data.shape == SHAPES[seed.modality] and 0 <= seed.data.min() and seed.data.max() <= 1
    assert seed.data.std() > 0.1


def test_noise_lets_the_chain_wander_within_the_unit_range():
    loop, bus, clock = fake_loop(noise=0.3, rate=100.0)
    loop.seed_stimulus("visual", np.zeros(SHAPES["visual"], np.float32))
    loop.tick()
    answer(loop, bus.sent[-1])
    clock.now += 0.1
    loop.tick()
    x = bus.sent[-1].data
    assert x.shape == SHAPES["audio"] and x.min() >= 0 and x.max() <= 1 and not np.allclose(x, 0.5)


# ---------------------------------------------------------------------- a tiny trained run
@pytest.fixture(scope="module")
def run(tmp_path_factory, data_dir):
    from agent.core.config import Config, override
    from replay.driver import train

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CDZ_DATA_DIR", str(data_dir))
        return train(override(Config(), TINY), tmp_path_factory.mktemp("think") / "run", progress=False)


def test_think_report_is_sane_and_deterministic(run, data_dir, monkeypatch):
    monkeypatch.setenv("CDZ_DATA_DIR", str(data_dir))
    report = think_report(run, per_digit=3, depth=6)
    print(report)
    assert report == think_report(run, per_digit=3, depth=6)
    assert report["chains"] == 2 * 2 * 3  # modalities x digits x per_digit
    assert set(report["digits"]) == {"0", "1"} and set(report["modalities"]) == set(MODALITIES)
    for part in [report, *report["digits"].values(), *report["modalities"].values()]:
        for key in ("stayed", "drifted", "ended", "seed_on_digit"):
            assert 0.0 <= part[key] <= 1.0, (key, part)
        assert part["stayed"] + part["drifted"] + part["ended"] == pytest.approx(1.0)
        assert 0.0 <= part["mean_stay"] <= 6
        assert sum(part["drift_to"].values()) == round(part["drifted"] * part["chains"])
    assert report["digits"]["0"]["chains"] == 6
    # what the chains really did: the seeds are recognised (their cluster is named as their digit) and
    # some chains hold their digit for all 6 thoughts (thresholds leave room for a different CPU's floats)
    assert report["seed_on_digit"] >= 0.75 and report["stayed"] > 0 and report["mean_stay"] >= 1.0, report
    # and the numbers are those of the chains themselves: recount them from think_chain, digit by digit
    from tools.think import load_mind
    from replay.data.splits import load_splits

    mind = load_mind(run)
    tests = load_splits(mind.config, "test")
    for d in (0, 1):
        stays, seeds_named = [], []
        for m in MODALITIES:
            for i in np.flatnonzero(tests[m].y == d)[:3]:
                steps = think_chain(mind, m, tests[m].x[i], 6)
                names = [s.name for s in steps[1:]]
                stays.append(next((k for k, n in enumerate(names) if n != d), len(names)))
                seeds_named.append(steps[0].name == d)
        part = report["digits"][str(d)]
        assert part["mean_stay"] == pytest.approx(np.mean(stays)) and part["stayed"] == np.mean(np.array(stays) >= 6)
        assert part["seed_on_digit"] == np.mean(seeds_named)


def read_stimulus(path: Path) -> tuple[str, np.ndarray]:
    """(sense, stimulus) of a file as `cdz think --from FILE` takes it: a picture, or a recording's first word."""
    from sensors.files import read_file

    first = read_file(path)[0]
    return first.modality, first.x


# ---------------------------------------------------------------------- against live processes
@pytest.fixture(scope="module")
def live(run, data_dir):
    """A live hub and one live worker per modality on the tiny run (no camera, mic or viewer)."""
    from tools.live import LiveAgent

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CDZ_DATA_DIR", str(data_dir))
        agent = LiveAgent(run, camera=None, use_mic=False, viewer=False)
        try:
            agent.start()
            yield agent
        finally:
            agent.stop()
    assert not any(c.alive() for c in agent.children.values())


def seed_from(loop: ThoughtLoop, path: Path) -> None:
    """Queue a chain from an image file, as `cdz think --from FILE` does."""
    loop.seed_stimulus(*read_stimulus(path))


def thinker(agent, **kw) -> ThoughtLoop:
    from agent.runtime.bus import BusClient

    client = BusClient(agent.bus, "thinker", [b"recon.", b"excite.", b"stimulus."], keys=agent.keys)
    client.handshake(timeout_s=30)
    return ThoughtLoop(client, MODALITIES, SHAPES, **kw)


@pytest.fixture(scope="module")
def seed_png(run, data_dir, tmp_path_factory) -> Path:
    """A test image (as a PNG file) whose in-process chain runs 8 thoughts deep."""
    from sensors.file_reading import write_png
    from tools.think import load_mind
    from replay.data.splits import load_splits

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CDZ_DATA_DIR", str(data_dir))
        images = load_splits(run.config(), "test")["visual"].x
    mind = load_mind(run)
    folder = tmp_path_factory.mktemp("seeds")
    for k, image in enumerate(images):
        path = folder / f"seed{k}.png"
        write_png(path, image)
        if len(think_chain(mind, "visual", read_stimulus(path)[1], 8)) == 9:
            return path
    pytest.fail("no test image gives a chain 8 thoughts deep")


def checkpoint(agent) -> dict[str, np.ndarray]:
    """Ask every live process to save its part; the merged CDZ and cortex arrays."""
    step = agent.checkpoint()
    folder = agent.run.checkpoints_dir / f"{step:012d}"
    wait_for(lambda: all((folder / f"{p}.npz").exists() for p in agent.run.part_names()), 30,
             f"every part of checkpoint {step} in {folder}")
    got, state = agent.run.load_checkpoint()
    assert got == step
    return {k: v for k, v in state.items() if k.startswith(("cdz.", "cortex."))}


def same(a: dict[str, np.ndarray], b: dict[str, np.ndarray], prefix: str) -> bool:
    keys = {k for k in a if k.startswith(prefix)}
    assert keys and keys == {k for k in b if k.startswith(prefix)}
    return all(np.array_equal(a[k], b[k]) for k in keys)


@pytest.mark.slow
def test_a_seeded_chain_on_the_bus_mirrors_the_in_process_chain(live, run, seed_png):
    from tools.think import load_mind

    loop = thinker(live, rate=4.0, max_depth=8)
    try:
        modality, x = read_stimulus(seed_png)
        assert modality == "visual"
        loop.seed_stimulus(modality, x)
        loop.run(timeout_ms=5)
    finally:
        loop.bus.close()
    depths = [e["depth"] for e in loop.chain]
    assert depths == list(range(9)) and loop.thoughts == 8 and loop.endings == {0: "complete"}
    assert [e["modality"] for e in loop.chain] == ["visual", "audio"] * 4 + ["visual"]
    gaps = np.diff([e["elapsed"] for e in loop.chain])
    print(f"inter-thought gaps: {np.round(gaps, 3).tolist()}")
    assert gaps.min() >= 0.25 - 0.005
    steps = think_chain(load_mind(run), "visual", read_stimulus(seed_png)[1], 8)
    assert [(e["cluster"], e["recalled"]) for e in loop.chain] == [(s.cluster, s.recalled) for s in steps]


@pytest.mark.slow
def test_recollections_of_thoughts_are_marked_as_thoughts(live, seed_png):
    """Excitation and Recall carry `internal` and `depth` through the hub, so every reconstruction a
    chain causes arrives marked as a thought of the right depth (the viewer labels it)."""
    from agent.runtime.bus import BusClient

    listener = BusClient(live.bus, "listener", [b"recon."], keys=live.keys)
    listener.handshake(timeout_s=30)
    loop = thinker(live, rate=4.0, max_depth=4)
    try:
        seed_from(loop, seed_png)
        loop.run(timeout_ms=5)
        recons, deadline = [], time.monotonic() + 3.0
        while time.monotonic() < deadline:
            msg = listener.recv(100)
            if isinstance(msg, Reconstruction):
                recons.append(msg)
    finally:
        loop.bus.close()
        listener.close()
    assert recons and all(r.internal for r in recons)
    assert sorted({r.depth for r in recons}) == list(range(loop.thoughts + 1))  # the seed is depth 0


@pytest.mark.slow
def test_real_input_interrupts_a_chain_on_the_bus_and_seeds_the_next(live, seed_png):
    from agent.runtime.bus import BusClient

    real = read_stimulus(seed_png)[1]
    seen: list[tuple[float, Stimulus]] = []  # every stimulus on the bus, as an outsider hears it
    ready, done = threading.Event(), threading.Event()

    def outsider() -> None:
        client = BusClient(live.bus, "camera-ish", [b"stimulus."], keys=live.keys)
        try:
            client.handshake(timeout_s=30)
            ready.set()
            sent = False
            while not done.is_set():
                msg = client.recv(20)
                if isinstance(msg, Stimulus):
                    seen.append((time.monotonic(), msg))
                    if not sent and msg.source == "thinker" and msg.depth == 2:
                        client.send(Stimulus(modality="visual", t_ns=time.time_ns(), seq=1, data=real,
                                             source="camera-ish", learn=False))
                        sent = True
        finally:
            client.close()

    thread = threading.Thread(target=outsider, daemon=True)
    thread.start()
    assert ready.wait(40)
    loop = thinker(live, rate=4.0, max_depth=8, from_live=True, exit_when_idle=True)
    try:
        seed_from(loop, seed_png)
        loop.run(timeout_ms=5)
        wait_for(lambda: {e["seq"] for e in loop.chain} <= {m.seq for _, m in list(seen) if m.source == "thinker"},
                 10, "the outsider to hear every thought sent")
    finally:
        loop.bus.close()
        done.set()
        thread.join(10)
    assert loop.interrupted == 1 and loop.endings == {0: "interrupted", 1: "complete"}
    first = [e for e in loop.chain if e["chain"] == 0]
    assert 3 <= len(first) < 9 and first[-1]["end"] == "interrupted"
    (t_interrupt,) = loop.interrupted_at
    assert all(e["elapsed"] + loop._t0 < t_interrupt for e in first), "a thought of the interrupted chain was sent"
    assert [e["depth"] for e in loop.chain if e["chain"] == 1] == list(range(9))
    ours = {m.seq: m for _, m in seen if m.source == "thinker"}
    assert set(ours) == {e["seq"] for e in loop.chain}  # the bus carried exactly the logged thoughts
    heard = [t for t, m in seen if m.source == "thinker" and m.seq in {e["seq"] for e in loop.chain[-9:]}]
    assert np.diff(heard).min() >= 0.25 - 0.1, np.diff(heard)  # the rate, as an outsider hears it
    seed_1 = next(e for e in loop.chain if e["chain"] == 1)
    assert np.array_equal(ours[seed_1["seq"]].data, real)  # the real stimulus seeded chain 1


@pytest.mark.slow
def test_thoughts_change_no_weights_unless_learning_from_them(live, seed_png):
    before = checkpoint(live)
    loop = thinker(live, rate=8.0, max_depth=6)
    try:
        seed_from(loop, seed_png)
        loop.run(timeout_ms=5)
    finally:
        loop.bus.close()
    assert loop.thoughts >= 2, loop.endings
    after = checkpoint(live)
    assert same(before, after, "cdz.") and same(before, after, "cortex.")

    loop = thinker(live, rate=8.0, max_depth=6, learn_from_thoughts=True)
    try:
        seed_from(loop, seed_png)
        loop.run(timeout_ms=5)
    finally:
        loop.bus.close()
    assert loop.thoughts >= 2, loop.endings
    learned = checkpoint(live)
    assert not same(after, learned, "cdz.") and not same(after, learned, "cortex.")
