"""The runtime entry points (`cdz bus/hub/worker/top/keys`) as real processes on loopback sockets.

A module fixture starts a bus, a live hub and one live worker per modality on an untrained
run folder. The tests then fuzz every topic those processes listen to (all of them must
survive and count what they dropped), overload a worker with a tiny queue (it drops the
oldest and answers the newest), read `cdz top`, and bring up a CurveZMQ-keyed bus.

Every receive has a timeout, and every process started here is stopped (SIGTERM, then
SIGKILL) in a teardown that checks none is left running.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Callable

import msgpack
import numpy as np
import pytest
import zmq
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.runtime.bus import BusAddress, BusClient, BusError, free_tcp_bus
from agent.core.config import Config, override
from agent.runtime.launcher import Child, start_bus
from replay.distributed import prepare_distributed
from agent.core.messages import ClusterChange, Control, Credit, Excitation, Feedback, Recall, Stats, Stimulus
from agent.runtime.wire import CONTROL_ARGS, STATS_FIELDS, WireError, decode, encode

pytestmark = [pytest.mark.timeout(300), pytest.mark.slow]

REPO = Path(__file__).resolve().parents[1]
# the tiny run of tests/test_runtime.py: two digits, one speaker, 960 stimuli
TINY = ["data.digits=[0,1]", 'data.speakers=["jackson"]', "data.per_class=40", "data.test_per_class=10",
        "teacher.epochs=6", "cortex.initial_nodes=20", "senses.audio.encoder.arch=linear", "senses.visual.encoder.epochs=2", "senses.visual.encoder.batch_size=16",
        "refine.teach_min_steps=40"]  # refinements run, briefly: they are not what these tests are about
MODALITIES = ("visual", "audio")
CASES = int(os.environ.get("CDZ_FUZZ_CASES", "2000"))  # fuzzed messages; 100000 for the benchmark-sized run
SHAPES = {"visual": (28, 28), "audio": (64, 64)}
# what each process subscribes to (its declaration in tools/processes/; BusClient adds `control`)
SUBSCRIPTIONS = {
    "hub": (b"excite.", b"clusters.", b"control"),
    **{f"worker-{m}": (f"stimulus.{m}".encode(), f"feedback.{m}".encode(), f"recall.{m}".encode(), b"credit",
                       b"control") for m in MODALITIES},
}
TOPICS = [b"stimulus.visual", b"stimulus.audio", b"excite.visual", b"excite.audio", b"clusters.visual",
          b"feedback.visual", b"feedback.audio", b"recall.visual", b"recall.audio", b"credit", b"control"]


# --------------------------------------------------------------------------- processes
class Processes:
    """The children of one test (or module): started with `Child`, all stopped by `stop_all`."""

    def __init__(self, logs: Path):
        self.logs = logs
        self.children: dict[str, Child] = {}

    def start_bus(self, *extra: str) -> str:
        """A bus on ports it binds itself; its address."""
        self.children["bus"], address = start_bus(self.logs / "bus.log", extra=list(extra))
        return address

    def start(self, name: str, *argv: str) -> Child:
        child = Child(name, list(argv), self.logs / f"{name}.log")
        child.start()
        self.children[name] = child
        return child

    def log_tail(self, name: str, n: int = 2000) -> str:
        path = self.children[name].log_path
        return path.read_text(errors="replace")[-n:] if path.exists() else "(no log)"

    def stop_all(self) -> None:
        """SIGTERM then SIGKILL every child (services first, buses last); fail if any survives."""
        for child in sorted(self.children.values(), key=lambda c: c.name.startswith("bus")):
            child.stop(grace_s=5.0)
        alive = [c.name for c in self.children.values() if c.alive()]
        assert not alive, f"processes left running: {alive}"


def await_ready(client: BusClient, procs: Processes, names: set[str], timeout_s: float = 90.0) -> None:
    """Wait for `ready` from every named process; fail at once, with its log, if one exits."""
    waiting = set(names)
    deadline = time.monotonic() + timeout_s
    while waiting and time.monotonic() < deadline:
        for name in waiting:
            if not procs.children[name].alive():
                pytest.fail(f"{name} exited with {procs.children[name].proc.returncode} before saying ready:\n"
                            f"{procs.log_tail(name)}")
        msg = client.recv(100)
        if isinstance(msg, Control) and msg.command == "ready":
            waiting.discard(msg.source)
    assert not waiting, f"no ready from {sorted(waiting)} within {timeout_s:.0f} s"


def wait_stats(client: BusClient, checks: dict[str, Callable[[dict], bool]], timeout_s: float = 15.0) -> dict:
    """The first stats of each named process that pass its check (stats come about once a second).

    Subscribe to `stats`, not `stats.`: a process whose name is no topic name (`worker-visual`)
    publishes on plain `stats`."""
    got: dict[str, dict] = {}
    last: dict[str, dict] = {}
    deadline = time.monotonic() + timeout_s
    while len(got) < len(checks) and time.monotonic() < deadline:
        msg = client.recv(100)
        if isinstance(msg, Stats) and msg.source in checks and msg.source not in got:
            last[msg.source] = msg.values
            if checks[msg.source](msg.values):
                got[msg.source] = msg.values
    missing = sorted(set(checks) - set(got))
    assert not missing, f"no passing stats from {missing} within {timeout_s:.0f} s; last seen: {last}"
    return got


def wait_excites(client: BusClient, wanted: set[tuple[str, int]], timeout_s: float = 10.0) -> dict:
    """The Excitation of every (modality, seq) in `wanted`, keyed the same way."""
    got: dict[tuple[str, int], Excitation] = {}
    deadline = time.monotonic() + timeout_s
    while len(got) < len(wanted) and time.monotonic() < deadline:
        msg = client.recv(100)
        if isinstance(msg, Excitation) and (msg.modality, msg.seq) in wanted:
            got[(msg.modality, msg.seq)] = msg
    assert set(got) == wanted, f"no excitation for {sorted(wanted - set(got))} within {timeout_s:.0f} s"
    return got


def cli(*argv: str, timeout_s: float = 60.0) -> subprocess.CompletedProcess:
    """`cdz ARGV` as a subprocess (killed by subprocess.run if it outlives the timeout)."""
    return subprocess.run([sys.executable, "-m", "tools.cli", *argv], cwd=REPO, capture_output=True, text=True,
                          timeout=timeout_s)


# --------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def config(data_dir) -> Config:
    return override(Config(), TINY)


@pytest.fixture(scope="module")
def run_path(tmp_path_factory, config, data_dir) -> Path:
    """An untrained run folder (encoders trained, checkpoint 0): live workers seed nodes from stimuli."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CDZ_DATA_DIR", str(data_dir))
        run, _, _ = prepare_distributed(config, tmp_path_factory.mktemp("procs") / "run", progress=False)
    return run.path


