"""MNIST and FSDD as verified, featurised arrays.

Data is looked for in ``$CDZ_DATA_DIR`` and then in the cache folder
(``$XDG_CACHE_HOME`` or ``~/.cache``)/cdz-agent, each holding ``mnist/`` and
``fsdd/`` subfolders. Files are checked against published checksums once per
process. Missing files are downloaded into the cache folder when allowed;
otherwise loading stops with a message that says where to put them.

Labels are returned for scoring only; the learner must never see them.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import re
import shutil
import sys
import tempfile
import urllib.request
import zipfile
import zlib
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from sensors.file_reading import read_audio_file
from sensors.image_features import IMAGE_SIZE
from sensors.sound_features import HOP, N_FFT, N_FRAMES, N_MELS, SAMPLE_RATE, TOP_DB

SPLITS = ("train", "test")
DIGITS = tuple(range(10))

MNIST_URL = "https://ossci-datasets.s3.amazonaws.com/mnist/"
MNIST_FILES = {  # split -> (images, labels)
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
MNIST_SHA256 = {
    "train-images-idx3-ubyte.gz": "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
    "train-labels-idx1-ubyte.gz": "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
    "t10k-images-idx3-ubyte.gz": "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
    "t10k-labels-idx1-ubyte.gz": "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
}
MNIST_SIZES = {"train": 60000, "test": 10000}
IDX_IMAGES_MAGIC = 0x00000803
IDX_LABELS_MAGIC = 0x00000801

FSDD_COMMIT = "26eb9aaf76e81b692f806f9140c2d2777410d7a1"
FSDD_URL = f"https://github.com/Jakobovski/free-spoken-digit-dataset/archive/{FSDD_COMMIT}.zip"
FSDD_SPEAKERS = ("george", "jackson", "lucas", "nicolas", "theo", "yweweler")
FSDD_INDICES = {"test": range(0, 5), "train": range(5, 50)}
# sha256 of the sorted `sha256sum` lines ("<hash>  <name>\n") of all 3000 wavs
FSDD_COMBINED_SHA256 = "710951a2589b3ada7d439d4478090cd83b6eed3c738ae7ae04a030fa0f61ed88"
FSDD_NAME = re.compile(r"^(\d)_([a-z]+)_(\d+)\.wav$")

DOWNLOAD_TIMEOUT_S = 15.0
FEATURE_CACHE_VERSION = 1  # bump when audio_to_stimulus changes behaviour


class DataMissingError(RuntimeError):
    """Data files are absent (and could not be downloaded)."""


class DataCorruptError(RuntimeError):
    """A data file is present but does not match its checksum or format."""


@dataclass(frozen=True)
class Split:
    """One modality's stimuli with labels and ids kept for scoring and tracing."""

    modality: str
    x: np.ndarray
    y: np.ndarray
    names: tuple[str, ...]
    speakers: np.ndarray | None = None

    def __len__(self) -> int:
        return int(self.y.shape[0])


# --------------------------------------------------------------------------- places


def cache_dir() -> Path:
    """The per-user folder for downloads and feature caches."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "cdz-agent"


def data_dirs() -> list[Path]:
    """Folders searched for data, in order: $CDZ_DATA_DIR (if set), then the cache."""
    dirs = []
    env = os.environ.get("CDZ_DATA_DIR")
    if env:
        dirs.append(Path(env).expanduser())
    dirs.append(cache_dir())
    return dirs


def _download_allowed(download: bool) -> bool:
    """Downloading needs both the caller's consent and no CDZ_NO_DOWNLOAD veto."""
    veto = os.environ.get("CDZ_NO_DOWNLOAD", "").strip().lower() not in ("", "0", "false", "no")
    return download and not veto


