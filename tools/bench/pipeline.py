"""`cdz bench pipeline`: throughput and latency of the multi-process runtime.

Three measurements in one run, on one machine, so their ratios mean something:

1. lossless throughput: a small real run (MNIST/FSDD subset, quick encoders)
   learned through bus, hub, one worker per modality and the player, as
   `cdz replay --distributed` does; paired teaching events per second of the
   stream phase. The same stream is then learned in-process to give the
   reference rate and to check that both brains end bit-identical.
2. latency at live rates: the trained run's hub and workers in live mode, fed
   30 image frames per second plus two utterances per second with learning on;
   time from a stimulus's capture stamp to the reconstruction it triggers in the
   other modality (stimulus -> worker -> hub -> other worker -> recon: four bus hops).
3. the bare ZeroMQ floor: a round trip through the same bus of messages of the
   same sizes (a 28x28 image out, a 64x64 spectrogram back: two bus hops) to an
   echo process, at the same pace.

Each of the first two runs on a keyed bus (CurveZMQ, as `cdz replay --distributed`
and `cdz live` key their own bus) and again on a plain one, so the cost of the
keys is measured in the same run.
"""

from __future__ import annotations

import multiprocessing
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from agent.runtime.bus import BusClient, session_keys
from agent.core.checkpoint import RunFolder
from agent.runtime.launcher import start_bus
from agent.runtime.supervisor import Supervisor
from agent.runtime.topology import live_roles
from agent.core.messages import Reconstruction, Stimulus

BENCH_SETTINGS = [  # a real run, small enough for a benchmark: ~45k stimuli, quick encoders
    "data.per_class=600", "data.test_per_class=50", "teacher.epochs=4", "senses.visual.encoder.epochs=2",
    "refine.at=[]",  # the stream alone: refinements pause it to retrain encoders, and the in-process reference has none
]


def _percentiles(ms: list[float]) -> dict[str, float]:
    if not ms:
        return {"p50": float("nan"), "p99": float("nan")}
    return {"p50": float(np.percentile(ms, 50)), "p99": float(np.percentile(ms, 99))}


def bench_lossless(out: Path, progress: bool, settings: list[str] | None = None) -> dict:
    """Learn a small real stream through the processes (on a keyed bus, as `cdz replay
    --distributed` does, and again on a plain one), then in-process; rates and identity.
    `settings`: config overrides for the run (default BENCH_SETTINGS; tests pass a tiny one)."""
    from agent.core.brain import learn_stream
    from agent.core.config import Config, override
    from replay.distributed import learn_distributed, prepare_distributed
    from replay.pipeline import Encodings, build_brain

    config = override(Config(), BENCH_SETTINGS if settings is None else settings)
    run, stream, t_enc = prepare_distributed(config, out / "run", progress=progress, overwrite=True)
    shutil.rmtree(out / "plain", ignore_errors=True)
    plain = RunFolder(shutil.copytree(run.path, out / "plain"))  # the same start, for the unkeyed bus
    info = learn_distributed(run, stream, encoders_s=t_enc, progress=progress)["distributed"]
    plain_wall = learn_distributed(plain, stream, progress=progress, secure=False)["distributed"]["stream_wall_s"]
    enc = Encodings.load(run, config.modalities)
    events = np.bincount(stream.event)
    pairs = int((events >= 2).sum())
    brain = build_brain(config, enc, stream)
    t0 = time.perf_counter()
    learn_stream(brain, stream, enc.train, progress=False)
    in_process_s = time.perf_counter() - t0
    _, state = run.load_checkpoint()
    reference = brain.state_dict()
    identical = all(np.array_equal(v, state[k]) for k, v in reference.items() if k in state)
    wall = info["stream_wall_s"]
    return {"run": run, "lossless_pairs_per_s": pairs / wall, "lossless_stimuli_per_s": len(stream) / wall,
            "lossless_pairs_per_s_unkeyed": pairs / plain_wall,
            "in_process_stimuli_per_s": len(stream) / in_process_s, "stimuli": len(stream), "pairs": pairs,
            "lost_stimuli": info["lost_stimuli"], "identical_to_in_process": bool(identical)}