@pytest.fixture(scope="module")
def runtime(run_path, tmp_path_factory):
    """A bus, a live hub and a live worker per modality, all ready; `client` hears stats,
    excitations and control. Everything is stopped at the end of the module."""
    procs = Processes(tmp_path_factory.mktemp("logs"))
    client = None
    try:
        addr = procs.start_bus()
        client = BusClient(addr, "tester", [b"stats", b"excite."])
        client.handshake(timeout_s=30)  # before the children start: no ready can be missed
        common = ["--bus", addr, "--run", str(run_path), "--live", "--quiet"]
        procs.start("hub", "hub", *common)
        for m in MODALITIES:
            procs.start(f"worker-{m}", "worker", m, *common)
        await_ready(client, procs, {"hub", *(f"worker-{m}" for m in MODALITIES)})
        yield addr, procs, client
    finally:
        if client is not None:
            client.close()
        procs.stop_all()


@pytest.fixture(scope="module")
def test_images(config, data_dir) -> dict[str, np.ndarray]:
    """Real held-out stimuli per modality (float32 in [0, 1], the workers' input shapes)."""
    from replay.data.splits import load_splits

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CDZ_DATA_DIR", str(data_dir))
        return {m: s.x for m, s in load_splits(config, "test").items()}


# --------------------------------------------------------------------------- fuzzing strategies
ODD_VALUES = st.one_of(st.none(), st.booleans(), st.floats(), st.integers(-2**63, 2**64 - 1), st.text(max_size=8),
                       st.binary(max_size=8), st.lists(st.integers(-3, 3), max_size=3),
                       st.dictionaries(st.text(max_size=3), st.integers(-3, 3), max_size=2))


