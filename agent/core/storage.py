"""Safe, atomic storage of arrays and torch state. No pickle anywhere.

Every writer goes through a temporary file and a rename, so a crash leaves the
old file or the new one, never half of one. Readers refuse pickled objects
(`allow_pickle=False`, `weights_only=True`) and turn damaged files into clear
errors that name the file.
"""

from __future__ import annotations

import os
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import numpy as np


class RunError(RuntimeError):
    """A run folder that is missing, incomplete or damaged; the message says which file."""


def atomic_write_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_arrays(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """np.savez to a temporary file, then rename into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".npz")
    os.close(fd)
    try:
        np.savez(tmp, **arrays)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


MAX_ARRAY_BYTES = 8 << 30  # no array of a run folder is near this; a header claiming more is damage


def _check_headers(path: Path) -> None:
    """Refuse an .npz whose array headers claim more bytes than the file holds, before numpy allocates them."""
    size = path.stat().st_size
    with zipfile.ZipFile(path) as archive:
        for info in archive.infolist():
            if info.file_size > size and info.compress_type == zipfile.ZIP_STORED:
                raise ValueError(f"{info.filename} claims {info.file_size} bytes in a file of {size}")
            with archive.open(info) as f:
                version = np.lib.format.read_magic(f)
                read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
                shape, _, dtype = read(f)  # the header only, not the data
            if dtype.hasobject:
                raise ValueError(f"{info.filename} holds Python objects (refused: never unpickled)")
            nbytes = int(np.prod(shape, dtype=object)) * dtype.itemsize
            if nbytes > min(info.file_size, MAX_ARRAY_BYTES):
                raise ValueError(f"{info.filename}: header claims {shape} {dtype} ({nbytes} bytes), "
                                 f"the entry holds {info.file_size}")


def load_arrays(path: Path, only: tuple[str, ...] | None = None) -> dict[str, np.ndarray]:
    """Load an .npz written by `save_arrays`; never unpickles; clear error when damaged.

    `only`: key prefixes to read (None: every array); the others are not read at all."""
    if Path(path).exists() and not Path(path).is_file():  # a FIFO or a device would block the read for ever
        raise RunError(f"cannot read {path}: not a regular file")
    try:
        _check_headers(path)
        with np.load(path, allow_pickle=False) as data:
            return {k: data[k] for k in data.files if only is None or k.startswith(only)}
    except FileNotFoundError:
        raise RunError(f"missing file {path}") from None
    except (ValueError, OSError, zipfile.BadZipFile, EOFError, MemoryError) as e:
        raise RunError(f"cannot read {path}: {e}"[:500]) from None


def save_torch(payload: dict[str, Any], path: Path) -> None:
    """torch.save of plain data (state dicts, lists, numbers) via a temporary file and a rename."""
    import torch

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(payload, tmp)
    os.replace(tmp, path)


def load_torch(path: Path, what: str) -> dict[str, Any]:
    """torch.load with weights_only=True (never runs pickled code); clear errors for bad files."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no {what} file at {path}")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # corrupt, truncated or foreign file: one line, not torch's advice to unpickle
        text = str(e).split("WeightsUnpickler error:")[-1].strip()  # torch's own reason, not its advice
        reason = text.splitlines()[0].split(". ")[0] if text else type(e).__name__
        raise ValueError(f"{path} is not a readable {what} checkpoint: {reason}"[:300]) from None
    if not isinstance(payload, dict):
        raise ValueError(f"{path} is not a readable {what} checkpoint: not a dict")
    return payload
