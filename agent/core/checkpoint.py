"""Run folders and crash-safe checkpoints. No pickle anywhere.

A run folder holds `config.toml`, `encoders/<m>.pt` (state dicts, loaded with
`weights_only=True`), `encodings.npz`, `stream.npz`, `checkpoints/<step>/brain.npz`
(arrays, loaded with `allow_pickle=False`), `metrics.json` and `log.txt`.

A checkpoint is written into a fresh folder, then `checkpoints/LATEST` is
atomically replaced to point at it, so a crash at any instant leaves the last
complete checkpoint readable; older ones are removed afterwards.

The multi-process runtime saves a checkpoint in parts, one file per process
(`cdz.npz`, `cortex.<m>.npz`), each atomically; a step counts once all its parts
exist, and loading merges them into the same state a one-process brain saves.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import secrets
import signal
import threading
import time
import tomllib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from agent.core.config import Config, load_toml, save_toml
from agent.core.state_check import StateError, check_arrays
from agent.core.storage import RunError, atomic_write_bytes, load_arrays, save_arrays


log = logging.getLogger(__name__)

MARKER = ".cdz-run"  # a run folder's mark that this project made it: only such a folder is ever replaced
WRITTEN = frozenset({MARKER, "config.toml", "encoders", "encodings.npz", "stream.npz", "checkpoints", "metrics.json",
                     "log.txt", "plots", "recall", "judges", "logs"})  # every entry the project writes into a run folder
_ASIDE = ".replaced-"
_WARNED: set[tuple[Path, Path]] = set()  # LATEST fallbacks already warned about


CDZ_PART = "cdz"  # a checkpoint's arrays are "<part>.<name>": the hub's CDZ, and one cortex per sense


REFINEMENTS = "refinements"  # refinement phases and sleeps the brain has had: which encoder stage fits its nodes
LOG_CLUSTER, LOG_RECALLED = "log.cluster", "log.recalled"  # the stream log the hub keeps (per stimulus)


def cortex_part(modality: str) -> str:
    return f"cortex.{modality}"


def worker_part(modality: str) -> str:
    """A worker's own state beside its cortex: the recent excitations running ahead reads."""
    return f"worker.{modality}"


def experience_part(modality: str) -> str:
    """What a live worker lived through since the last sleep (agent.core.experience)."""
    return f"experience.{modality}"


def rejected_key(modality: str) -> str:
    """The count of stimuli a worker refused."""
    return f"rejected.{modality}"


def part(state: dict[str, np.ndarray], name: str) -> dict[str, np.ndarray]:
    """The arrays of one part of a checkpoint ("cdz", "cortex.visual", ...), without its prefix."""
    prefix = f"{name}."
    return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}