def valid_message(kind: str, m: str):
    """A valid message of a kind the processes listen to: the fuzzer mutates its frames."""
    other = "audio" if m == "visual" else "visual"
    return {"stimulus": Stimulus(modality=m, t_ns=1, seq=1, data=np.full(SHAPES[m], 0.5, np.float32), source="fuzz"),
            "excite": Excitation(modality=m, t_ns=1, seq=1, cluster_id=0, node_id=0, source="fuzz"),
            "feedback": Feedback(modality=m, t_ns=1, seq=1, node_ids=(0,), cluster_ids=(0,), certainties=(0.5,),
                                 source="fuzz"),
            "recall": Recall(modality=m, t_ns=1, seq=1, cluster_id=0, cue_modality=other, cue_cluster=0, source="fuzz"),
            "clusters": ClusterChange(modality=m, t_ns=1, seq=1, created=(1,), deleted=(), source="fuzz"),
            "credit": Credit(seq=1, t_ns=1, source="fuzz")}[kind]


def split(frames: list) -> tuple[bytes, dict, list[bytes]]:
    return frames[0], msgpack.unpackb(frames[1]), [np.asarray(p).tobytes() for p in frames[2:]]


@st.composite
def raw_garbage(draw) -> list[bytes]:
    """Any number of frames of random bytes (or a random msgpack map as header) on a listened topic."""
    topic = draw(st.one_of(st.sampled_from(TOPICS), st.binary(max_size=20)))
    header = draw(st.one_of(st.binary(max_size=256),
                            st.dictionaries(st.sampled_from(["v", "kind", "mod", "t", "seq", "src", "gen", "cmd",
                                                             "dtype", "shape"]), ODD_VALUES, max_size=8)
                            .map(lambda d: msgpack.packb(d))))
    rest = draw(st.lists(st.binary(max_size=64), max_size=3))
    return draw(st.sampled_from([[topic], [topic, header], [topic, header, *rest]]))


@st.composite
def mutated(draw) -> list[bytes]:
    """A valid message (never a control one) with one field, frame or payload made wrong."""
    how = draw(st.sampled_from(["version", "drop", "field", "dtype", "shape", "nan", "topic", "frames"]))
    kind = "stimulus" if how in ("dtype", "shape", "nan") else \
        draw(st.sampled_from(["stimulus", "excite", "feedback", "recall", "clusters", "credit"]))
    topic, h, payload = split(encode(valid_message(kind, draw(st.sampled_from(MODALITIES)))))
    if how == "version":
        h["v"] = draw(st.one_of(st.integers(-2**63, 2**64 - 1).filter(lambda v: v != 1), ODD_VALUES))
    elif how == "drop":
        del h[draw(st.sampled_from(sorted(h)))]
    elif how == "field":
        h[draw(st.sampled_from(sorted(h)))] = draw(ODD_VALUES)
    elif how == "dtype":
        h["dtype"] = draw(st.sampled_from(["uint8", "int16", "float64", "<f4", "", "object"]))
    elif how == "shape":
        h["shape"] = draw(st.one_of(st.lists(st.integers(-2**63, 2**64 - 1), max_size=6),
                                    st.just([2**40, 2**40]), st.just([2**20] * 4), st.just([27, 28])))
    elif how == "nan":
        pixels = np.frombuffer(payload[0], np.float32).copy()
        pixels[draw(st.integers(0, len(pixels) - 1))] = draw(st.sampled_from([np.nan, np.inf, -np.inf]))
        payload = [pixels.tobytes()]
    elif how == "topic":
        topic = draw(st.sampled_from([t for t in TOPICS if t != topic]))
    else:
        payload = draw(st.sampled_from([[], payload + [b"extra"], [b"x" * 7]]))
    return [topic, msgpack.packb(h), *payload]