def bench_live(run: RunFolder, seconds: float, bus: str, keys: Path | None = None) -> dict:
    """Live hub and workers on a trained run: capture -> cross-modal reconstruction latency
    (`keys`: the folder of a keyed bus)."""
    from replay.data.senses import sense
    from replay.data.splits import load_splits

    config = run.config()
    test = load_splits(config, "test")
    agent = Supervisor(run, live_roles(run.path, config.modalities), lossless=False, bus=bus, own_bus=False,
                       keys=keys)
    client = BusClient(bus, "bench", [b"recon."], keys=keys)
    try:
        client.handshake()
        agent.start()
        rates = {m: sense(m).rate_hz for m in config.modalities}  # each sense's live rate, as declared
        due = {m: time.monotonic() + 0.5 for m in rates}
        rng = np.random.default_rng(0)
        latencies: list[float] = []
        sent = {m: 0 for m in rates}
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            now = time.monotonic()
            for m, hz in rates.items():
                if now >= due[m]:
                    due[m] += 1.0 / hz
                    x = test[m].x[int(rng.integers(len(test[m].x)))]
                    client.send(Stimulus(modality=m, t_ns=time.time_ns(), seq=sent[m], data=x, source="bench",
                                         mseq=sent[m]))
                    sent[m] += 1
            wait_ms = max(0, int((min(due.values()) - time.monotonic()) * 1000))
            msg = client.recv(wait_ms)
            while msg is not None:
                if isinstance(msg, Reconstruction):
                    latencies.append((time.time_ns() - msg.t_ns) / 1e6)
                msg = client.recv_ready()
    finally:
        agent.stop()
        client.close()
    return {"latency_ms": _percentiles(latencies), "latency_samples": len(latencies), "live_sent": sent,
            "live_rates_hz": rates}


def _echo(bus: str) -> None:
    """Answer every 28x28 message on `bench.ping` with a 64x64 one on `bench.pong`."""
    import zmq

    from agent.runtime.bus import BusAddress

    addr = BusAddress.parse(bus)
    ctx = zmq.Context()
    sub, pub = ctx.socket(zmq.SUB), ctx.socket(zmq.PUB)
    sub.setsockopt(zmq.SUBSCRIBE, b"bench.ping")
    sub.setsockopt(zmq.SUBSCRIBE, b"bench.stop")
    sub.connect(addr.sub)
    pub.connect(addr.pub)
    reply = np.zeros((64, 64), np.float32)
    while True:
        frames = sub.recv_multipart(copy=False)
        if frames[0].bytes == b"bench.stop":
            break
        pub.send_multipart([b"bench.pong", frames[1], reply], copy=False)
    sub.close(0)
    pub.close(0)
    ctx.term()


def bench_zmq(bus: str, seconds: float, hz: float = 32.0) -> dict:
    """Bare round trips through the bus: a 28x28 float32 message out, a 64x64 one back."""
    import zmq

    from agent.runtime.bus import BusAddress

    addr = BusAddress.parse(bus)
    proc = multiprocessing.get_context("spawn").Process(target=_echo, args=(bus,), daemon=True)
    proc.start()
    ctx = zmq.Context()
    sub, pub = ctx.socket(zmq.SUB), ctx.socket(zmq.PUB)
    sub.setsockopt(zmq.SUBSCRIBE, b"bench.pong")
    sub.connect(addr.sub)
    pub.connect(addr.pub)
    ping = np.zeros((28, 28), np.float32)
    rtts: list[float] = []
    try:
        deadline = time.monotonic() + 30  # until the echo answers (subscriptions have travelled)
        while time.monotonic() < deadline:
            pub.send_multipart([b"bench.ping", b"h", ping])
            if sub.poll(100):
                sub.recv_multipart()
                break
        while sub.poll(50):
            sub.recv_multipart()
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            t0 = time.perf_counter_ns()
            pub.send_multipart([b"bench.ping", b"h", ping])
            if sub.poll(1000):
                sub.recv_multipart()
                rtts.append((time.perf_counter_ns() - t0) / 1e6)
            time.sleep(max(0.0, 1.0 / hz - (time.perf_counter_ns() - t0) / 1e9))
        pub.send_multipart([b"bench.stop", b"h"])
    finally:
        proc.join(2)
        if proc.is_alive():
            proc.terminate()
        sub.close(0)
        pub.close(0)
        ctx.term()
    return {"zmq_baseline_ms": _percentiles(rtts), "zmq_samples": len(rtts)}


