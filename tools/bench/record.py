"""`cdz bench record`: what the Foxglove views cost the recorder, per message, in one run.

The same messages are written with and without their views (`RecordingWriter(views=...)`),
alternating, `repeats` times each; the medians and their ratio are reported.
Messages come from a recording (`--recording FILE.mcap`: its real traffic), or
else a live-like mix built from the test sets: per event an image stimulus, its
excitation, feedback, the recall it causes and the decoded spectrogram.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from agent.core.messages import Excitation, Feedback, Message, Recall, Reconstruction, Stimulus
from agent.runtime.wire import WireError, decode, encode
from replay.recording import RecordingWriter, read_recording


def live_mix(events: int = 3000) -> list[Message]:
    """Five messages per event, with real images and spectrograms (MNIST and FSDD test sets)."""
    from replay.data.datasets import load_fsdd, load_mnist

    images, sounds = load_mnist("test", per_class=300).x, load_fsdd("test").x
    out: list[Message] = []
    for i in range(events):
        t = 1_800_000_000_000_000_000 + i * 33_000_000
        out += [Stimulus(modality="visual", t_ns=t, seq=i, data=images[i % len(images)], source="camera", mseq=i),
                Excitation(modality="visual", t_ns=t, seq=i, cluster_id=5, node_id=7, source="worker-visual"),
                Feedback(modality="visual", t_ns=t, seq=i, node_ids=(7,), cluster_ids=(5,), certainties=(0.9,),
                         source="hub"),
                Recall(modality="audio", t_ns=t, seq=i, cluster_id=5, cue_modality="visual", cue_cluster=3,
                       source="hub"),
                Reconstruction(modality="audio", t_ns=t, seq=i, cluster_id=5, cue_modality="visual",
                               data=sounds[i % len(sounds)], source="worker-audio")]
    return out


def recorded(path: Path | str) -> list[Message]:
    out = []
    for _, _, frames in read_recording(path):
        try:
            out.append(decode(frames))
        except WireError:
            continue
    return out


def bench_record(messages: list[Message], repeats: int = 3) -> dict[str, Any]:
    frames = [encode(m) for m in messages]
    times: dict[bool, list[float]] = {False: [], True: []}
    sizes: dict[bool, int] = {}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bench.mcap"
        for _ in range(repeats):
            for views in (False, True):
                writer = RecordingWriter(path, views=views)
                t0 = time.perf_counter()
                for f, m in zip(frames, messages):
                    writer.write(f, time.time_ns(), m)
                writer.close()
                times[views].append((time.perf_counter() - t0) / len(messages))
                sizes[views] = path.stat().st_size
    without, with_views = float(np.median(times[False])), float(np.median(times[True]))
    return {"messages": len(messages), "repeats": repeats,
            "us_per_message": {"wire_only": 1e6 * without, "with_views": 1e6 * with_views},
            "messages_per_s": {"wire_only": 1 / without, "with_views": 1 / with_views},
            "ratio": with_views / without, "file_mb": {"wire_only": sizes[False] / 1e6, "with_views": sizes[True] / 1e6}}


def format_record(r: dict[str, Any]) -> str:
    us, rate, mb = r["us_per_message"], r["messages_per_s"], r["file_mb"]
    return (f"{r['messages']} messages, median of {r['repeats']}:\n"
            f"  wire frames only  {us['wire_only']:6.1f} us/message  {rate['wire_only']:8.0f}/s  {mb['wire_only']:6.1f} MB\n"
            f"  with the views    {us['with_views']:6.1f} us/message  {rate['with_views']:8.0f}/s  {mb['with_views']:6.1f} MB\n"
            f"  cost of the views: {r['ratio']:.2f}x per message")