WRONG_TYPES = st.one_of(st.none(), st.booleans(), st.floats(allow_nan=False), st.integers(-2**63, -1),
                        st.text(max_size=8), st.binary(max_size=8))


@st.composite
def wrongly_typed(draw) -> list[bytes]:
    """A well-framed control or stats message whose fields a process reads have the wrong type
    (`rewind` with a text generation, `stop` addressed to a number, stats with a text node count)."""
    if draw(st.booleans()):
        command = draw(st.sampled_from(sorted(c for c, fields in CONTROL_ARGS.items() if fields)))
        field = draw(st.sampled_from(sorted(CONTROL_ARGS[command])))
        types, lowest = CONTROL_ARGS[command][field]
        value = draw(WRONG_TYPES.filter(lambda v: type(v) not in types or (lowest is not None and v < lowest)))
        topic, header = encode(Control(command=command, source="fuzz"))
        h = msgpack.unpackb(header)
        h["args"] = {field: value}
    else:
        field = draw(st.sampled_from(sorted(STATS_FIELDS)))
        types, lowest = STATS_FIELDS[field]
        value = draw(WRONG_TYPES.filter(lambda v: type(v) not in types or (lowest is not None and v < lowest)))
        topic, header = encode(Stats(values={}, source="fuzz"))
        h = msgpack.unpackb(header)
        h["values"] = {field: value}
    return [topic, msgpack.packb(h, use_bin_type=True)]


def near_stops() -> list[list[bytes]]:
    """Messages one field away from a valid `stop`: every one must be dropped, none may stop anyone."""
    topic, header = encode(Control(command="stop", source="fuzz"))
    h = msgpack.unpackb(header)
    variants = [{**h, "v": 2}, {**h, "v": True}, {**h, "cmd": "STOP"}, {**h, "cmd": "stop "}, {**h, "args": []},
                {**h, "kind": "controls"}, {**h, "seq": -1}, {**h, "src": "x" * 65}, {**h, "mod": "visual"}]
    return [[topic, msgpack.packb(v)] for v in variants] + \
        [[topic, header, b"payload"], [b"controlx", header], [topic, header[:-1]]]


