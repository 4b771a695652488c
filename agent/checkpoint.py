"""Run folders and crash-safe checkpoints. No pickle anywhere.

A run folder holds `config.toml`, `encoders/<m>.pt` (state dicts, loaded with
`weights_only=True`), `encodings.npz`, `stream.npz`, `checkpoints/<step>/brain.npz`
(arrays, loaded with `allow_pickle=False`), `metrics.json` and `log.txt`.

A checkpoint is written into a fresh folder, then `checkpoints/LATEST` is
atomically replaced to point at it, so a crash at any instant leaves the last
complete checkpoint readable; older ones are removed afterwards.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np

from agent.config import Config, load_toml, save_toml
from agent.storage import RunError, atomic_write_bytes, load_arrays, save_arrays


class RunFolder:
    """Paths and small helpers of one run folder."""

    def __init__(self, path: Path | str):
        self.path = Path(path)

    @property
    def config_path(self) -> Path:
        return self.path / "config.toml"

    def encoder_path(self, modality: str) -> Path:
        return self.path / "encoders" / f"{modality}.pt"

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
        self.path.mkdir(parents=True, exist_ok=True)
        save_toml(config, self.config_path)

    def config(self) -> Config:
        if not self.path.is_dir():
            raise RunError(f"no run folder at {self.path} (make one with `cdz train --out {self.path}`)")
        if not self.config_path.exists():
            raise RunError(f"{self.path} is not a run folder: config.toml is missing")
        try:
            return load_toml(self.config_path)
        except (KeyError, ValueError, TypeError) as e:
            raise RunError(f"bad config {self.config_path}: {e}") from None

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

    def latest_checkpoint(self) -> Path | None:
        latest = self.checkpoints_dir / "LATEST"
        if not latest.exists():
            return None
        folder = self.checkpoints_dir / latest.read_text().strip()
        return folder if (folder / "brain.npz").exists() else None

    def load_checkpoint(self) -> tuple[int, dict[str, np.ndarray]]:
        folder = self.latest_checkpoint()
        if folder is None:
            raise RunError(f"{self.path} has no checkpoint yet (training did not get far enough)")
        arrays = load_arrays(folder / "brain.npz")
        return int(arrays.pop("checkpoint_step")), arrays