def as_part(name: str, arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """`arrays` under the keys of part `name` (the inverse of `part`)."""
    return {f"{name}.{k}": v for k, v in arrays.items()}


def written_by_us(name: str) -> bool:
    """Whether a run folder entry is one the project writes (or a temporary file of one)."""
    return name in WRITTEN or name.startswith(_ASIDE) or any(name.startswith(f".{w}.") for w in WRITTEN)


class RunFolder:
    """Paths and small helpers of one run folder."""

    def __init__(self, path: Path | str):
        self.path = Path(path)
        self.owner: str | None = None  # set by `create`: this process's mark in the folder's marker

    @property
    def config_path(self) -> Path:
        return self.path / "config.toml"

    def encoder_path(self, modality: str) -> Path:
        return self.path / "encoders" / f"{modality}.pt"

    def stage_encoder_path(self, modality: str, refinements: int) -> Path:
        """The encoder as it was after `refinements` refinement phases (0: first trained)."""
        return self.path / "encoders" / f"{modality}.stage{refinements}.pt"

    def fitting_encoder_path(self, modality: str, refinements: int) -> Path:
        """The encoder that fits a brain after `refinements` phases: its stage's, else the latest
        (a run folder from before stages were kept)."""
        staged = self.stage_encoder_path(modality, refinements)
        return staged if staged.exists() else self.encoder_path(modality)

    def judge_path(self, modality: str) -> Path:
        return self.path / "judges" / f"{modality}.pt"

    @property
    def encodings_path(self) -> Path:
        return self.path / "encodings.npz"

    @property
    def stream_path(self) -> Path:
        return self.path / "stream.npz"

    @property
    def metrics_path(self) -> Path:
        return self.path / "metrics.json"

    @property
    def plots_dir(self) -> Path:
        return self.path / "plots"

    def create(self, config: Config) -> None:
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as e:  # a read-only or immutable folder, a file on the way: say which and why
            raise RunError(f"cannot make the run folder {self.path}: {e.strerror}") from None
        owner = f"{os.getpid()}-{secrets.token_hex(8)}"  # whose run this is, while it is being made
        atomic_write_bytes(self.path / MARKER, b"made by cdz-agent; `--overwrite` replaces only what it wrote\n"
                           + f"owner {owner}\n".encode())
        self.owner = owner  # only once the marker says so: a stop before that cleans up as for no run at all
        save_toml(config, self.config_path)

    def still_ours(self) -> bool:
        """Whether the folder's marker still names this object's `create`, not a run made there since by
        another process."""
        try:
            return f"owner {self.owner}\n".encode() in (self.path / MARKER).read_bytes()
        except OSError:
            return False

    def config(self) -> Config:
        if not self.path.is_dir():
            raise RunError(f"no run folder at {self.path} (make one with `cdz train --out {self.path}`)")
        self.recover_interrupted_overwrite()
        if not self.config_path.exists():
            raise RunError(f"{self.path} is not a run folder: config.toml is missing")
        try:
            if not tomllib.loads(self.config_path.read_text()):  # a run writes every setting: none is damage
                raise RunError(f"bad config {self.config_path}: it holds no settings (emptied?)")
            return load_toml(self.config_path)
        except (KeyError, ValueError, TypeError, UnicodeDecodeError) as e:
            raise RunError(f"bad config {self.config_path}: {e}"[:300]) from None

    def recover_interrupted_overwrite(self) -> None:
        """Put back the old run that an `--overwrite` killed midway (SIGKILL, power loss) left aside,
        removing the half-made new one. A run being replaced right now (its process alive) is left
        alone; a finished overwrite leaves nothing aside."""
        dead = [a for a in sorted(self.path.glob(f"{_ASIDE}*")) if not _alive(_owner(a))] if self.path.is_dir() else []
        if len(dead) > 1:
            raise RunError(f"{self.path} holds {len(dead)} runs put aside by interrupted overwrites "
                           f"({', '.join(a.name for a in dead)}); keep the one you want by hand")
        for aside in dead:
            for entry in self.path.iterdir():
                if written_by_us(entry.name) and not entry.name.startswith(_ASIDE):
                    shutil.rmtree(entry) if entry.is_dir() and not entry.is_symlink() else entry.unlink()
            for entry in aside.iterdir():
                os.replace(entry, self.path / entry.name)
            aside.rmdir()
            log.warning("%s: put back the run that an interrupted --overwrite had set aside", self.path)

    def log(self, text: str) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        with open(self.path / "log.txt", "a") as f:
            f.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {text}\n")

    def metrics(self) -> dict[str, Any]:
        if not self.metrics_path.exists():
            return {}
        try:
            return json.loads(self.metrics_path.read_text())
        except json.JSONDecodeError as e:
            raise RunError(f"bad metrics file {self.metrics_path}: {e}") from None

    def update_metrics(self, **entries: Any) -> None:
        metrics = self.metrics()
        metrics.update(entries)
        atomic_write_bytes(self.metrics_path, json.dumps(metrics, indent=2, sort_keys=True).encode())

    # ------------------------------------------------------------------ checkpoints
    @property
    def checkpoints_dir(self) -> Path:
        return self.path / "checkpoints"

    def save_checkpoint(self, step: int, arrays: dict[str, np.ndarray], keep: int = 2) -> Path:
        """Write checkpoint `step` completely, then point LATEST at it, then drop old ones."""
        target = self.checkpoints_dir / f"{step:012d}"
        tmp = self.checkpoints_dir / f".tmp-{step:012d}-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        save_arrays(tmp / "brain.npz", {**arrays, "checkpoint_step": np.array(step, np.int64)})
        shutil.rmtree(target, ignore_errors=True)
        os.replace(tmp, target)
        atomic_write_bytes(self.checkpoints_dir / "LATEST", f"{target.name}\n".encode())
        done = sorted(p for p in self.checkpoints_dir.iterdir() if p.is_dir() and not p.name.startswith("."))
        for old in done[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
        return target

    # ------------------------------------------------------------------ checkpoints in parts
    def part_names(self) -> list[str]:
        """The parts a distributed checkpoint needs: the hub's CDZ and one cortex per modality."""
        return [CDZ_PART] + [cortex_part(m) for m in self.config().modalities]

    def save_part(self, step: int, part: str, arrays: dict[str, np.ndarray]) -> Path:
        """One process's share of checkpoint `step` (the runtime's processes each save their own).

        Each file is written atomically; the checkpoint counts once every part is there.
        """
        path = self.checkpoints_dir / f"{step:012d}" / f"{part}.npz"
        save_arrays(path, {**arrays, "checkpoint_step": np.array(step, np.int64)})
        return path

    def _complete(self, folder: Path, parts: list[str] | None) -> bool:
        if (folder / "brain.npz").exists():
            return True
        return parts is not None and all((folder / f"{p}.npz").exists() for p in parts)

    def _step_folders(self) -> list[Path]:
        if not self.checkpoints_dir.is_dir():
            return []
        return sorted(p for p in self.checkpoints_dir.iterdir() if p.is_dir() and p.name.isdigit())

    def latest_checkpoint(self) -> Path | None:
        """The newest complete checkpoint: one whole `brain.npz`, or a step whose parts are all saved.

        `LATEST` names the newest whole one; if it is missing or names no checkpoint
        (lost, edited by hand), the newest complete folder is used, with a warning.
        """
        parts = self.part_names() if self.config_path.exists() else None
        complete = [f for f in self._step_folders() if self._complete(f, parts)]
        if not complete:
            return None
        latest = self.checkpoints_dir / "LATEST"
        try:
            named = self.checkpoints_dir / latest.read_text().strip() if latest.exists() else None
        except (OSError, UnicodeDecodeError):
            named = None
        whole = [f for f in complete if (f / "brain.npz").exists()]
        if whole and (named is None or named not in whole) and (latest, whole[-1]) not in _WARNED:
            _WARNED.add((latest, whole[-1]))  # once per process: every load asks again
            log.warning("%s: %s is missing or names no checkpoint; using the newest complete one, %s",
                        self.path, latest, whole[-1].name)
        return complete[-1]

    def drop_old_parts(self, keep: int = 2) -> None:
        """Remove part checkpoints older than the newest `keep` complete ones."""
        parts = self.part_names()
        complete = [f for f in self._step_folders() if self._complete(f, parts)]
        if len(complete) < keep:
            return
        cutoff = complete[-keep].name
        for folder in self._step_folders():
            if folder.name < cutoff:
                shutil.rmtree(folder, ignore_errors=True)

    def load_checkpoint(self, only: tuple[str, ...] | None = None) -> tuple[int, dict[str, np.ndarray]]:
        """(step, state) of the newest checkpoint; `only`: the key prefixes to read (None: all)."""
        folder = self.latest_checkpoint()
        if folder is None:
            raise RunError(f"{self.path} has no checkpoint yet (training did not get far enough)")
        return load_checkpoint_folder(folder, only)

    @contextmanager
    def restoring(self, checkpoint: tuple[int, dict[str, np.ndarray]] | None = None,
                  only: tuple[str, ...] | None = None) -> Iterator[tuple[int, dict[str, np.ndarray]]]:
        """(step, state) of the newest checkpoint (or `checkpoint`, already read from it),
        for a block that loads it into live objects; `only`: the key prefixes it needs
        (a worker reads its own sense's arrays, not the other senses' experience).

        The objects check the state before they take any of it (`agent.core.state_check`);
        a state that does not fit them becomes a `RunError` naming the checkpoint.
        """
        folder = self.latest_checkpoint()
        step, state = self.load_checkpoint(only) if checkpoint is None else checkpoint
        try:
            yield step, state
        except StateError as e:
            raise RunError(f"damaged checkpoint {folder}: {e}") from None


def _older_run(run: RunFolder) -> bool:
    """A run folder made before the marker existed: nothing in it but what the project writes,
    and a config.toml that reads as one."""
    if not all(written_by_us(entry.name) for entry in run.path.iterdir()):
        return False
    try:
        run.config()
    except RunError:
        return False
    return True


@contextmanager
def new_run(config: Config, out: Path | str, overwrite: bool) -> Iterator[RunFolder]:
    """A fresh run folder holding `config`, for the block that starts training in it.

    An existing run is replaced only with `overwrite`, and only if it carries the
    project's marker. Its entries are moved aside, never the files the project did
    not write; they are deleted once the block ends well (the new run has started).
    If the block fails (no data, a bad setting found late, Ctrl-C), what the block
    wrote is removed and the old run is put back as it was.
    """
    run = RunFolder(out)
    existed = run.path.exists()
    if existed and not run.path.is_dir():
        raise RunError(f"{run.path} is a file, not a folder; choose another --out")
    run.recover_interrupted_overwrite()
    aside: Path | None = None
    if existed and any(run.path.iterdir()):
        if not overwrite:
            raise RunError(f"{run.path} is not empty; choose another --out, pass --overwrite, "
                           f"or continue that run with `cdz train --resume {run.path}`")
        if not (run.path / MARKER).is_file() and not _older_run(run):
            raise RunError(f"{run.path} was not made by cdz ({MARKER} is missing): refusing to overwrite it; "
                           "choose another --out or empty it yourself")
        aside = run.path / f"{_ASIDE}{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"
    moving = aside is not None  # until every old entry is aside, only the aside ones are put back
    with _terminate_as_exit():  # from the first move on: a SIGTERM mid-move puts the old run back too
        try:
            if aside is not None:
                aside.mkdir()
                for entry in run.path.iterdir():
                    if entry != aside and written_by_us(entry.name) and not entry.name.startswith(_ASIDE):
                        os.replace(entry, aside / entry.name)
                moving = False
            run.create(config)
            yield run
        except BaseException:
            if run.owner is not None and not run.still_ours():  # slow to die: another run is being made here now
                log.warning("%s now holds a run made by another process; leaving it as it is", run.path)
                raise
            for entry in run.path.iterdir() if run.path.is_dir() and not moving else ():  # what the block wrote
                if written_by_us(entry.name) and not entry.name.startswith(_ASIDE):
                    shutil.rmtree(entry) if entry.is_dir() and not entry.is_symlink() else entry.unlink()
            if aside is not None and aside.is_dir():
                for entry in aside.iterdir():
                    os.replace(entry, run.path / entry.name)
                aside.rmdir()
            elif not existed and run.path.is_dir() and not any(run.path.iterdir()):
                run.path.rmdir()
            raise
    if aside is not None:
        shutil.rmtree(aside, ignore_errors=True)


def _owner(aside: Path) -> int:
    """The process that set a run aside (its folder name ends in the pid); 0 if unreadable."""
    tail = aside.name.rsplit("-", 1)[-1]
    return int(tail) if tail.isdigit() else 0


def _alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


@contextmanager
def _terminate_as_exit() -> Iterator[None]:
    """SIGTERM raises SystemExit(143) while a run is being replaced, so the old run is put back as
    on Ctrl-C (only where nobody handles SIGTERM already, and only in the main thread)."""
    if threading.current_thread() is not threading.main_thread() or signal.getsignal(signal.SIGTERM) != signal.SIG_DFL:
        yield
        return

    def terminate(signum: int, frame: Any) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, terminate)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _step_of(arrays: dict[str, np.ndarray], path: Path) -> int:
    """The step a checkpoint file says it belongs to (and which its folder is named after)."""
    try:
        check_arrays(arrays, {"checkpoint_step": ("i", ())}, "checkpoint")
    except StateError as e:
        raise RunError(f"damaged checkpoint {path}: {e}") from None
    step = int(arrays.pop("checkpoint_step"))
    if path.parent.name.isdigit() and step != int(path.parent.name):
        raise RunError(f"damaged checkpoint {path}: it says step {step}, its folder {path.parent.name}")
    return step


def load_checkpoint_folder(folder: Path, only: tuple[str, ...] | None = None) -> tuple[int, dict[str, np.ndarray]]:
    """(step, brain state) of one checkpoint folder: brain.npz, or its parts merged; `only`:
    the key prefixes to read (None: all)."""
    only = None if only is None else ("checkpoint_step", *only)
    if (folder / "brain.npz").exists():
        arrays = load_arrays(folder / "brain.npz", only)
        return _step_of(arrays, folder / "brain.npz"), arrays
    merged: dict[str, np.ndarray] = {}
    step = None
    for path in sorted(folder.glob("*.npz")):
        arrays = load_arrays(path, only)
        part_step = _step_of(arrays, path)
        if step is not None and part_step != step:
            raise RunError(f"{path} belongs to step {part_step}, not {step}")
        step = part_step
        merged.update(arrays)
    if step is None:
        raise RunError(f"{folder} holds no checkpoint files")
    if "rejected" not in merged:  # each worker counts the stimuli it refused
        counts = [v for k, v in merged.items() if k.startswith("rejected.")]
        if any(v.shape != () or v.dtype.kind != "i" for v in counts):
            raise RunError(f"damaged checkpoint {folder}: a rejected.<modality> count is not one integer")
        merged["rejected"] = np.array(sum(int(v) for v in counts), np.int64)
    return step, merged


class PartWriter(threading.Thread):
    """Writes one process's checkpoint part in the background, then (with `keep`) removes the
    parts older than the newest `keep` complete checkpoints. A live worker's part holds up to
    10,000 buffered stimuli (164 MB of spectrograms), which took 0.16-0.25 s to write: in the
    process's loop, a stall of live recall at every checkpoint. `agent.runtime.service.Service.write_part`
    runs it."""

    def __init__(self, run: RunFolder, step: int, part: str, arrays: dict[str, np.ndarray], keep: int | None = None):
        super().__init__(name=f"write-{part}-{step}", daemon=True)
        self.run_folder, self.step, self.part, self.arrays, self.keep = run, step, part, arrays, keep
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self.run_folder.save_part(self.step, self.part, self.arrays)
            if self.keep is not None:
                self.run_folder.drop_old_parts(keep=self.keep)
        except BaseException as e:  # reported by the process, which goes on
            self.error = e
        finally:
            self.arrays = {}
