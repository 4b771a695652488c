"""Files a user hands over, read safely: image files (PNG, JPEG, BMP, PNM, TIFF, WebP; the header
is checked before any pixel is decoded) and wav files (the chunks are walked before the samples are),
with limits on size and errors that name the file. What they hold becomes a stimulus through
`sensors.image_features` and `sensors.sound_features`.
"""

from __future__ import annotations

import contextlib
import stat
import struct
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import NamedTuple

import cv2
import numpy as np

from sensors.errors import FeatureError
from sensors.image_features import composite_on_white, to_unit_grey
from sensors.sound_features import audio_to_stimulus


MAX_IMAGE_PIXELS = 40_000_000  # larger images are refused before their pixels are decoded
MAX_IMAGE_FILE_BYTES = 256 * 2**20  # bigger files are refused unread
MAX_AUDIO_SECONDS = 120.0  # a stimulus is 1 s; longer clips are refused before their samples are decoded
MAX_AUDIO_SAMPLES = 2**25  # samples of all channels together (about 33.5 million, 256 MiB as float64)
MIN_FILE_SAMPLE_RATE, MAX_FILE_SAMPLE_RATE = 1000, 384_000  # sample rates accepted from wav files
MAX_AUDIO_FILE_BYTES = 8 * MAX_AUDIO_SAMPLES + 2**20  # holds any clip within the limits (64-bit samples)


def _check_regular_file(path: Path, what: str) -> int:
    """Size of `path` if it is an existing, non-empty regular file; else a FeatureError saying what it is."""
    try:
        st = path.stat()
    except FileNotFoundError:
        raise FeatureError(f"{path}: file does not exist") from None
    except OSError as exc:
        raise FeatureError(f"{path}: cannot read file ({exc.strerror or type(exc).__name__})") from None
    if stat.S_ISDIR(st.st_mode):
        raise FeatureError(f"{path}: is a folder, not {what} file")
    if not stat.S_ISREG(st.st_mode):
        raise FeatureError(f"{path}: not a regular file (a pipe or device cannot be {what} file)")
    if st.st_size == 0:
        raise FeatureError(f"{path}: file is empty (0 bytes)")
    return int(st.st_size)


def _read_file_bytes(path: Path, limit: int, what: str) -> bytes:
    """The whole file, at most `limit` bytes; errors name the file."""
    size = _check_regular_file(path, what)
    if size > limit:
        raise FeatureError(f"{path}: file is too large for {what} file ({size / 2**20:.0f} MiB; "
                           f"the limit is {limit / 2**20:.0f} MiB)")
    try:
        with open(path, "rb") as fh:
            data = fh.read(limit + 1)
    except OSError as exc:
        raise FeatureError(f"{path}: cannot read file ({exc.strerror or type(exc).__name__})") from None
    if not data:
        raise FeatureError(f"{path}: file is empty (0 bytes)")
    if len(data) > limit:
        raise FeatureError(f"{path}: file is too large for {what} file (over {limit / 2**20:.0f} MiB)")
    return data


class ImageHeader(NamedTuple):
    """What an image file's header says, read without decoding any pixel."""

    format: str  # PNG, JPEG, BMP, PNM, TIFF or WebP
    width: int
    height: int
    alpha: bool  # the image may carry an alpha channel (then it is composited on white)


_TIFF_CMYK = 5  # PhotometricInterpretation "separated": 4 channels that are ink, not BGRA


