"""A shareable agent in one file: what a user needs to use the agent and keep teaching it.

A pack is a zip archive holding only plain formats, so it is loaded without pickle:

* `pack.json`  the format, the senses, and the model card (scores, data, settings);
* `card.md`    the same card for people;
* `config.toml` the run's settings;
* `names.json` the name (digit) each cluster is shown by;
* `encoders/<sense>.npz` + `encoders/<sense>.json`  each autoencoder's weights as arrays,
  and its input shape and settings;
* `brain.npz`  the latest brain: nodes, clusters and CDZ (arrays, `allow_pickle=False`).

It holds no training encodings, no stream and no older checkpoints (a run folder is
about 180 MB, the default run's pack 6.5). Every command that reads a run reads a pack through
`open_run`, which unpacks it once into a run folder in the cache.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import tempfile
import time
import zipfile
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from agent.core.checkpoint import MARKER, RunFolder
from agent.core.storage import RunError, atomic_write_bytes

FORMAT = "cdz-pack"
VERSION = 1
MAX_MEMBER_BYTES = 256 * 2**20  # a member larger than this when unzipped is refused (a zip bomb)
CARD_SCORES = ("recall_accuracy", "generation_accuracy", "classes_discovered", "judge_accuracy", "n_test")  # `cdz eval`'s


NAMES_FILE = "names.json"  # in a pack, and in a run folder made from one (or by `Agent.save`)


def names_bytes(names: dict[str, dict[int, int]]) -> bytes:
    """The names file: sense -> {cluster id: the digit (or reward class) it stands for}."""
    return _json_bytes({m: {str(c): n for c, n in per.items()} for m, per in names.items()})


def load_names(path: Path) -> dict[str, dict[int, int]]:
    """A names file, checked: senses to {cluster id: name}, all integers."""
    try:
        raw = json.loads(path.read_text())
        return {str(m): {int(c): int(n) for c, n in per.items()} for m, per in raw.items()}
    except (OSError, ValueError, TypeError, AttributeError) as exc:
        raise RunError(f"{path}: not a names file ({type(exc).__name__}: {exc})") from None


def _json_bytes(obj: Any) -> bytes:
    return json.dumps(obj, indent=1, sort_keys=True).encode()


def _npz_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    return buf.getvalue()


def _encoder_members(run: RunFolder, modality: str, stage: int) -> dict[str, bytes]:
    """One sense's autoencoder as arrays + JSON: the encoder that fits the brain's nodes."""
    from agent.core.autoencoder import load_autoencoder  # torch: only when packing or unpacking

    model = load_autoencoder(run.fitting_encoder_path(modality, stage))
    weights = {k: v.detach().cpu().numpy() for k, v in model.state_dict().items()}
    meta = {"input_shape": list(model.input_shape), "settings": asdict(model.settings)}
    return {f"encoders/{modality}.npz": _npz_bytes(weights), f"encoders/{modality}.json": _json_bytes(meta)}


def model_card(run: RunFolder, modalities: tuple[str, ...], step: int) -> dict[str, Any]:
    """What a recipient should know: where the agent comes from, what it learned from, how it scores."""
    from agent import __version__

    config = run.config()
    metrics = run.metrics()
    scored = metrics.get("eval", {}) if isinstance(metrics, dict) else {}
    scores = {f"{name} {what}": value for name in CARD_SCORES if isinstance(scored.get(name), dict)
              for what, value in sorted(scored[name].items()) if isinstance(value, (int, float))}
    return {
        "made": time.strftime("%Y-%m-%d %H:%M:%S"), "made_with": f"cdz-agent {__version__}",
        "from_run": run.path.name, "senses": list(modalities), "stimuli_learned": step, "seed": config.seed,
        "data": _data_card(config),
        "labels": "none used for learning; the training labels only name each cluster for display",
        "scores": scores,
    }


def _data_card(config: Any) -> dict[str, str]:
    d = config.data
    digits = ", ".join(map(str, d.digits))
    subset = f", the first {d.per_class} per digit" if d.per_class else ""
    speakers = ", ".join(d.speakers) if d.speakers else "all six speakers"
    if d.exclude_speakers:
        speakers += " except " + ", ".join(d.exclude_speakers)
    out = {"visual": f"MNIST training split (handwritten digits {digits}{subset})",
           "audio": f"FSDD training split (spoken digits {digits}{subset}; {speakers})"}
    return {m: out.get(m, "the teacher's stream") for m in config.modalities}


def card_text(card: dict[str, Any]) -> str:
    lines = [f"# cdz agent from run {card['from_run']}", "",
             f"Made {card['made']} with {card['made_with']}; senses {', '.join(card['senses'])}; "
             f"seed {card['seed']}; {card['stimuli_learned']:,} stimuli learned.", "", "## Data", ""]
    lines += [f"* {sense}: {what}" for sense, what in card["data"].items()]
    lines += ["", f"Labels: {card['labels']}.", "", "## Scores (held-out test sets, learning off; docs/EVALUATION.md)", ""]
    lines += [f"* {k}: {v:.4g}" for k, v in card["scores"].items()] or ["* not evaluated (run `cdz eval` first)"]
    return "\n".join(lines) + "\n"


def write_pack(run: RunFolder, dest: Path, names: dict[str, dict[int, int]], overwrite: bool = False) -> dict[str, Any]:
    """Write `run`'s latest agent to the pack `dest`; returns its card. Refuses to replace a file unless
    `overwrite`; a crash mid-write leaves any old pack intact."""
    dest = Path(dest)
    if dest.exists() and not overwrite:
        raise RunError(f"{dest} exists; choose another name or pass --overwrite")
    if dest.is_dir():
        raise RunError(f"{dest} is a folder; give a file name for the pack")
    config = run.config()
    modalities = tuple(config.modalities)
    step, state = run.load_checkpoint()
    brain_state = {k: v for k, v in state.items() if k.split(".")[0] in ("cdz", "cortex", "rejected", "refinements")}
    stage = int(state.get("refinements", np.array(0)))
    card = model_card(run, modalities, step)
    members: dict[str, bytes] = {
        "pack.json": _json_bytes({"format": FORMAT, "version": VERSION, "senses": list(modalities), "step": step,
                                  "card": card}),
        "card.md": card_text(card).encode(),
        "config.toml": run.config_path.read_bytes(),
        NAMES_FILE: names_bytes(names),
        "brain.npz": _npz_bytes(brain_state),
    }
    for m in modalities:
        if run.fitting_encoder_path(m, stage).exists():
            members |= _encoder_members(run, m, stage)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in members.items():
            z.writestr(name, data)
    dest.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(dest, buf.getvalue())
    return card


def is_pack(path: Path | str) -> bool:
    """Whether `path` is a file that claims to be a pack (a zip with pack.json)."""
    path = Path(path)
    if not path.is_file() or not zipfile.is_zipfile(path):
        return False
    try:
        with zipfile.ZipFile(path) as z:
            return "pack.json" in z.namelist()
    except (zipfile.BadZipFile, OSError):
        return False


def _read_member(z: zipfile.ZipFile, name: str, path: Path) -> bytes:
    try:
        info = z.getinfo(name)
    except KeyError:
        raise RunError(f"{path}: damaged pack ({name} is missing)") from None
    if info.file_size > MAX_MEMBER_BYTES:
        raise RunError(f"{path}: damaged pack ({name} would unpack to {info.file_size:,} bytes)")
    try:
        return z.read(name)
    except Exception as exc:  # a damaged archive fails in many ways (BadZipFile, zlib.error, EOFError, ...)
        raise RunError(f"{path}: damaged pack ({name}: {type(exc).__name__}: {exc})") from None


def _arrays(data: bytes, name: str, path: Path) -> dict[str, np.ndarray]:
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            return {k: npz[k] for k in npz.files}
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:
        raise RunError(f"{path}: damaged pack ({name}: {exc})") from None


def _json(data: bytes, name: str, path: Path) -> Any:
    try:
        return json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise RunError(f"{path}: damaged pack ({name}: {exc})") from None


def unpack(path: Path | str, folder: Path | str) -> RunFolder:
    """Turn a pack into a run folder (config, encoders, one checkpoint, names), checking every part.

    Only the pack's known members are read, each with a size cap; nothing is
    unpickled. The folder is filled in a temporary sibling and renamed into place."""
    import torch

    from agent.core.autoencoder import build_autoencoder, save_autoencoder
    from agent.core.config import AutoencoderSettings

    path, folder = Path(path), Path(folder)
    if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
        raise RunError(f"{folder} exists and is not empty; unpack into a new folder")
    if not is_pack(path):
        raise RunError(f"{path}: not a pack (make one with `cdz pack --run RUN --out FILE`)")
    with zipfile.ZipFile(path) as z:
        head = _json(_read_member(z, "pack.json", path), "pack.json", path)
        if not isinstance(head, dict) or head.get("format") != FORMAT:
            raise RunError(f"{path}: not a pack (pack.json does not say {FORMAT!r})")
        if head.get("version") != VERSION:
            raise RunError(f"{path}: pack version {head.get('version')!r}; this cdz-agent reads version {VERSION}")
        senses = head.get("senses")
        if not isinstance(senses, list) or not all(isinstance(s, str) and s.isidentifier() for s in senses):
            raise RunError(f"{path}: damaged pack (pack.json lists no senses)")
        folder.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
        try:
            run = RunFolder(tmp)
            (tmp / MARKER).write_bytes(b"unpacked by cdz-agent\n")
            run.config_path.write_bytes(_read_member(z, "config.toml", path))
            config = run.config()
            for name in (NAMES_FILE, "card.md"):
                (tmp / name).write_bytes(_read_member(z, name, path))
            state = _arrays(_read_member(z, "brain.npz", path), "brain.npz", path)
            stage = int(state.get("refinements", np.array(0)))
            for m in senses:
                if f"encoders/{m}.json" not in z.namelist():
                    continue  # a sense without an encoder (a reward)
                meta = _json(_read_member(z, f"encoders/{m}.json", path), f"encoders/{m}.json", path)
                weights = _arrays(_read_member(z, f"encoders/{m}.npz", path), f"encoders/{m}.npz", path)
                try:
                    model = build_autoencoder(tuple(meta["input_shape"]), AutoencoderSettings(**meta["settings"]))
                    model.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in weights.items()})
                except (KeyError, TypeError, ValueError, RuntimeError) as exc:
                    raise RunError(f"{path}: damaged pack (encoder {m}: {type(exc).__name__}: {exc})") from None
                save_autoencoder(model, run.encoder_path(m))
                save_autoencoder(model, run.stage_encoder_path(m, stage))
            step = int(head.get("step", 0))
            run.save_checkpoint(step, state)
            from agent.core.brain import Brain  # the state must load into a brain of this config
            from agent.core.state_check import StateError

            try:
                dims = {m: int(state[f"cortex.{m}.pos"].shape[1]) for m in config.modalities}
                Brain(config, dims, {m: 1 for m in config.modalities}).load_state_dict(state)
            except (KeyError, StateError, ValueError, IndexError) as exc:
                raise RunError(f"{path}: damaged pack (brain.npz: {exc})") from None
            if folder.exists() and not any(folder.iterdir()):
                folder.rmdir()
            os.replace(tmp, folder)  # refused where the folder exists with something in it
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return RunFolder(folder)


def pack_cache() -> Path:
    """Where packs are unpacked for the commands that read them (`CDZ_PACK_CACHE`, else the user cache)."""
    env = os.environ.get("CDZ_PACK_CACHE")
    return Path(env) if env else Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "cdz-agent" / "packs"


def open_run(path: Path | str) -> RunFolder:
    """A run folder as it is; a pack unpacked once (by its content's hash) into the pack cache."""
    path = Path(path)
    if path.is_dir() or not path.exists():
        return RunFolder(path)  # a missing path gets the run folder's own clear error when read
    if not is_pack(path):
        raise RunError(f"{path} is a file but not a pack; give a run folder or a file made by `cdz pack`")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()[:16]
    folder = pack_cache() / digest
    if not (folder / "checkpoints" / "LATEST").exists():
        shutil.rmtree(folder, ignore_errors=True)  # left half-made by a crash
        try:
            unpack(path, folder)
        except (RunError, OSError):
            if not (folder / "checkpoints" / "LATEST").exists():  # not another process unpacking it first
                raise
    return RunFolder(folder)


def is_unpacked(run: RunFolder) -> bool:
    """Whether a run folder is a pack's copy in the cache (commands that save learning refuse it)."""
    try:
        return Path(os.path.abspath(run.path)).is_relative_to(os.path.abspath(pack_cache()))
    except ValueError:
        return False


def open_writable_run(path: Path | str) -> RunFolder:
    """A run folder that a command may save learning into; a pack is refused, saying how to unpack it."""
    run = open_run(path)
    if is_unpacked(run):
        raise RunError(f"{path} is a pack, and this command saves what it learns into its run: unpack it into a "
                       f"run folder first (cdz unpack --run {path} --out runs/NAME)")
    return run
