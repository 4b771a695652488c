"""`cdz recall`: show the agent an image, let it hear a wav or give it a reward; it recalls the other senses.

A file is taken as the sensors take the world (`sensors.files`): a picture through the
camera's ink finder, a recording through the microphone's word finder (each word is
recalled on its own). The recall itself is the Python API's (`agent.api.Agent`): the
sense's encoder, the nearest node and its cluster, its familiarity, and per other sense
the recalled cluster, whose mode node is decoded into a picture or a sound.

Per recall it writes what the agent saw (`<stem>.<sense>-seen.png`), what it imagines
(`<stem>.<sense>.png`) and, for an imagined sound, `<stem>.audio.wav`.

A batch is checked file by file before the brain is loaded: a file that cannot
become a stimulus (missing, a folder, empty, corrupt, too large, an unknown type)
gets one entry with its "error" and is skipped; the other files are still answered.
Each input gets its own output names, so same-named files from different folders
never overwrite each other's pictures.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from replay.foxglove_views import VALUE_SIZE  # an imagined stimulus this small (a reward) is reported as numbers
from sensors.errors import FeatureError
from sensors.file_reading import write_png
from sensors.files import Percept, modality_of, read_file

if TYPE_CHECKING:
    from agent.api import Agent, Recall


@dataclass
class Checked:
    """One input of a batch after its check: a stimulus, or the reason there is none."""

    file: Path
    modality: str | None = None
    percepts: list[Percept] | None = None  # a picture's stimulus, or each word of a recording
    error: str | None = None  # one line, without the file name


def _reason(path: Path, exc: BaseException) -> str:
    """The message of a per-file error, without the leading file name and on one line."""
    msg = " ".join(str(exc).split())
    prefix = f"{path}: "
    return msg[len(prefix):] if msg.startswith(prefix) else msg or type(exc).__name__


def _known_modality(path: Path) -> str | None:
    try:
        return modality_of(path)
    except FeatureError:
        return None


def check_reward(text: str) -> Checked:
    """A reward given by value (`--reward 2`): a stimulus of the "reward" sense."""
    from agent.core.config import REWARD

    label = Path(f"reward={text}")
    try:
        value = float(text)
    except ValueError:
        return Checked(label, modality=REWARD, error=f"a reward is a number, got {text!r}")
    if not np.isfinite(value):
        return Checked(label, modality=REWARD, error=f"a reward must be finite, got {text!r}")
    return Checked(label, modality=REWARD, percepts=[Percept(REWARD, np.array([[value]], np.float32))])


def check_file(path: Path) -> Checked:
    """Read one file and turn it into a stimulus; never raises for a bad file (`error` says why)."""
    path = Path(path)
    try:
        percepts = read_file(path)
    except FeatureError as exc:
        return Checked(path, modality=_known_modality(path), error=_reason(path, exc))
    except OSError as exc:  # features check what they read, but a file system can still surprise
        return Checked(path, modality=_known_modality(path),
                       error=f"cannot read file ({exc.strerror or type(exc).__name__})")
    return Checked(path, modality=percepts[0].modality, percepts=percepts)


def _stem_candidates(path: Path) -> Iterator[str]:
    """seven, then seven-<folder>, then seven-2, seven-3, ..."""
    stem = path.stem or "input"
    yield stem
    folder = Path(os.path.abspath(path)).parent.name
    if folder:
        yield f"{stem}-{folder}"
    n = 2
    while True:
        yield f"{stem}-{n}"
        n += 1


def output_names(checked: list[Checked], modalities: list[str]) -> dict[int, str]:
    """Index of each good input -> the stem of its output PNGs (`<stem>.<target>.png`), unique in the batch.

    A file keeps its own stem where no earlier input's outputs took the same names
    (seven.png and seven.wav recall different modalities, so both keep "seven");
    otherwise its folder's name is added (a/seven.png, b/seven.png -> seven, seven-b),
    then a counter (seven-2, ...). Names are compared case-insensitively, as some
    file systems do.
    """
    used: set[str] = set()
    stems: dict[int, str] = {}
    for i, c in enumerate(checked):
        if c.error is not None:
            continue
        targets = [m for m in modalities if m != c.modality] or [str(c.modality)]
        for stem in _stem_candidates(c.file):
            names = {f"{stem}.{t}.png".casefold() for t in targets} | {f"{stem}.{c.modality}-seen.png".casefold()}
            if not names & used:
                used |= names
                stems[i] = stem
                break
    return stems


def recall_files(run: Path | str | None, files: list[Path], out_dir: Path | None,
                 before_load: Callable[[], None] | None = None, rewards: list[str] = ()) -> list[dict[str, Any]]:
    """Recall for each file (then each reward), in order; a recording gives one entry per word.

    Every input is read and checked first; the agent (a run folder or a pack) is loaded only
    if at least one is good (`before_load` runs just before, e.g. to set up torch). A bad
    input's entry is {"file", "modality", "error"}; a good one's has the cluster, its
    familiarity and what it recalls: per other sense the strongest cluster, its imagined
    stimulus (a PNG and, for a sound, a WAV; the numbers of a small one such as a reward)
    and `associates`, every cluster connected with at least `agent.api.ASSOCIATE_WEIGHT`.
    Pictures go into `out_dir` (default: the run's `recall` folder).
    """
    checked = [check_file(Path(f)) for f in files] + [check_reward(r) for r in rewards]
    if all(c.error is not None for c in checked):
        return [_failure(c) for c in checked]
    if before_load is not None:
        before_load()
    from agent.api import Agent  # heavy imports only when used

    agent = Agent.load(run)
    for c in checked:
        if c.error is None and c.modality not in agent.senses:
            c.error = f"this run has no {c.modality} modality (it has {', '.join(agent.senses)})"
    if all(c.error is not None for c in checked):
        return [_failure(c) for c in checked]
    out_dir = Path(out_dir) if out_dir is not None else default_out(Path(run))
    stems = output_names(checked, list(agent.senses))
    out_dir.mkdir(parents=True, exist_ok=True)
    results = []
    for i, c in enumerate(checked):
        if c.error is not None:
            results.append(_failure(c))
            continue
        many = len(c.percepts) > 1
        for k, p in enumerate(c.percepts, start=1):
            r = agent.recall_stimulus(p.modality, p.x, (p.start_s, p.end_s) if p.start_s is not None else None)
            stem = f"{stems[i]}.word{k}" if many else stems[i]
            results.append(_entry(agent, c.file, r, out_dir, stem, word=k if many else None))
    return results


def default_out(run: Path) -> Path:
    """Where recall writes when not told: RUN/recall for a run folder, PACK-recall beside a pack."""
    return run / "recall" if run.is_dir() else run.with_name(f"{run.stem}-recall")


def _entry(agent: Agent, file: Path, r: Recall, out_dir: Path, stem: str, word: int | None) -> dict[str, Any]:
    """One recall as a JSON-able dict, writing the pictures and sounds it names."""
    entry: dict[str, Any] = {"file": str(file), "modality": r.sense, "cluster": r.cluster, "cluster_name": r.name,
                             "familiarity": round(r.familiarity, 4), "novel": r.novel, "seen": None, "recalled": {}}
    if word is not None:
        entry.update(word=word, start_s=round(r.span[0], 3), end_s=round(r.span[1], 3))
    if r.stimulus.size > VALUE_SIZE:
        entry["seen"] = _write_stimulus(out_dir / f"{stem}.{r.sense}-seen.png", r.sense, r.stimulus)
    for target, got in r.recalled.items():
        item: dict[str, Any] = {"cluster": got.cluster, "cluster_name": got.name, "png": None,
                                "associates": [{"cluster": a, "cluster_name": n, "weight": w}
                                               for a, n, w in got.associates]}
        recon = r.imagined[target]
        if recon is not None and recon.size <= VALUE_SIZE:
            item["value"] = [float(v) for v in recon.ravel()]
        elif recon is not None:
            item["png"] = _write_stimulus(out_dir / f"{stem}.{target}.png", target, recon)
            if target == "audio":
                item["wav"] = _write_sound(out_dir / f"{stem}.{target}.wav", recon)
        entry["recalled"][target] = item
    return entry


def _write_stimulus(path: Path, sense: str, x: np.ndarray) -> str:
    write_png(path, x[::-1] if sense == "audio" else x, scale=4, colour=sense == "audio")  # low mels at the bottom
    return str(path)


def _write_sound(path: Path, spectrogram: np.ndarray) -> str:
    """An imagined spectrogram as a sound one can play (Griffin-Lim, 8 kHz, 16-bit)."""
    from scipy.io import wavfile

    from sensors.sound_features import SAMPLE_RATE, spectrogram_to_audio

    wave = spectrogram_to_audio(spectrogram)
    peak = float(np.abs(wave).max()) or 1.0
    wavfile.write(path, SAMPLE_RATE, np.round(wave / peak * 0.9 * 32767).astype(np.int16))
    return str(path)


def _failure(c: Checked) -> dict[str, Any]:
    return {"file": str(c.file), "modality": c.modality, "error": c.error}


def failures(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in results if r.get("error") is not None]


def exit_code(results: list[dict[str, Any]]) -> int:
    """0: every file answered; 1: some failed; 2: all failed (or there were none)."""
    bad = len(failures(results))
    return 0 if results and not bad else (2 if bad == len(results) else 1)


def format_failure(r: dict[str, Any]) -> str:
    return f"{r['file']}: {r['error']}"


def format_recall(results: list[dict[str, Any]]) -> str:
    """The answered files, for people (failures are reported on their own, see `format_failure`)."""
    lines = []
    for r in results:
        if r.get("error") is not None:
            continue
        where = f" word {r['word']} ({r['start_s']:.2f}-{r['end_s']:.2f} s)" if r.get("word") else ""
        known = "novel" if r["novel"] else "known"
        lines.append(f"{r['file']}{where} ({r['modality']}): cluster {r['cluster']} '{r['cluster_name']}', "
                     f"familiarity {r['familiarity']:.2f} ({known})")
        for target, item in r["recalled"].items():
            if item["cluster"] is None:
                lines.append(f"  recalls nothing in {target}")
                continue
            shown = " ".join(f"{v:.3g}" for v in item["value"]) if item.get("value") is not None \
                else " ".join(filter(None, (item["png"], item.get("wav"))))
            lines.append(f"  recalls {target} cluster {item['cluster']} '{item['cluster_name']}' -> {shown}")
            if len(item["associates"]) > 1:
                lines.append("    connected to " + ", ".join(f"'{a['cluster_name']}' {a['weight']:.2f}"
                                                           for a in item["associates"]))
    return "\n".join(lines)
