"""A show-and-tell session through the real live pipeline, in real time (for `cdz bench adapt --live`).

Cards of handwritten digits are filmed (`tools.material.card_video`) and played as the
camera; the new speaker's words are played into a sound device (a PulseAudio
null sink whose monitor is the microphone), each word 0.4 s after its card
comes into view. `cdz live` runs on a copy of the run with every real process:
camera, microphone, workers, hub. The words are started against the camera's
own clock (its first preview frame), so cards and words pair within B as a
teacher's would.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from agent.runtime.bus import BusClient, free_tcp_bus
from agent.runtime.launcher import REPOSITORY
from agent.core.messages import Frame, Stats
from tools.material.card_video import make_card_video
from tools.material.utterance_audio import SAMPLE_RATE, build_recording, write_wav

FPS = 15
SHOW_S, GAP_S = 1.5, 0.7  # a card is in view 1.5 s, after 0.7 s of empty background
WORD_AFTER_S = 0.4  # a word starts this long after its card comes into view
START_MARGIN_S = 3.0  # the words start this long after the camera's first frame (earlier words are left out)


def live_show_and_tell(run_path: Path, cards_x: np.ndarray, cards_y: np.ndarray, words: list[Path], sink: str,
                       mic_device: str, work: Path, seed: int = 0, live_args: Sequence[str] = ("--no-viewer",),
                       record: Path | None = None) -> dict:
    """Play the session through `cdz live` on `run_path`; returns what was shown, said and learned.

    `live_args`: more `cdz live` arguments (default: no viewer); `record`: also run
    `cdz record` into this file for the whole session."""
    work.mkdir(parents=True, exist_ok=True)
    truth = make_card_video(work / "cards.avi", cards_x, cards_y, seed=seed, fps=FPS, show_s=SHOW_S, gap_s=GAP_S)
    onsets = [c["first"] / FPS for c in truth]
    duration = (truth[-1]["last"] + 1) / FPS + GAP_S
    bus = free_tcp_bus()
    cmd = [sys.executable, "-m", "tools.cli", "live", "--run", str(run_path), "--camera", str(work / "cards.avi"),
           "--mic", mic_device, *live_args, "--bus", bus, "--duration", f"{duration + 25:.0f}",
           "--events-out", str(work / "events.jsonl"), "--quiet"]
    live = subprocess.Popen(cmd, env=os.environ.copy(), cwd=REPOSITORY, stderr=open(work / "live.err", "w"))
    recorder = None
    watcher = BusClient(bus, "session", [b"frame.", b"stats."])
    try:
        watcher.handshake(timeout_s=60)
        if record is not None:
            recorder = subprocess.Popen([sys.executable, "-m", "tools.cli", "record", str(record), "--bus", bus,
                                         "--duration", f"{duration + 20:.0f}", "--quiet"], cwd=REPOSITORY,
                                        stderr=open(work / "record.err", "w"))
        v0 = None
        deadline = time.monotonic() + 90
        while v0 is None and time.monotonic() < deadline:
            msg = watcher.recv(100)
            if isinstance(msg, Frame):
                v0 = msg.t_ns / 1e9  # wall time of the video's first frame
        if v0 is None:
            raise RuntimeError(f"no camera frame within 90 s; see {work / 'live.err'}")
        start = v0 + START_MARGIN_S
        said = [(k, onsets[k] + WORD_AFTER_S - START_MARGIN_S) for k in range(len(words))
                if onsets[k] + WORD_AFTER_S - START_MARGIN_S > 0.1]
        wave = np.zeros(int((duration - START_MARGIN_S + 1) * SAMPLE_RATE), np.float32)
        for k, at in said:
            w, _ = build_recording([words[k]], lead_s=0.0, gap_s=(0.0, 0.0), seed=seed + k)
            i = int(at * SAMPLE_RATE)
            wave[i : i + len(w)] += w[: len(wave) - i]
        write_wav(work / "words.wav", wave)
        time.sleep(max(0.0, start - time.time()))
        player = subprocess.run(["paplay", f"--device={sink}", str(work / "words.wav")], capture_output=True,
                                timeout=duration + 60)
        if player.returncode != 0:
            raise RuntimeError(f"paplay failed: {player.stderr.decode(errors='replace')}")
        stats: dict[str, dict] = {}  # the newest stats of each process, once the last word was heard
        until = time.monotonic() + 4.0
        while time.monotonic() < until:
            msg = watcher.recv(100)
            if isinstance(msg, Stats):
                stats[msg.source] = msg.values
        live.wait(timeout=120)
        if recorder is not None:
            recorder.wait(timeout=60)
    finally:
        watcher.close()
        for proc in (live, recorder):
            if proc is not None and proc.poll() is None:
                proc.terminate()
                proc.wait(timeout=30)
    events = [json.loads(line) for line in (work / "events.jsonl").read_text().splitlines()]
    return {"cards": len(truth), "words": len(said), "events": events, "returncode": live.returncode,
            "video_start": v0, "words_start": start, "stats": stats,
            "shown": [(v0 + t, int(d)) for t, d in zip(onsets, cards_y)],  # (wall time in view, digit) per card
            "said": [(start + at, int(cards_y[k])) for k, at in said]}  # (wall time said, digit) per word


def recall_in_halves(events: list[dict], items: list[tuple[float, int]], modality: str, other: str,
                     within_s: tuple[float, float] = (-0.3, 1.5)) -> dict:
    """How often the live agent named each shown or said item right, in the first half of a
    session against the second (`--events-out` lines; `items`: (wall time, digit) in order).

    An item's stimulus is the first `modality` event stamped within `within_s` of it; it
    counts as right when the cluster it recalled in `other` is named as the item's digit.
    An item that made no stimulus counts as wrong: the score is strict."""
    def first_event(t: float) -> dict | None:
        return next((e for e in events if e["modality"] == modality and within_s[0] <= e["t"] - t <= within_s[1]),
                    None)

    found = [first_event(t) for t, _ in items]
    right = [e is not None and e["recalled_names"].get(other) == digit for e, (_, digit) in zip(found, items)]
    half = len(right) // 2
    return {"items": len(right), "heard": sum(e is not None for e in found),
            "first_half": float(np.mean(right[:half])) if half else None,
            "second_half": float(np.mean(right[half:])) if right[half:] else None,
            "all": float(np.mean(right)) if right else None}
