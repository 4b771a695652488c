"""A recording of spoken digits with known boundaries, to test and measure the microphone's segmenter.

`build_recording` strings FSDD utterances together with pauses (and optionally noise
and uneven loudness) and returns where each one lies; `score_segments` says how many
utterances became exactly one segment. Run it to measure the segmenter offline:

    python -m tools.material.utterance_audio --n 300 --noise-db -55 --jitter-db 6 [--wav OUT.wav]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import asdict, dataclass
from math import gcd
from pathlib import Path
from typing import Sequence

import numpy as np
from scipy.io import wavfile
from scipy.signal import resample_poly

from agent.runtime import flags
from replay.data.datasets import FSDD_INDICES, FSDD_SPEAKERS
from sensors.file_reading import read_wav_file
from sensors.sound_features import SAMPLE_RATE


@dataclass(frozen=True)
class Utterance:
    """Where one played file lies in the recording."""

    name: str
    digit: int
    speaker: str
    start_s: float
    end_s: float


def pick_utterances(fsdd_dir: Path | str, n: int, split: str = "test", seed: int = 0,
                    speakers: Sequence[str] = FSDD_SPEAKERS) -> list[Path]:
    """`n` FSDD files cycling through digits, `speakers` and the split's recording indices
    ("all": every index, for a voice the agent never heard), in a shuffled order."""
    rng = np.random.default_rng(seed)
    indices = sorted(i for r in FSDD_INDICES.values() for i in r) if split == "all" else list(FSDD_INDICES[split])
    spk = list(speakers)
    paths = [Path(fsdd_dir) / f"{k % 10}_{spk[(k + k // 10) % len(spk)]}_"
                              f"{indices[(k // 10) % len(indices)]}.wav" for k in range(n)]
    return [paths[i] for i in rng.permutation(n)]


def build_recording(paths: Sequence[Path], rate: int = SAMPLE_RATE, gap_s: tuple[float, float] = (0.6, 1.0),
                    lead_s: float = 0.5, peak: float | None = 0.5, jitter_db: float = 0.0,
                    noise_db: float | None = None, seed: int = 0) -> tuple[np.ndarray, list[Utterance]]:
    """The utterances with random pauses between them, as float32 at `rate`, and where each lies.

    `peak` scales each to that peak (FSDD speakers differ by 20 dB; a microphone's gain
    is set for its speaker), `jitter_db` then varies their loudness at random, and
    `noise_db` adds white noise of that RMS level (dBFS) everywhere."""
    rng = np.random.default_rng(seed)
    parts, truth, t = [np.zeros(int(lead_s * rate), np.float32)], [], lead_s
    for path in paths:
        wave, r = read_wav_file(path)
        if r != rate:
            g = gcd(r, rate)
            wave = resample_poly(wave, rate // g, r // g).astype(np.float32)
        wave = wave - wave.mean()
        if peak is not None:
            wave = wave * (peak / max(float(np.abs(wave).max()), 1e-9))
        wave = wave * 10.0 ** (rng.uniform(-jitter_db, jitter_db) / 20.0)
        digit, speaker, _ = path.stem.split("_")
        truth.append(Utterance(path.name, int(digit), speaker, t, t + wave.shape[0] / rate))
        gap = np.zeros(int(rng.uniform(*gap_s) * rate), np.float32)
        parts += [wave.astype(np.float32), gap]
        t += (wave.shape[0] + gap.shape[0]) / rate
    out = np.concatenate(parts)
    if noise_db is not None:
        out = out + rng.normal(0.0, 10.0 ** (noise_db / 20.0), out.shape[0]).astype(np.float32)
    return np.clip(out, -1.0, 1.0).astype(np.float32), truth


def write_wav(path: Path | str, wave: np.ndarray, rate: int = SAMPLE_RATE) -> Path:
    """16-bit PCM, which every player (paplay, aplay, browsers) takes."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    wavfile.write(str(path), rate, np.round(np.clip(wave, -1.0, 1.0) * 32767.0).astype(np.int16))
    return path


@dataclass(frozen=True)
class Score:
    """How segments matched utterances: `share` of utterances that became exactly one segment."""

    share: float
    counts: tuple[int, ...]  # segments per utterance
    spurious: int  # segments that overlap no utterance
    offset_s: float  # added to the utterances' times to line them up with the segments


def score_segments(segments: Sequence[tuple[float, float]], truth: Sequence[Utterance],
                   offset_s: float = 0.0) -> Score:
    """Each segment goes to the utterance it overlaps most (none: spurious)."""
    counts = [0] * len(truth)
    spurious = 0
    for a, b in segments:
        overlaps = [min(b, u.end_s + offset_s) - max(a, u.start_s + offset_s) for u in truth]
        best = int(np.argmax(overlaps)) if overlaps else -1
        if best < 0 or overlaps[best] <= 0:
            spurious += 1
        else:
            counts[best] += 1
    share = sum(c == 1 for c in counts) / max(1, len(truth))
    return Score(share, tuple(counts), spurious, offset_s)


def align_and_score(segments: Sequence[tuple[float, float]], truth: Sequence[Utterance]) -> Score:
    """The best score over the offsets that put some utterance's start at some segment's start:
    for a live recording, whose start relative to the playback is not known exactly."""
    candidates = {round(a - u.start_s, 3) for a, _ in segments for u in truth} or {0.0}
    return max((score_segments(segments, truth, off) for off in candidates),
               key=lambda s: (s.share, -s.spurious))


def main(argv: list[str] | None = None) -> int:
    from sensors.words import segment_wave

    p = argparse.ArgumentParser(prog="python -m tools.material.utterance_audio", description=__doc__.split("\n")[0])
    p.add_argument("--fsdd", default=None, help="FSDD wav folder (default $CDZ_DATA_DIR/fsdd)")
    p.add_argument("--n", type=flags.COUNT, default=20, help="utterances (default 20)")
    p.add_argument("--split", default="test", choices=sorted(FSDD_INDICES))
    p.add_argument("--rate", type=flags.COUNT, default=SAMPLE_RATE, help="sample rate of the recording")
    p.add_argument("--noise-db", type=flags.FINITE, default=None, help="white noise RMS in dBFS (default none)")
    p.add_argument("--jitter-db", type=flags.NON_NEGATIVE, default=0.0, help="random loudness change per utterance")
    p.add_argument("--seed", type=flags.SEED, default=0)
    p.add_argument("--wav", help="also write the recording here (and its truth next to it as .json)")
    args = p.parse_args(argv)
    fsdd = Path(args.fsdd or Path(os.environ.get("CDZ_DATA_DIR", ".")) / "fsdd")
    wave, truth = build_recording(pick_utterances(fsdd, args.n, args.split, args.seed), rate=args.rate,
                                  jitter_db=args.jitter_db, noise_db=args.noise_db, seed=args.seed)
    if args.wav:
        write_wav(args.wav, wave, args.rate)
        Path(args.wav).with_suffix(".json").write_text(json.dumps([asdict(u) for u in truth], indent=1))
    score = score_segments(segment_wave(wave, args.rate), truth)
    bad = [f"{u.name}: {c}" for u, c in zip(truth, score.counts) if c != 1]
    print(json.dumps({"utterances": len(truth), "one_segment_share": round(score.share, 4),
                      "spurious": score.spurious, "not_one": bad}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