def _missing_message(dataset: str, missing: Sequence[str], why: str) -> str:
    """A message that tells the user exactly what to do about missing data."""
    shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
    looked = "\n".join(f"  - {d / dataset}" for d in data_dirs())
    return (
        f"{dataset.upper()} data not found: missing {shown}.\n"
        f"Looked in:\n{looked}\n"
        f"{why}\n"
        f"Fix: put the files in a folder with mnist/ and fsdd/ subfolders and set "
        f"CDZ_DATA_DIR=/path/to/that/folder (files go in CDZ_DATA_DIR/{dataset}/), "
        f"or allow downloading (download=True, CDZ_NO_DOWNLOAD unset) with internet access."
    )


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"split must be one of {list(SPLITS)}, got {split!r}")


def _check_digits(digits: Sequence[int] | None) -> tuple[int, ...]:
    if digits is None:
        return DIGITS
    chosen = tuple(sorted({int(d) for d in digits}))
    if not chosen or any(d not in DIGITS for d in chosen):
        raise ValueError(f"digits must be a non-empty subset of 0-9, got {list(digits)!r}")
    return chosen


def _check_per_class(per_class: int | None) -> None:
    if per_class is not None and int(per_class) < 1:
        raise ValueError(f"per_class must be a positive integer or None, got {per_class!r}")


def _select(labels: np.ndarray, digits: tuple[int, ...], per_class: int | None) -> np.ndarray:
    """Indices of the wanted digits, the first `per_class` of each in the given order."""
    keep = np.isin(labels, digits)
    if per_class is not None:
        rank = np.zeros(labels.shape[0], dtype=np.int64)
        for d in digits:
            hits = labels == d
            rank[hits] = np.arange(int(hits.sum()))
        keep &= rank < int(per_class)
    return np.flatnonzero(keep)


# --------------------------------------------------------------------------- checksums

_VERIFIED: set[tuple] = set()  # stat signatures of files already checked this process


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _signature(paths: Sequence[Path]) -> tuple:
    """Cheap identity of a set of files: changes when any is replaced or edited."""
    folders = {p.parent: p.parent.resolve() for p in paths}
    return tuple((str(folders[p.parent] / p.name), st.st_size, st.st_mtime_ns)
                 for p in paths for st in [p.stat()])


def _verify_mnist_file(path: Path) -> None:
    sig = ("mnist",) + _signature([path])
    if sig in _VERIFIED:
        return
    actual = _sha256_file(path)
    expected = MNIST_SHA256[path.name]
    if actual != expected:
        raise DataCorruptError(
            f"{path} is corrupt: sha256 {actual} does not match the published {expected}. "
            f"Delete it and download or copy it again.")
    _VERIFIED.add(sig)


@lru_cache(maxsize=4)
def _fsdd_hashes(signature: tuple) -> dict[str, str]:
    """Per-file sha256 of the FSDD wavs, verified against the combined checksum."""
    paths = [Path(entry[0]) for entry in signature[1:]]
    hashes = {p.name: _sha256_file(p) for p in paths}
    lines = sorted(f"{h}  {name}\n" for name, h in hashes.items())
    combined = hashlib.sha256("".join(lines).encode()).hexdigest()
    if combined != FSDD_COMBINED_SHA256:
        folder = paths[0].parent if paths else "?"
        raise DataCorruptError(
            f"FSDD recordings in {folder} do not match the published checksum "
            f"(combined sha256 {combined}, expected {FSDD_COMBINED_SHA256}): at least one "
            f"of the 3000 wav files is damaged or different. Copy or download them again.")
    return hashes


# --------------------------------------------------------------------------- downloads


