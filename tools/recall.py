"""`cdz recall`: show the agent an image, let it hear a wav or give it a reward; it recalls the other senses.

The file goes through the same feature code as training (`sensors.features`), the
modality's encoder, the nearest node and its cluster; the CDZ recalls a cluster in
every other modality, whose mode node is decoded into a picture (or spectrogram).

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
from sensors.features import FeatureError, read_audio_file, read_image_file, write_png

if TYPE_CHECKING:
    from agent.core.checkpoint import RunFolder

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".pgm", ".pbm", ".ppm", ".pnm", ".tif", ".tiff", ".webp"}
AUDIO_SUFFIXES = {".wav"}


def modality_of(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix in IMAGE_SUFFIXES:
        return "visual"
    if suffix in AUDIO_SUFFIXES:
        return "audio"
    raise FeatureError(f"{path}: unknown file type {suffix or '(no suffix)'!r}; give an image "
                       f"({', '.join(sorted(IMAGE_SUFFIXES))}) or a .wav")


def read_stimulus(path: Path) -> tuple[str, np.ndarray]:
    """(modality, stimulus) of one file. Every problem with the file is a FeatureError whose
    one-line message starts with the path and says what is wrong."""
    path = Path(path)
    if path.is_dir():
        raise FeatureError(f"{path}: is a folder, not a file (give the images or wavs in it)")
    modality = modality_of(path)
    if not path.exists():
        raise FeatureError(f"{path}: " + ("broken link (its target does not exist)" if path.is_symlink()
                                          else "file does not exist"))
    x = read_image_file(path) if modality == "visual" else read_audio_file(path)
    return modality, x


@dataclass
class Checked:
    """One input of a batch after its check: a stimulus, or the reason there is none."""

    file: Path
    modality: str | None = None
    x: np.ndarray | None = None
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
    return Checked(label, modality=REWARD, x=np.array([[value]], np.float32))


def check_file(path: Path) -> Checked:
    """Read one file and turn it into a stimulus; never raises for a bad file (`error` says why)."""
    path = Path(path)
    try:
        modality, x = read_stimulus(path)
    except FeatureError as exc:
        return Checked(path, modality=_known_modality(path), error=_reason(path, exc))
    except OSError as exc:  # features check what they read, but a file system can still surprise
        return Checked(path, modality=_known_modality(path),
                       error=f"cannot read file ({exc.strerror or type(exc).__name__})")
    return Checked(path, modality=modality, x=x)


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
            names = {f"{stem}.{t}.png".casefold() for t in targets}
            if not names & used:
                used |= names
                stems[i] = stem
                break
    return stems


ASSOCIATE_WEIGHT = 0.05  # a recalled sense also lists the clusters connected with at least this weight


def recall_files(run: RunFolder, files: list[Path], out_dir: Path,
                 before_load: Callable[[], None] | None = None, rewards: list[str] = ()) -> list[dict[str, Any]]:
    """Recall for each file (then each reward), in order; writes `<stem>.<modality>.png`
    reconstructions into out_dir.

    Every input is read and checked first; the brain is loaded only if at least one
    is good (`before_load` runs just before, e.g. to set up torch). A bad input's entry
    is {"file", "modality", "error"}; a good one's has the cluster and what it recalls:
    per other sense the strongest cluster, its imagined stimulus (a PNG, or the numbers
    of a small one such as a reward) and `associates`, every cluster connected with at
    least `ASSOCIATE_WEIGHT` (a reward of 0 recalls all the digits that earn it).
    """
    checked = [check_file(Path(f)) for f in files] + [check_reward(r) for r in rewards]
    if all(c.error is not None for c in checked):
        return [_failure(c) for c in checked]
    if before_load is not None:
        before_load()

    from agent.core.autoencoder import load_autoencoder
    from agent.core.recollection import recollect
    from tools.evaluate import scoring_names
    from replay.pipeline import load_brain  # heavy imports only when used

    config, enc, brain, _, _ = load_brain(run)
    modalities = list(config.modalities)
    for c in checked:
        if c.error is None and c.modality not in modalities:
            c.error = f"this run has no {c.modality} modality (it has {', '.join(modalities)})"
    if all(c.error is not None for c in checked):
        return [_failure(c) for c in checked]
    coders = {m: load_autoencoder(run.encoder_path(m)) for m in modalities}
    names = scoring_names(config, enc, brain)
    stems = output_names(checked, modalities)
    out_dir.mkdir(parents=True, exist_ok=True)
    results = []
    for i, c in enumerate(checked):
        if c.error is not None:
            results.append(_failure(c))
            continue
        modality = str(c.modality)
        r = recollect(brain, coders, modality, c.x)
        entry: dict[str, Any] = {"file": str(c.file), "modality": modality, "cluster": r.cluster,
                                 "cluster_name": names[modality].get(r.cluster), "recalled": {}}
        for target, cid in r.recalled.items():
            item: dict[str, Any] = {"cluster": cid if cid >= 0 else None, "cluster_name": None, "png": None,
                                    "associates": [{"cluster": a, "cluster_name": names[target].get(a), "weight": w}
                                                   for a, w in brain.cdz.associates(modality, r.cluster, target,
                                                                                    ASSOCIATE_WEIGHT)]}
            recon = r.imagined[target]
            if recon is not None and recon.size <= VALUE_SIZE:
                item.update(cluster_name=names[target].get(cid), value=[float(v) for v in recon.ravel()])
            elif recon is not None:
                png = out_dir / f"{stems[i]}.{target}.png"
                write_png(png, recon[::-1] if target == "audio" else recon, scale=4)  # low mels at the bottom
                item.update(cluster_name=names[target].get(cid), png=str(png))
            entry["recalled"][target] = item
        results.append(entry)
    return results


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
        head = f"{r['file']} ({r['modality']}): cluster {r['cluster']} '{r['cluster_name']}'"
        lines.append(head)
        for target, item in r["recalled"].items():
            if item["cluster"] is None:
                lines.append(f"  recalls nothing in {target}")
                continue
            shown = item["png"] if item.get("value") is None else " ".join(f"{v:.3g}" for v in item["value"])
            lines.append(f"  recalls {target} cluster {item['cluster']} '{item['cluster_name']}' -> {shown}")
            if len(item["associates"]) > 1:
                lines.append("    connected to " + ", ".join(f"'{a['cluster_name']}' {a['weight']:.2f}"
                                                           for a in item["associates"]))
    return "\n".join(lines)