class RawPublisher:
    """A bare zmq PUB on the bus that sends only messages `decode` rejects, and counts per
    process how many of them that process subscribes to (so must count as bad)."""

    def __init__(self, addr: str):
        self.ctx = zmq.Context()
        self.pub = self.ctx.socket(zmq.PUB)
        self.probe = self.ctx.socket(zmq.SUB)
        for s in (self.pub, self.probe):
            s.setsockopt(zmq.LINGER, 0)
        self.pub.setsockopt(zmq.SNDHWM, 0)  # no silent drops on a loaded machine: every bad message must arrive
        self.probe.setsockopt(zmq.SUBSCRIBE, b"probe.")
        self.pub.connect(BusAddress.parse(addr).pub)
        self.probe.connect(BusAddress.parse(addr).sub)
        self.expected: Counter[str] = Counter()
        self.skipped_valid = 0
        self.sent = 0

    def wait_connected(self, timeout_s: float = 10.0) -> None:
        """Probe (on a topic nobody else hears) until one comes back: the forwarder has then
        passed every subscription to this PUB, so nothing sent from now on is filtered away."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            self.pub.send_multipart([b"probe.", b"x"])
            if self.probe.poll(50):
                return
        raise AssertionError(f"the raw publisher never reached the bus within {timeout_s:.0f} s")

    def send_bad(self, frames: list[bytes]) -> None:
        try:
            decode(frames)  # anything but WireError here would crash a process: let it fail the test
        except WireError:
            pass
        else:
            self.skipped_valid += 1  # valid by chance: never send one (it might even be a stop)
            return
        self.pub.send_multipart(frames)
        self.sent += 1
        for name, prefixes in SUBSCRIPTIONS.items():
            if frames[0].startswith(prefixes):
                self.expected[name] += 1

    def close(self) -> None:
        self.pub.close(0)
        self.probe.close(0)
        self.ctx.term()


# --------------------------------------------------------------------------- tests
@pytest.mark.timeout(300 + CASES // 100)  # CDZ_FUZZ_CASES=480000 (100k per process) takes about half an hour
def test_fuzzed_messages_are_dropped_counted_and_harmless(runtime, test_images):
    """Garbage and near-valid messages on every listened topic: every process stays up,
    counts exactly the bad messages it was sent, and still answers real stimuli."""
    addr, procs, client = runtime
    before = wait_stats(client, {name: lambda v: True for name in SUBSCRIPTIONS})
    raw = RawPublisher(addr)
    try:
        raw.wait_connected()
        for frames in near_stops():
            raw.send_bad(frames)

        @settings(max_examples=CASES, deadline=None, derandomize=True, database=None)
        @given(st.one_of(raw_garbage(), mutated(), wrongly_typed()))
        def publish(frames: list[bytes]) -> None:
            raw.send_bad(frames)

        publish()
    finally:
        raw.close()
    print(f"bad messages sent: {raw.sent}, per process: {dict(raw.expected)}; valid by chance, not sent: "
          f"{raw.skipped_valid}")
    assert raw.sent + raw.skipped_valid >= CASES and all(raw.expected[name] > CASES // 10 for name in SUBSCRIPTIONS), \
        raw.expected
    want = {name: before[name]["bad_messages"] + raw.expected[name] for name in SUBSCRIPTIONS}
    after = wait_stats(client, {name: (lambda v, n=want[name]: v["bad_messages"] >= n) for name in want})
    dead = [name for name, child in procs.children.items() if not child.alive()]
    assert not dead, f"{dead} died of the fuzzing:\n" + "\n".join(procs.log_tail(n) for n in dead)
    assert {name: after[name]["bad_messages"] for name in want} == want, "bad messages miscounted"

    # the runtime still works: real stimuli are learned and the hub hears the excitations
    seqs = {}
    for k, m in enumerate(MODALITIES):
        seqs[m] = 10_000 + k
        client.send(Stimulus(modality=m, t_ns=time.time_ns(), seq=seqs[m], data=test_images[m][0], source="tester",
                             mseq=seqs[m]))
    got = wait_excites(client, {(m, s) for m, s in seqs.items()})
    for (m, _), exc in got.items():
        assert exc.source == f"worker-{m}" and exc.cluster_id >= 0 and exc.node_id >= 0, exc
    processed = after["hub"]["processed"]
    wait_stats(client, {"hub": lambda v: v["processed"] >= processed + len(MODALITIES)})


def test_an_excitation_stamped_far_ahead_is_dropped_and_counted_by_the_hub(runtime, test_images):
    """A sensor clock 10^6 s ahead: the hub counts the excitation as 'ahead' and learns nothing from
    it; stimuli stamped now are still learned."""
    addr, procs, client = runtime
    m = MODALITIES[0]
    before = wait_stats(client, {"hub": lambda v: True})["hub"]
    client.send(Stimulus(modality=m, t_ns=time.time_ns() + 10**15, seq=30_000, data=test_images[m][0], source="tester",
                         mseq=30_000))
    wait_excites(client, {(m, 30_000)})
    after = wait_stats(client, {"hub": lambda v: v["ahead"] == before["ahead"] + 1})["hub"]
    assert after["processed"] == before["processed"]
    client.send(Stimulus(modality=m, t_ns=time.time_ns(), seq=30_001, data=test_images[m][1], source="tester",
                         mseq=30_001))
    wait_excites(client, {(m, 30_001)})
    wait_stats(client, {"hub": lambda v: v["processed"] == before["processed"] + 1 and v["ahead"] == after["ahead"]})


def test_the_running_processes_say_only_what_the_graph_declares(runtime, test_images):
    """`cdz graph` is derived from each process's declaration (tools/processes/): what a live hub
    and its workers really publish while they learn, recall and reconstruct is all declared there."""
    from agent.runtime.topology import graph, live_roles, members

    addr, procs, client = runtime
    says = {p["name"]: set(p["says"]) for p in graph(members(live_roles(Path("r"), MODALITIES)), MODALITIES)["processes"]}
    tap = BusClient(addr, "tap", [b""])  # every topic
    try:
        tap.handshake(timeout_s=30)
        t0 = time.time_ns()
        for k in range(6):  # paired events: each sense's stimulus 0.1 s after the other's
            for j, m in enumerate(MODALITIES):
                client.send(Stimulus(modality=m, t_ns=t0 + k * 300_000_000 + j * 100_000_000, seq=40_000 + k,
                                     data=test_images[m][k],
                                     source="tester", mseq=40_000 + k))
        heard: dict[str, set[str]] = {}
        deadline = time.monotonic() + 6.0
        while time.monotonic() < deadline:
            msg = tap.recv(100)
            if msg is not None and msg.source in says:
                heard.setdefault(msg.source, set()).add(encode(msg)[0].decode())
    finally:
        tap.close()
    for name, topics in heard.items():
        assert topics <= says[name], (name, sorted(topics - says[name]))
    kinds = {t.split(".")[0] for topics in heard.values() for t in topics}
    assert {"excite", "feedback", "recall", "recon", "stats"} <= kinds, kinds  # the test saw real traffic


def test_a_flood_of_cluster_announcements_is_refused_and_counted_by_the_hub(runtime, config):
    """Two valid messages announcing 65,536 clusters each: the hub registers no more than a cortex
    holds (`cortex.max_nodes`), counts the rest, and stays up."""
    addr, procs, client = runtime
    before = wait_stats(client, {"hub": lambda v: True})["hub"]
    for m in MODALITIES:
        client.send(ClusterChange(modality=m, created=tuple(range(10**6, 10**6 + 65536)), source="tester"))
    after = wait_stats(client, {"hub": lambda v: v["refused_clusters"] > before["refused_clusters"]})["hub"]
    assert after["refused_clusters"] >= 2 * (65536 - config.cortex.max_nodes)
    assert procs.children["hub"].alive()


def test_loss_is_counted_per_sender_and_one_message_cannot_claim_millions(runtime, test_images):
    """Two senders with numberings of their own, interleaved: no loss. One skipped number: one
    lost. A number 10^7 ahead: a fresh start (`sequence_jumps`), not ten million lost."""
    addr, procs, client = runtime
    m = MODALITIES[0]
    worker = f"worker-{m}"
    before = wait_stats(client, {worker: lambda v: True})[worker]
    sends = [("cam-a", 0), ("cam-b", 100), ("cam-a", 1), ("cam-b", 101), ("cam-a", 3), ("cam-b", 10**7)]
    for k, (source, mseq) in enumerate(sends):
        client.send(Stimulus(modality=m, t_ns=time.time_ns(), seq=40_000 + k, data=test_images[m][k % 2],
                             source=source, mseq=mseq))
    wait_stats(client, {worker: lambda v: v["learned"] >= before["learned"] + len(sends)
                        and v["lost"] == before["lost"] + 1
                        and v["sequence_jumps"] == before["sequence_jumps"] + 1})


@pytest.mark.parametrize("modality", MODALITIES)
def test_wrong_shape_stimulus_is_rejected_not_fatal(runtime, modality):
    """A stimulus of the wrong shape gets an Excitation with cluster -1 and counts as rejected
    in the worker and the hub; nobody crashes."""
    addr, procs, client = runtime
    worker = f"worker-{modality}"
    before = wait_stats(client, {worker: lambda v: True, "hub": lambda v: True})
    h, w = SHAPES[modality]
    seq = 20_000 + MODALITIES.index(modality)
    client.send(Stimulus(modality=modality, t_ns=time.time_ns(), seq=seq, data=np.full((h - 1, w), 0.5, np.float32),
                         source="tester",
                         mseq=seq))
    exc = wait_excites(client, {(modality, seq)})[(modality, seq)]
    assert exc.cluster_id == -1 and exc.node_id == -1, exc
    wait_stats(client, {worker: lambda v: v["rejected"] == before[worker]["rejected"] + 1,
                        "hub": lambda v: v["rejected"] == before["hub"]["rejected"] + 1})
    assert all(c.alive() for c in procs.children.values())


def test_live_overload_drops_the_oldest_and_answers_the_newest(run_path, test_images, tmp_path):
    """500 stimuli at once into a worker with a queue of 4: it stays up, every stimulus is
    either learned or counted as dropped, and the newest one is answered."""
    procs = Processes(tmp_path / "logs")
    client = None
    n = 500
    try:
        addr = procs.start_bus()
        client = BusClient(addr, "blaster", [b"stats", b"excite.visual"])
        client.handshake(timeout_s=30)
        procs.start("worker-visual", "worker", "visual", "--bus", addr, "--run", str(run_path), "--live", "--quiet",
                    "--queue", "4")
        await_ready(client, procs, {"worker-visual"})
        images = test_images["visual"]
        for seq in range(1, n + 1):
            client.send(Stimulus(modality="visual", t_ns=time.time_ns(), seq=seq, data=images[seq % len(images)],
                                 source="blaster", mseq=seq))
        seen: list[int] = []
        deadline = time.monotonic() + 20
        while (not seen or seen[-1] != n) and time.monotonic() < deadline:
            msg = client.recv(100)
            if isinstance(msg, Excitation):
                assert msg.cluster_id >= 0, msg
                seen.append(msg.seq)
        assert seen and seen[-1] == n, f"the last stimulus was never answered; answered {seen[-10:]}"
        assert seen == sorted(seen), "excitations out of order"
        stats = wait_stats(client, {"worker-visual": lambda v: v["learned"] + v["dropped_oldest"] >= n})
        s = stats["worker-visual"]
        assert s["dropped_oldest"] > 0, s
        assert s["learned"] + s["dropped_oldest"] == n and s["learned"] == len(seen), (s, len(seen))
        assert s["lost"] == 0 and s["bad_messages"] == 0, s
        assert procs.children["worker-visual"].alive()
    finally:
        if client is not None:
            client.close()
        procs.stop_all()


def test_the_live_agent_starts_its_senses_once_the_brain_listens(run_path, tmp_path, data_dir, monkeypatch):
    """A camera on a video file streams from its first frame. Started beside the workers, it sent its
    first cards before they listened; started once they said ready, each card it sends is learned,
    from its first (seq 0) on, with none missing."""
    import shutil

    from agent.core.checkpoint import RunFolder
    from replay.data.datasets import load_mnist
    from tools.material.card_video import make_card_video
    from tools.live import LiveAgent

    monkeypatch.setenv("CDZ_DATA_DIR", str(data_dir))
    test = load_mnist("test", digits=[0, 1], per_class=2)
    video = tmp_path / "cards.avi"
    cards = make_card_video(video, test.x, test.y, seed=1)
    run = RunFolder(shutil.copytree(run_path, tmp_path / "run"))  # the live agent saves into its run
    agent = LiveAgent(run, camera=str(video), use_mic=False, viewer=False)
    seqs: list[int] = []
    try:
        agent.start()
        camera = agent.children["camera"]
        quiet_until = None
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and (quiet_until is None or time.monotonic() < quiet_until):
            msg = agent.client.recv(50)
            if isinstance(msg, Excitation) and msg.modality == "visual":
                seqs.append(msg.seq)
            if quiet_until is None and not camera.alive():
                quiet_until = time.monotonic() + 1.5  # the file has ended: the last answers, then stop
        assert not camera.alive(), "the camera did not finish its video"
    finally:
        agent.stop()
    print(f"{len(cards)} cards, visual excitations for stimuli {seqs}")
    assert len(seqs) >= len(cards), (seqs, len(cards))
    assert seqs == list(range(len(seqs))), f"stimuli lost at the start or on the way: {seqs}"


def test_top_once_json_lists_every_running_process(runtime):
    """`cdz top --once --json` prints one entry per process on the bus, each with its rate."""
    addr, procs, _ = runtime
    done = cli("top", "--bus", addr, "--once", "--json", "--wait", "2.5")
    assert done.returncode == 0, done.stderr[-2000:]
    snapshot = json.loads(done.stdout)
    assert set(snapshot) == {"hub", *(f"worker-{m}" for m in MODALITIES)}, sorted(snapshot)
    for name, values in snapshot.items():
        rate = values.get("rate_per_s")
        assert isinstance(rate, (int, float)) and not isinstance(rate, bool) and rate >= 0, (name, values)


def test_top_on_a_silent_bus_exits_1_and_on_no_bus_exits_2(thread_bus):
    """A bus where nobody publishes stats within --wait: exit 1; no bus at all: exit 2. Scripts can tell."""
    done = cli("top", "--bus", thread_bus, "--once", "--wait", "1")
    assert done.returncode == 1 and "no processes on" in done.stderr, (done.returncode, done.stderr[-2000:])
    done = cli("top", "--bus", free_tcp_bus(), "--once", "--connect-timeout", "1")
    assert done.returncode == 2 and "no bus at" in done.stderr, (done.returncode, done.stderr[-2000:])


def test_keyed_bus_serves_key_holders_only(run_path, tmp_path):
    """`cdz keys`, then a bus and a hub with --keys: a client with the keys hears the hub's
    ready; a client without them cannot even complete a handshake."""
    keys = tmp_path / "keys"
    made = cli("keys", str(keys))
    assert made.returncode == 0, made.stderr[-2000:]
    assert (keys / "bus.key_secret").is_file() and (keys / "client.key_secret").is_file()
    procs = Processes(tmp_path / "logs")
    clients: list[BusClient] = []
    try:
        addr = procs.start_bus("--keys", str(keys))
        holder = BusClient(addr, "holder", keys=str(keys))
        clients.append(holder)
        holder.handshake(timeout_s=30)
        procs.start("hub", "hub", "--bus", addr, "--keys", str(keys), "--run", str(run_path), "--live", "--quiet")
        intruder = BusClient(addr, "intruder")
        clients.append(intruder)
        with pytest.raises(BusError, match="no answer"):
            intruder.handshake(timeout_s=1.0)
        await_ready(holder, procs, {"hub"})
    finally:
        for c in clients:
            c.close()
        procs.stop_all()


def test_public_bus_without_keys_exits_2_naming_keys():
    """Binding every interface without keys is refused with a one-line error, not a traceback."""
    host_port = free_tcp_bus("0.0.0.0").removeprefix("tcp://")
    done = cli("bus", "--bus", f"tcp://{host_port}", timeout_s=30)
    assert done.returncode == 2, (done.returncode, done.stderr[-2000:])
    assert "--keys" in done.stderr and "Traceback" not in done.stderr, done.stderr[-2000:]


def test_a_process_with_a_skewed_clock_measures_it_against_the_hub(runtime, tmp_path, monkeypatch):
    """CDZ_CLOCK_SKEW_MS puts a recorder's clock 700 ms ahead: it measures that against the hub's
    clock within 2 ms, and `cdz top --once --json` shows it beside the unskewed workers."""
    addr, procs, client = runtime
    monkeypatch.setenv("CDZ_CLOCK_SKEW_MS", "recorder=700")
    procs.start("recorder", "record", "--bus", addr, "--topics", "nothing.", str(tmp_path / "quiet.mcap"))
    monkeypatch.delenv("CDZ_CLOCK_SKEW_MS")
    try:
        # sure within 2 ms: at once on a quiet machine; on a busy one, after an exchange that waited behind nothing
        wait_stats(client, {"recorder": lambda v: v.get("clock_known") is True and v.get("clock_exchanges", 0) >= 3
                            and v.get("clock_uncertainty_ms", 1e9) < 2.0}, timeout_s=60)
        done = cli("top", "--bus", addr, "--once", "--json", "--wait", "2.5")
        assert done.returncode == 0, done.stderr[-2000:]
        snapshot = json.loads(done.stdout)
        assert abs(snapshot["recorder"]["clock_offset_ms"] - 700.0) < 2.0, snapshot["recorder"]
        assert 0 <= snapshot["recorder"]["clock_uncertainty_ms"] < 2.0, snapshot["recorder"]
        for name in (f"worker-{m}" for m in MODALITIES):
            assert snapshot[name]["clock_known"] is True and abs(snapshot[name]["clock_offset_ms"]) < 2.0, snapshot[name]
        assert snapshot["hub"]["clock_offset_ms"] == 0.0 and snapshot["hub"]["clock_uncertainty_ms"] == 0.0
    finally:
        procs.children.pop("recorder").stop(grace_s=5.0)