def _fetch(url: str, dest: Path, timeout: float = DOWNLOAD_TIMEOUT_S) -> None:
    """Stream `url` to `dest` atomically, with a progress bar."""
    from tqdm import tqdm

    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp, os.fdopen(fd, "wb") as out:
            total = int(resp.headers.get("Content-Length") or 0) or None
            with tqdm(total=total, unit="B", unit_scale=True, desc=dest.name, leave=False) as bar:
                for block in iter(lambda: resp.read(1 << 16), b""):
                    out.write(block)
                    bar.update(len(block))
        os.replace(tmp, dest)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _download_mnist(names: Sequence[str]) -> Path:
    """Download MNIST files into the cache; return the folder holding them."""
    folder = cache_dir() / "mnist"
    for name in names:
        dest = folder / name
        if dest.exists():
            continue
        part = folder / f"{name}.download"
        _fetch(MNIST_URL + name, part)
        if _sha256_file(part) != MNIST_SHA256[name]:
            part.unlink()
            raise OSError(f"downloaded {name} does not match its published sha256")
        os.replace(part, dest)
    return folder


def _download_fsdd() -> Path:
    """Download the FSDD archive at the pinned commit and unpack the wavs into the cache."""
    folder = cache_dir() / "fsdd"
    folder.parent.mkdir(parents=True, exist_ok=True)
    archive = folder.parent / f"fsdd-{FSDD_COMMIT[:12]}.zip"
    _fetch(FSDD_URL, archive)
    staging = Path(tempfile.mkdtemp(dir=folder.parent, prefix=".fsdd-"))
    try:
        with zipfile.ZipFile(archive) as zf:
            for info in zf.infolist():
                parts = info.filename.split("/")
                if len(parts) >= 2 and parts[-2] == "recordings" and FSDD_NAME.match(parts[-1]):
                    (staging / parts[-1]).write_bytes(zf.read(info))
        _fsdd_hashes(_fsdd_signature(staging))  # raises if the archive is not the pinned data
        folder.mkdir(parents=True, exist_ok=True)
        for wav in staging.iterdir():
            os.replace(wav, folder / wav.name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        archive.unlink(missing_ok=True)
    return folder


def _locate(dataset: str, names: Sequence[str], download: bool,
            downloader: Callable[[], Path]) -> Path:
    """First data folder holding all `names`, downloading into the cache if allowed."""
    for root in data_dirs():
        folder = root / dataset
        if all((folder / n).is_file() for n in names):
            return folder
    missing = [n for n in names if not any((d / dataset / n).is_file() for d in data_dirs())]
    missing = missing or list(names)  # spread over several folders counts as missing
    if not _download_allowed(download):
        why = ("Downloading is disabled (CDZ_NO_DOWNLOAD is set)." if download
               else "Downloading is disabled (download=False).")
        raise DataMissingError(_missing_message(dataset, missing, why))
    source = {"mnist": MNIST_URL, "fsdd": FSDD_URL}.get(dataset, "the internet")
    print(f"{dataset.upper()} is not in {', '.join(str(d) for d in data_dirs())}: downloading it from {source} "
          f"into {cache_dir() / dataset} (set CDZ_NO_DOWNLOAD=1 to forbid, CDZ_DATA_DIR to use a copy)",
          file=sys.stderr, flush=True)
    try:
        return downloader()
    except DataCorruptError as exc:
        raise DataMissingError(_missing_message(dataset, missing, f"Download was corrupt: {exc}")) from exc
    except (OSError, zipfile.BadZipFile, ValueError) as exc:
        raise DataMissingError(_missing_message(dataset, missing, f"Download failed: {exc}")) from exc


# --------------------------------------------------------------------------- MNIST


def read_idx(path: Path, magic: int, item_shape: tuple[int, ...]) -> np.ndarray:
    """Parse a gzipped IDX file with numpy, checking magic number, shape and size."""
    try:
        with gzip.open(path, "rb") as fh:
            raw = fh.read()
    except (OSError, EOFError, zlib.error) as exc:
        raise DataCorruptError(f"{path} is not a readable gzip file ({exc})") from exc
    ndim = len(item_shape) + 1
    header_len = 4 + 4 * ndim
    if len(raw) < header_len:
        raise DataCorruptError(f"{path}: IDX header truncated ({len(raw)} bytes)")
    found = int.from_bytes(raw[:4], "big")
    if found != magic:
        raise DataCorruptError(f"{path}: bad IDX magic number 0x{found:08x}, expected 0x{magic:08x}")
    dims = tuple(int(v) for v in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    if dims[1:] != item_shape:
        raise DataCorruptError(f"{path}: IDX item shape {dims[1:]}, expected {item_shape}")
    if len(raw) - header_len != int(np.prod(dims)):
        raise DataCorruptError(
            f"{path}: IDX data has {len(raw) - header_len} bytes, header says {int(np.prod(dims))}")
    return np.frombuffer(raw, dtype=np.uint8, offset=header_len).reshape(dims)


@lru_cache(maxsize=4)
def _read_idx_cached(path: str, signature: tuple, magic: int,
                     item_shape: tuple[int, ...]) -> np.ndarray:
    """Parsed IDX arrays are kept (read-only) so repeated loads skip decompression."""
    arr = read_idx(Path(path), magic, item_shape)
    arr.setflags(write=False)
    return arr


def _mnist_arrays(split: str, download: bool) -> tuple[np.ndarray, np.ndarray]:
    """Verified raw (uint8 images, uint8 labels) of one MNIST split."""
    names = MNIST_FILES[split]
    folder = _locate("mnist", names, download, lambda: _download_mnist(names))
    img_path, lbl_path = folder / names[0], folder / names[1]
    for p in (img_path, lbl_path):
        _verify_mnist_file(p)
    images = _read_idx_cached(str(img_path), _signature([img_path]), IDX_IMAGES_MAGIC,
                              (IMAGE_SIZE, IMAGE_SIZE))
    labels = _read_idx_cached(str(lbl_path), _signature([lbl_path]), IDX_LABELS_MAGIC, ())
    if images.shape[0] != labels.shape[0] or labels.shape[0] != MNIST_SIZES[split]:
        raise DataCorruptError(
            f"{folder}: {images.shape[0]} images and {labels.shape[0]} labels, "
            f"expected {MNIST_SIZES[split]} of each")
    return images, labels


def load_mnist(split: str, digits: Sequence[int] | None = None, per_class: int | None = None,
               download: bool = True) -> Split:
    """MNIST images as (n, 28, 28) float32 in [0, 1], in file order."""
    _check_split(split)
    chosen = _check_digits(digits)
    _check_per_class(per_class)
    images, labels = _mnist_arrays(split, download)
    idx = _select(labels, chosen, per_class)
    # Same result as sensors.image_features.image_to_stimulus on each image (MNIST is already
    # 28x28 ink-on-dark); done in one vectorised step. A test checks they agree.
    x = images[idx].astype(np.float32) / np.float32(255.0)
    return Split(modality="visual", x=x, y=labels[idx].astype(np.int64),
                 names=tuple(f"mnist/{split}/{i}" for i in idx), speakers=None)


# --------------------------------------------------------------------------- FSDD


def fsdd_all_names() -> list[str]:
    """The 3000 file names of the pinned FSDD release."""
    return [f"{d}_{s}_{i}.wav" for d in DIGITS for s in FSDD_SPEAKERS for i in range(50)]


def _fsdd_signature(folder: Path) -> tuple:
    names = sorted(fsdd_all_names())
    return ("fsdd",) + _signature([folder / n for n in names])


def _fsdd_folder(download: bool) -> tuple[Path, dict[str, str]]:
    """Folder with the verified FSDD wavs and each file's sha256."""
    folder = _locate("fsdd", fsdd_all_names(), download, _download_fsdd)
    return folder, _fsdd_hashes(_fsdd_signature(folder))


def _check_speakers(speakers: Sequence[str] | None, label: str) -> set[str]:
    if speakers is None:
        return set()
    if isinstance(speakers, str):
        speakers = [speakers]
    unknown = sorted(set(speakers) - set(FSDD_SPEAKERS))
    if unknown:
        raise ValueError(f"{label}: unknown speaker(s) {unknown}; valid: {list(FSDD_SPEAKERS)}")
    return set(speakers)


def list_fsdd_files(split: str, digits: Sequence[int] | None = None, per_class: int | None = None,
                    speakers: Sequence[str] | None = None,
                    exclude_speakers: Sequence[str] | None = None,
                    download: bool = True) -> list[Path]:
    """Verified FSDD wav paths of a split, without featurising them.

    Order is by digit, then recording index, then speaker, so a small
    `per_class` subset draws from every speaker instead of only the first.
    """
    return _select_fsdd(split, digits, per_class, speakers, exclude_speakers, download)[0]


def _select_fsdd(split: str, digits: Sequence[int] | None, per_class: int | None,
                 speakers: Sequence[str] | None, exclude_speakers: Sequence[str] | None,
                 download: bool) -> tuple[list[Path], dict[str, str]]:
    """The chosen wav paths and the sha256 of every FSDD file."""
    _check_split(split)
    chosen = _check_digits(digits)
    _check_per_class(per_class)
    keep = _check_speakers(speakers, "speakers") or set(FSDD_SPEAKERS)
    keep -= _check_speakers(exclude_speakers, "exclude_speakers")
    folder, hashes = _fsdd_folder(download)
    entries = [(d, i, s) for d in chosen for i in FSDD_INDICES[split]
               for s in FSDD_SPEAKERS if s in keep]
    labels = np.array([d for d, _, _ in entries], dtype=np.int64)
    idx = _select(labels, chosen, per_class)
    return [folder / f"{d}_{s}_{i}.wav" for d, i, s in (entries[k] for k in idx)], hashes


def _feature_cache_path(files: Sequence[Path], hashes: dict[str, str]) -> Path:
    """Cache file named by the content of the chosen files and the feature settings."""
    h = hashlib.sha256()
    for p in files:
        h.update(f"{p.name}:{hashes[p.name]}\n".encode())
    consts = (FEATURE_CACHE_VERSION, SAMPLE_RATE, N_MELS, N_FRAMES,
              HOP, N_FFT, TOP_DB)
    h.update(repr(consts).encode())
    return cache_dir() / "features" / f"fsdd-{h.hexdigest()[:24]}.npy"


def _load_cached(path: Path, n: int) -> np.ndarray | None:
    """Cached features, or None when absent, unreadable or of the wrong shape."""
    try:
        x = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError):
        return None
    if x.shape != (n, N_MELS, N_FRAMES) or x.dtype != np.float32:
        return None
    return x


def _save_cached(path: Path, x: np.ndarray) -> None:
    """Write atomically; a cache that cannot be written only costs time later."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as fh:
                np.save(fh, x, allow_pickle=False)
            os.chmod(tmp, 0o644)  # mkstemp makes 0600; a cache may be shared
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    except OSError:
        pass


def featurise_fsdd(files: Sequence[Path]) -> np.ndarray:
    """(n, 64, 64) float32 stimuli of wav files (no caching)."""
    out = np.empty((len(files), N_MELS, N_FRAMES), dtype=np.float32)
    for k, path in enumerate(files):
        out[k] = read_audio_file(path)
    return out


def load_fsdd(split: str, digits: Sequence[int] | None = None, per_class: int | None = None,
              speakers: Sequence[str] | None = None,
              exclude_speakers: Sequence[str] | None = None, download: bool = True) -> Split:
    """FSDD log-mel spectrograms as (n, 64, 64) float32 in [0, 1], cached on disk."""
    files, hashes = _select_fsdd(split, digits, per_class, speakers, exclude_speakers, download)
    cache = _feature_cache_path(files, hashes)
    x = _load_cached(cache, len(files))
    if x is None:
        x = featurise_fsdd(files)
        _save_cached(cache, x)
    parsed = [FSDD_NAME.match(p.name) for p in files]
    return Split(
        modality="audio", x=x,
        y=np.array([int(m.group(1)) for m in parsed], dtype=np.int64),
        names=tuple(p.stem for p in files),
        speakers=np.array([m.group(2) for m in parsed], dtype=str),
    )