def bench_pipeline(seconds: float = 10.0, out: Path | None = None, progress: bool = True,
                   settings: list[str] | None = None) -> dict:
    """All three measurements; the JSON contract's keys first. `settings`: see bench_lossless."""
    with tempfile.TemporaryDirectory(prefix="cdz-bench-") as tmp:
        folder = Path(out) if out else Path(tmp)
        lossless = bench_lossless(folder, progress, settings)
        run = lossless.pop("run")
        keys = session_keys()
        try:  # the live path on a keyed bus, as `cdz live` runs it, then on a plain one
            bus_child, bus = start_bus(run.path / "logs" / "bench-keyed-bus.log", extra=["--keys", str(keys)])
            try:
                live = bench_live(run, seconds, bus, keys)
            finally:
                bus_child.stop()
        finally:
            shutil.rmtree(keys, ignore_errors=True)
        bus_child, bus = start_bus(run.path / "logs" / "bench-bus.log")
        try:
            plain = bench_live(run, seconds, bus)
            zmq_rt = bench_zmq(bus, seconds / 2)
        finally:
            bus_child.stop()
    return {"lossless_pairs_per_s": lossless.pop("lossless_pairs_per_s"), "latency_ms": live.pop("latency_ms"),
            "zmq_baseline_ms": zmq_rt.pop("zmq_baseline_ms"), "latency_ms_unkeyed": plain["latency_ms"],
            **lossless, **live, **zmq_rt}


def format_pipeline(r: dict) -> str:
    lines = [
        f"lossless throughput  {r['lossless_pairs_per_s']:8.0f} pairs/s   ({r['lossless_stimuli_per_s']:.0f} stimuli/s; "
        f"in-process {r['in_process_stimuli_per_s']:.0f} stimuli/s; {r['stimuli']} stimuli, lost {r['lost_stimuli']}, "
        f"bit-identical to in-process: {'yes' if r['identical_to_in_process'] else 'NO'})",
        f"live latency         p50 {r['latency_ms']['p50']:6.2f} ms  p99 {r['latency_ms']['p99']:6.2f} ms   "
        f"(capture -> cross-modal reconstruction, {r['latency_samples']} samples at "
        f"{' + '.join(f'{hz:g}/s {m}' for m, hz in r.get('live_rates_hz', {}).items())})",
        f"bare ZeroMQ floor    p50 {r['zmq_baseline_ms']['p50']:6.2f} ms  p99 {r['zmq_baseline_ms']['p99']:6.2f} ms   "
        f"(round trip through the same bus, same message sizes, {r['zmq_samples']} samples)",
        f"keys cost            lossless {r['lossless_pairs_per_s']:.0f} vs {r['lossless_pairs_per_s_unkeyed']:.0f} "
        f"pairs/s unkeyed; live p50 {r['latency_ms']['p50']:.2f} vs {r['latency_ms_unkeyed']['p50']:.2f} ms, "
        f"p99 {r['latency_ms']['p99']:.2f} vs {r['latency_ms_unkeyed']['p99']:.2f} ms unkeyed "
        "(CurveZMQ on the run's own bus)",
    ]
    return "\n".join(lines)