def image_header(data: bytes) -> ImageHeader:
    """Format and size of an encoded image from its header bytes alone (no pixel is decoded).

    Only the formats whose header is understood here are accepted: OpenCV picks its
    decoder from the content, so anything else could decode an image of any size.
    """
    try:
        if data[:8] == b"\x89PNG\r\n\x1a\n":
            return _png_header(data)
        if data[:3] == b"\xff\xd8\xff":
            return _jpeg_header(data)
        if data[:2] == b"BM":
            return _bmp_header(data)
        if data[:1] == b"P" and data[1:2] in b"1234567" and data[2:3].isspace():
            return _pnm_header(data)
        if data[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
            return _tiff_header(data)
        if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
            return _webp_header(data)
    except FeatureError:
        raise
    except (struct.error, IndexError, KeyError, ValueError) as exc:
        raise FeatureError(f"corrupt image header ({type(exc).__name__}: {exc})") from None
    head = data[:8]
    raise FeatureError("not a PNG, JPEG, BMP, PNM, TIFF or WebP image"
                       + (f" (starts with {head!r})" if head else ""))


def _png_header(data: bytes) -> ImageHeader:
    if data[12:16] != b"IHDR":
        raise ValueError("PNG without IHDR chunk")
    width, height, _, colour_type = struct.unpack(">IIBB", data[16:26])
    alpha = colour_type in (4, 6)
    pos = 8
    while pos + 8 <= len(data) and not alpha:  # a tRNS chunk before the pixels makes a palette/grey transparent
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        if kind == b"tRNS":
            alpha = True
        if kind in (b"IDAT", b"IEND"):
            break
        pos += 12 + length
    return ImageHeader("PNG", width, height, alpha)


_JPEG_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


def _jpeg_header(data: bytes) -> ImageHeader:
    pos = 2
    while True:
        if data[pos] != 0xFF:
            raise ValueError(f"JPEG marker expected at byte {pos}")
        while data[pos] == 0xFF:  # fill bytes
            pos += 1
        marker = data[pos]
        pos += 1
        if marker in (0x01, *range(0xD0, 0xD8)):  # markers without a length
            continue
        if marker in (0xD9, 0xDA):
            raise ValueError("JPEG without a frame header before its scan")
        (length,) = struct.unpack(">H", data[pos:pos + 2])
        if length < 2:
            raise ValueError(f"JPEG segment of length {length}")
        if marker in _JPEG_SOF:
            height, width = struct.unpack(">HH", data[pos + 3:pos + 7])
            return ImageHeader("JPEG", width, height, False)
        pos += length


def _bmp_header(data: bytes) -> ImageHeader:
    (size,) = struct.unpack("<I", data[14:18])
    if size == 12:  # OS/2 BITMAPCOREHEADER
        width, height, _, bits = struct.unpack("<HHHH", data[18:26])
    else:
        width, height, _, bits = struct.unpack("<iiHH", data[18:30])
    return ImageHeader("BMP", abs(width), abs(height), bits == 32)


def _pnm_header(data: bytes) -> ImageHeader:
    kind = data[1:2]
    head = data[:4096]
    if kind == b"7":  # PAM: "WIDTH w", "HEIGHT h", "TUPLTYPE ...", ..., "ENDHDR"
        fields: dict[bytes, bytes] = {}
        for line in head.split(b"\n")[1:]:
            words = line.split(b"#")[0].split()
            if words == [b"ENDHDR"]:
                break
            if len(words) >= 2:
                fields[words[0]] = words[1]
        alpha = fields.get(b"TUPLTYPE", b"").endswith(b"_ALPHA")
        return ImageHeader("PNM", int(fields[b"WIDTH"]), int(fields[b"HEIGHT"]), alpha)
    numbers: list[int] = []
    for line in head[2:].split(b"\n"):
        for word in line.split(b"#")[0].split():
            numbers.append(int(word))
            if len(numbers) == 2:
                return ImageHeader("PNM", numbers[0], numbers[1], False)
    raise ValueError("PNM header without width and height")


def _tiff_header(data: bytes) -> ImageHeader:
    """Width and height from the first IFD (the page OpenCV reads); tiles must fit the limit too."""
    e = "<" if data[:2] == b"II" else ">"
    big = data[2:4] in (b"+\x00", b"\x00+")
    if big:
        (offset,) = struct.unpack(e + "Q", data[8:16])
        (count,) = struct.unpack(e + "Q", data[offset:offset + 8])
        entry, first, value_fmt = 20, offset + 8, "Q"
    else:
        (offset,) = struct.unpack(e + "I", data[4:8])
        (count,) = struct.unpack(e + "H", data[offset:offset + 2])
        entry, first, value_fmt = 12, offset + 2, "I"
    tags: dict[int, int] = {}
    for i in range(min(count, 4096)):
        at = first + i * entry
        tag, kind = struct.unpack(e + "HH", data[at:at + 4])
        raw = data[at + entry - struct.calcsize(value_fmt):at + entry]
        if kind == 3:  # SHORT, left-justified in the value field
            tags[tag] = struct.unpack(e + "H", raw[:2])[0]
        elif kind == 4:  # LONG
            tags[tag] = struct.unpack(e + "I", raw[:4])[0]
        elif kind == 16:  # LONG8 (BigTIFF)
            tags[tag] = struct.unpack(e + "Q", raw[:8])[0]
    if 256 not in tags or 257 not in tags:
        raise ValueError("TIFF without ImageWidth/ImageLength")
    width, height = tags[256], tags[257]
    if tags.get(322, 0) * tags.get(323, 0) > MAX_IMAGE_PIXELS:  # TileWidth x TileLength: decoded a tile at a time
        raise FeatureError(f"TIFF tiles of {tags[322]}x{tags[323]} pixels are over the limit of "
                           f"{MAX_IMAGE_PIXELS:,} pixels (MAX_IMAGE_PIXELS)")
    # ExtraSamples, or grey+1 / RGB+1 samples per pixel (OpenCV writes RGBA so): an alpha channel, unless CMYK
    alpha = tags.get(262) != _TIFF_CMYK and (338 in tags or tags.get(277, 1) in (2, 4))
    return ImageHeader("TIFF", width, height, alpha)


def _webp_header(data: bytes) -> ImageHeader:
    chunk = data[12:16]
    if chunk == b"VP8X":
        flags = data[20]
        width = 1 + int.from_bytes(data[24:27], "little")
        height = 1 + int.from_bytes(data[27:30], "little")
        return ImageHeader("WebP", width, height, bool(flags & 0x10))
    if chunk == b"VP8L":
        if data[20] != 0x2F:
            raise ValueError("WebP lossless without its signature")
        (bits,) = struct.unpack("<I", data[21:25])
        return ImageHeader("WebP", 1 + (bits & 0x3FFF), 1 + ((bits >> 14) & 0x3FFF), bool(bits >> 28 & 1))
    if chunk == b"VP8 ":
        if data[23:26] != b"\x9d\x01\x2a":
            raise ValueError("WebP lossy without its start code")
        width, height = struct.unpack("<HH", data[26:30])
        return ImageHeader("WebP", width & 0x3FFF, height & 0x3FFF, False)
    raise ValueError(f"unknown WebP chunk {chunk!r}")


def _check_image_size(width: int, height: int) -> None:
    if width <= 0 or height <= 0:
        raise FeatureError(f"image header says {width}x{height} pixels")
    if width * height > MAX_IMAGE_PIXELS:
        raise FeatureError(
            f"image is too large: {width}x{height} = {width * height / 1e6:.1f} million pixels, the limit is "
            f"{MAX_IMAGE_PIXELS / 1e6:g} million (MAX_IMAGE_PIXELS); shrink it first")





@contextlib.contextmanager
def _quiet_opencv() -> Iterator[None]:
    """Silence OpenCV's (and its codecs') warnings while decoding an untrusted file."""
    logging = getattr(getattr(cv2, "utils", None), "logging", None)
    if logging is None:
        yield
        return
    before = logging.getLogLevel()
    logging.setLogLevel(logging.LOG_LEVEL_SILENT)
    try:
        yield
    finally:
        logging.setLogLevel(before)


def _last_line(exc: BaseException) -> str:
    """The last non-empty line of an exception's message (OpenCV's are multi-line)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[-1] if lines else type(exc).__name__


def decode_image_file(path: str | Path) -> np.ndarray:
    """Read an image file (png, jpg, bmp, pgm, tif, webp) as HxW grey in [0, 1]; errors name the file.

    The header is checked first: images over MAX_IMAGE_PIXELS are refused before
    any pixel is decoded. Transparent images are composited on white before they
    become grey, so dark ink on a transparent background reads as ink on paper.
    `sensors.files.read_image_file` makes the stimulus of it.
    """
    path = Path(path)
    data = _read_file_bytes(path, MAX_IMAGE_FILE_BYTES, "an image")
    try:
        header = image_header(data)
        _check_image_size(header.width, header.height)
        # JPEG has no alpha (and 4 channels there are CMYK); IMREAD_UNCHANGED would also skip EXIF rotation
        flags = cv2.IMREAD_UNCHANGED if header.alpha else cv2.IMREAD_GRAYSCALE
        try:
            with _quiet_opencv():  # a bad file gets one line from us, not OpenCV's log lines too
                img = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), flags)
        except cv2.error as exc:
            raise FeatureError(f"cannot decode {header.format} image ({_last_line(exc)})") from None
        del data
        if img is None or img.size == 0:
            raise FeatureError(f"corrupt or truncated {header.format} image (OpenCV cannot decode it)")
        _check_image_size(img.shape[1], img.shape[0])
        return to_unit_grey(composite_on_white(img))
    except FeatureError as exc:
        raise FeatureError(f"{path}: {exc}") from None


_WAV_SCALES = {np.dtype(np.int16): 32768.0, np.dtype(np.int32): 2147483648.0}


def read_wav_file(path: str | Path) -> tuple[np.ndarray, int]:
    """Read a wav file as float32 in [-1, 1] plus its sample rate; errors name the file."""
    return _read_wav(Path(path))


def _read_wav(path: Path, check: Callable[[int, int, int], None] | None = None) -> tuple[np.ndarray, int]:
    """read_wav_file; `check(frames, channels, rate)` vets the decoded samples before they are converted."""
    from scipy.io import wavfile  # heavy to import: only when a wav is read

    _check_regular_file(path, "a wav")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", wavfile.WavFileWarning)
            rate, data = wavfile.read(str(path))
    except FileNotFoundError as exc:
        raise FeatureError(f"{path}: file does not exist") from exc
    except MemoryError as exc:
        raise FeatureError(f"{path}: corrupt or unsupported wav file (too large to decode)") from exc
    except Exception as exc:  # scipy's parser of untrusted bytes fails in many ways (even UnboundLocalError)
        found = _walk_wav(path)  # says what is wrong in words where the chunk structure is broken
        reason = found if isinstance(found, str) else f"{type(exc).__name__}: {exc}"
        raise FeatureError(f"{path}: corrupt or unsupported wav file ({reason})") from exc
    if check is not None:
        try:
            check(data.shape[0], data.shape[1] if data.ndim == 2 else 1, int(rate))
        except FeatureError as exc:
            raise FeatureError(f"{path}: {exc}") from None
    return _wav_to_float(data, path), int(rate)


def _wav_to_float(data: np.ndarray, path: Path) -> np.ndarray:
    """Integer or float PCM -> float32 in [-1, 1]."""
    if data.dtype == np.uint8:
        return ((data.astype(np.float32) - 128.0) / 128.0)
    if data.dtype in _WAV_SCALES:
        return (data.astype(np.float64) / _WAV_SCALES[data.dtype]).astype(np.float32)
    if np.issubdtype(data.dtype, np.floating):
        if not np.all(np.isfinite(data)):  # checked first: casting a signalling NaN warns
            raise FeatureError(f"{path}: wav contains NaN or infinite samples")
        return data.astype(np.float32)
    raise FeatureError(f"{path}: unsupported wav sample type {data.dtype}")


class WavHeader(NamedTuple):
    """What a wav file's header says (its fmt chunk), and how many sample frames its data chunk holds."""

    channels: int
    rate: int
    frames: int  # the data chunk's declared size, cut to the bytes the file really has


def wav_header(path: Path) -> WavHeader | None:
    """Walk the RIFF chunks up to the first data chunk, reading only chunk headers.

    None where they make no sense: the decoder then says what is wrong.
    """
    found = _walk_wav(path)
    return found if isinstance(found, WavHeader) else None


def _walk_wav(path: Path) -> WavHeader | str:
    """wav_header, or what is wrong with the file's chunk structure."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as fh:
            riff = fh.read(12)
            if riff[:4] not in (b"RIFF", b"RIFX", b"RF64") or riff[8:12] != b"WAVE":
                return f"not a RIFF/WAVE file (starts with {riff[:12]!r})"
            e = ">" if riff[:4] == b"RIFX" else "<"
            fmt = None
            pos = 12
            for _ in range(1000):
                fh.seek(pos)
                head = fh.read(8)
                if len(head) < 8:
                    return f"no data chunk (the file ends at byte {size})" if fmt else "no fmt chunk"
                kind, length = head[:4], struct.unpack(e + "I", head[4:])[0]
                if kind == b"fmt ":
                    body = fh.read(16)
                    if len(body) < 16:
                        return "the fmt chunk is cut short"
                    _, channels, rate, _, block_align, _ = struct.unpack(e + "HHIIHH", body)
                    fmt = (channels, rate, block_align)
                elif kind == b"data":
                    if fmt is None:
                        return "no fmt chunk before the data"
                    channels, rate, block_align = fmt
                    if channels == 0 or block_align < channels:
                        return f"the fmt chunk says {channels} channels in {block_align}-byte frames"
                    available = max(0, size - (pos + 8))
                    data_bytes = available if riff[:4] == b"RF64" else min(length, available)
                    return WavHeader(channels, rate, data_bytes // block_align)
                pos += 8 + length + (length & 1)
    except OSError as exc:
        return f"cannot read file ({exc.strerror or type(exc).__name__})"
    return "too many chunks before the data"


def _check_audio_length(frames: int, channels: int, rate: int) -> None:
    """Refuse sample rates outside MIN/MAX_FILE_SAMPLE_RATE and clips over MAX_AUDIO_SECONDS/SAMPLES."""
    if not MIN_FILE_SAMPLE_RATE <= rate <= MAX_FILE_SAMPLE_RATE:
        raise FeatureError(f"sample rate {rate} Hz is outside {MIN_FILE_SAMPLE_RATE}-{MAX_FILE_SAMPLE_RATE} Hz")
    seconds = frames / rate
    if seconds > MAX_AUDIO_SECONDS or frames * channels > MAX_AUDIO_SAMPLES:
        raise FeatureError(
            f"audio is too long: {seconds:.1f} s ({frames:,} frames x {channels} channels at {rate} Hz); "
            f"the limit is {MAX_AUDIO_SECONDS:g} s and {MAX_AUDIO_SAMPLES:,} samples "
            f"(MAX_AUDIO_SECONDS, MAX_AUDIO_SAMPLES); cut out the word first")


def decode_audio_file(path: str | Path) -> tuple[np.ndarray, int]:
    """Read a wav file as (float32 samples in [-1, 1], sample rate); errors name the file.

    The header is checked first: clips over MAX_AUDIO_SECONDS (or MAX_AUDIO_SAMPLES)
    and odd sample rates are refused before their samples are decoded, and files
    over MAX_AUDIO_FILE_BYTES are not read at all.
    """
    path = Path(path)
    size = _check_regular_file(path, "a wav")
    try:
        if size > MAX_AUDIO_FILE_BYTES:
            raise FeatureError(f"file is too large for a wav stimulus ({size / 2**20:.0f} MiB; the limit is "
                               f"{MAX_AUDIO_FILE_BYTES / 2**20:.0f} MiB)")
        header = wav_header(path)
        if header is not None:
            _check_audio_length(header.frames, header.channels, header.rate)
    except FeatureError as exc:
        raise FeatureError(f"{path}: {exc}") from None
    return _read_wav(path, _check_audio_length)  # the decoded samples too: headers can lie


def read_audio_file(path: str | Path) -> np.ndarray:
    """Read a wav file and turn all of it into one stimulus (a dataset's clip is one word)."""
    wave, rate = decode_audio_file(path)
    try:
        return audio_to_stimulus(wave, rate)
    except FeatureError as exc:
        raise FeatureError(f"{path}: {exc}") from None


def write_png(path: str | Path, arr2d_in_0_1: np.ndarray, scale: int = 1, colour: bool = False) -> None:
    """Save a [0, 1] array as an 8-bit PNG, optionally upscaled (nearest) for viewing; `colour` maps it
    through magma (loud is bright), as the plots draw spectrograms."""
    arr = np.asarray(arr2d_in_0_1, dtype=np.float64)
    if arr.ndim != 2 or arr.size == 0:
        raise FeatureError(f"write_png needs a non-empty 2-D array, got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise FeatureError("write_png: array contains NaN or infinite values")
    if int(scale) < 1:
        raise FeatureError(f"write_png: scale must be >= 1, got {scale}")
    img = np.round(np.clip(arr, 0.0, 1.0) * 255.0).astype(np.uint8)
    if colour:
        img = cv2.applyColorMap(img, cv2.COLORMAP_MAGMA)
    if scale > 1:
        img = cv2.resize(img, (img.shape[1] * int(scale), img.shape[0] * int(scale)),
                         interpolation=cv2.INTER_NEAREST)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), img):
        raise OSError(f"could not write PNG to {path}")
