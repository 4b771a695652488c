"""`cdz recall` batches: every file checked before the brain loads, bad files reported and skipped,
unique output names, transparent drawings, and size limits checked from headers before decoding."""

from __future__ import annotations

import io
import json
import struct
import tempfile
import time
import zlib
from collections import Counter
from pathlib import Path

import cv2
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy.io import wavfile

from sensors.errors import FeatureError
from sensors.file_reading import MAX_AUDIO_SECONDS, MAX_IMAGE_PIXELS, image_header
from sensors.image_features import IMAGE_SIZE
from sensors.sound_features import N_FRAMES, N_MELS
from sensors.files import read_image_file
from tools.cli import main
from tools.recall import Checked, check_file, exit_code, output_names, recall_files

from tests.runs import train_run

TINY = ["data.digits=[0,1]", 'data.speakers=["jackson"]', "data.per_class=40", "data.test_per_class=5",
        "teacher.epochs=2", "cortex.initial_nodes=10", "senses.audio.encoder.arch=linear", "senses.visual.encoder.epochs=1", "senses.visual.encoder.batch_size=16",
        "refine.at=[]"]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, data_dir) -> Path:
    """A real (tiny, untuned) run folder: two digits, one speaker, no refinement."""
    return train_run(tmp_path_factory, data_dir, TINY)


def _drawing() -> np.ndarray:
    """A hand-drawn-like digit: white (255) ink strokes on black, 60x80."""
    ink = np.zeros((60, 80), np.uint8)
    cv2.putText(ink, "7", (22, 50), cv2.FONT_HERSHEY_SIMPLEX, 1.8, 255, 5)
    return ink


def _recall_json(capsys, *argv: str) -> tuple[int, list[dict], str]:
    capsys.readouterr()
    code = main(["recall", "--run", argv[0], *argv[1:], "--json"])
    captured = capsys.readouterr()
    return code, json.loads(captured.out), captured.err


# ------------------------------------------------------------------------------------- batches


def test_good_and_bad_files_in_one_batch(tiny_run, tmp_path, data_dir, capsys):
    good = tmp_path / "seven.png"
    cv2.imwrite(str(good), 255 - _drawing())
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(good.read_bytes()[:60])
    wav = data_dir / "fsdd" / "1_jackson_1.wav"
    code, results, err = _recall_json(capsys, str(tiny_run), str(good), str(truncated), str(wav),
                                      str(tmp_path / "missing.wav"), "--out", str(tmp_path / "out"))
    assert code == 1
    assert [r["file"] for r in results] == [str(good), str(truncated), str(wav), str(tmp_path / "missing.wav")]
    ok, bad = [r for r in results if "error" not in r], [r for r in results if "error" in r]
    assert [r["modality"] for r in ok] == ["visual", "audio"]
    for r in ok:
        (item,) = r["recalled"].values()
        assert item["png"] is None or Path(item["png"]).stat().st_size > 100
    assert {r["file"]: r["modality"] for r in bad} == {str(truncated): "visual", str(tmp_path / "missing.wav"): "audio"}
    assert "does not exist" in bad[1]["error"]
    lines = err.strip().splitlines()  # one line per bad file, naming it
    assert len(lines) == 2 and str(truncated) in lines[0] and "missing.wav" in lines[1]
    # without --json: the answers on stdout, the failures on stderr, still exit 1
    capsys.readouterr()
    assert main(["recall", "--run", str(tiny_run), str(truncated), str(good), "--out", str(tmp_path / "out")]) == 1
    out = capsys.readouterr()
    assert str(good) in out.out and str(truncated) not in out.out and str(truncated) in out.err


def test_all_bad_files_fail_before_the_brain_loads(tmp_path, capsys, monkeypatch):
    def no_brain(*_args, **_kwargs):
        raise AssertionError("the brain was loaded for a batch without a good file")

    monkeypatch.setattr("replay.pipeline.load_brain", no_brain)
    folder = tmp_path / "a-folder.png"
    folder.mkdir()
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "broken.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk")
    (tmp_path / "notes.txt").write_text("hello")
    (tmp_path / "noise.jpg").write_bytes(bytes(range(256)) * 4)
    files = [tmp_path / n for n in ("empty.png", "broken.wav", "notes.txt", "noise.jpg", "a-folder.png", "gone.png")]
    start = time.perf_counter()
    code, results, err = _recall_json(capsys, str(tmp_path / "no-such-run"), *map(str, files))
    seconds = time.perf_counter() - start
    assert code == 2
    reasons = {Path(r["file"]).name: r["error"] for r in results}
    assert list(reasons) == [f.name for f in files]
    for word, name in (("empty", "empty.png"), ("wav", "broken.wav"), ("unknown file type '.txt'", "notes.txt"),
                       ("JPEG", "noise.jpg"), ("folder", "a-folder.png"), ("does not exist", "gone.png")):
        assert word in reasons[name], (name, reasons[name])
    lines = err.strip().splitlines()
    assert len(lines) == len(files) and all(f.name in line for f, line in zip(files, lines))
    assert seconds < 5.0, f"{seconds:.1f} s to refuse six bad files"


def test_a_broken_run_is_still_an_error_when_a_file_is_good(tmp_path, capsys):
    good = tmp_path / "seven.png"
    cv2.imwrite(str(good), 255 - _drawing())
    capsys.readouterr()
    assert main(["recall", "--run", str(tmp_path / "no-such-run"), str(good)]) == 2
    assert "no-such-run" in capsys.readouterr().err


def test_same_names_in_two_folders_give_two_outputs(tiny_run, tmp_path, data_dir, capsys):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    cv2.imwrite(str(tmp_path / "a" / "digit.png"), 255 - _drawing())
    cv2.imwrite(str(tmp_path / "b" / "digit.png"), 255 - cv2.flip(_drawing(), 1))
    wav = tmp_path / "a" / "digit.wav"
    wav.write_bytes((data_dir / "fsdd" / "0_jackson_1.wav").read_bytes())
    out = tmp_path / "out"
    files = [tmp_path / "a" / "digit.png", tmp_path / "b" / "digit.png", wav, tmp_path / "b" / "digit.png"]
    code, results, _ = _recall_json(capsys, str(tiny_run), *map(str, files), "--out", str(out))
    assert code == 0
    pngs = [item["png"] for r in results for item in r["recalled"].values()]
    assert None not in pngs and len(set(pngs)) == len(files), pngs
    assert [Path(p).name for p in pngs] == ["digit.audio.png", "digit-b.audio.png", "digit.visual.png",
                                            "digit-2.audio.png"]
    assert all(Path(p).stat().st_size > 100 for p in pngs)


def test_output_names_are_unique_even_by_case():
    checked = [Checked(Path(p), modality=m) for p, m in [
        ("x/Seven.png", "visual"), ("x/seven.png", "visual"), ("y/seven-x.png", "visual"),
        ("z/seven.wav", "audio"), ("x/seven.png", "visual")]]
    checked.insert(1, Checked(Path("bad/seven.png"), error="corrupt"))
    stems = output_names(checked, ["visual", "audio"])
    assert stems == {0: "Seven", 2: "seven-x", 3: "seven-x-y", 4: "seven", 5: "seven-2"}


def test_exit_codes():
    ok, bad = {"file": "a", "recalled": {}}, {"file": "b", "error": "corrupt"}
    assert (exit_code([ok, ok]), exit_code([ok, bad]), exit_code([bad, bad]), exit_code([])) == (0, 1, 2, 2)


def test_recall_files_reports_bad_files_without_touching_the_run(tmp_path):
    (tmp_path / "x.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    (result,) = recall_files(None, [tmp_path / "x.png"], tmp_path / "out")
    assert result == {"file": str(tmp_path / "x.png"), "modality": "visual",
                      "error": "corrupt image header (ValueError: PNG without IHDR chunk)"}
    assert not (tmp_path / "out").exists()


# ------------------------------------------------------------------------------------- transparency


@pytest.mark.parametrize("kind", ["rgba", "grey+alpha", "rgba16", "palette+tRNS", "rgba-tiff", "rgba-webp"])
def test_ink_on_a_transparent_background_is_a_drawing(tmp_path, kind):
    ink = _drawing()
    if kind == "palette+tRNS":
        ink = np.where(ink > 127, 255, 0).astype(np.uint8)  # two colours: ink, and transparent
    on_white = tmp_path / "white.png"
    cv2.imwrite(str(on_white), 255 - ink)
    path = tmp_path / {"rgba-tiff": "t.tif", "rgba-webp": "t.webp"}.get(kind, "t.png")
    black = np.zeros_like(ink)
    if kind in ("rgba", "rgba-tiff"):
        cv2.imwrite(str(path), np.dstack([black, black, black, ink]))
    elif kind == "rgba-webp":
        cv2.imwrite(str(path), np.dstack([black, black, black, ink]), [cv2.IMWRITE_WEBP_QUALITY, 101])
    elif kind == "rgba16":
        cv2.imwrite(str(path), np.dstack([black, black, black, ink]).astype(np.uint16) * 257)
    else:
        from PIL import Image

        if kind == "grey+alpha":
            Image.fromarray(np.dstack([black, ink]), "LA").save(path)
        else:
            Image.fromarray((ink > 0).astype(np.uint8), "P").save(path, transparency=0)
    assert image_header(path.read_bytes()).alpha
    x, ref = read_image_file(path), read_image_file(on_white)
    assert x.max() > 0.9  # not blank: the ink is there, bright on dark like MNIST
    np.testing.assert_allclose(x, ref, atol=1e-6)


def test_half_transparent_ink_is_grey_and_opaque_alpha_changes_nothing(tmp_path):
    ink = _drawing()
    black, opaque = np.zeros_like(ink), np.full_like(ink, 255)
    cv2.imwrite(str(tmp_path / "half.png"), np.dstack([black, black, black, ink // 2]))
    cv2.imwrite(str(tmp_path / "paper.png"), 255 - ink // 2)
    np.testing.assert_allclose(read_image_file(tmp_path / "half.png"), read_image_file(tmp_path / "paper.png"),
                               atol=0.01)
    cv2.imwrite(str(tmp_path / "opaque.png"), np.dstack([255 - ink] * 3 + [opaque]))
    cv2.imwrite(str(tmp_path / "plain.png"), 255 - ink)
    np.testing.assert_allclose(read_image_file(tmp_path / "opaque.png"), read_image_file(tmp_path / "plain.png"),
                               atol=1e-6)


# ------------------------------------------------------------------------------------- size limits


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def _huge_png(width: int, height: int) -> bytes:
    """A well-formed PNG whose IHDR claims width x height (grey, 8 bits); its pixels would be 0."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr)
            + _chunk(b"IDAT", zlib.compress(b"\x00" * 4096)) + _chunk(b"IEND", b""))


def _huge(fmt: str, width: int, height: int) -> bytes:
    if fmt == "png":
        return _huge_png(width, height)
    if fmt == "jpg":  # SOI, a JFIF APP0, then a baseline frame header
        app0 = b"\xff\xe0" + struct.pack(">H", 16) + b"JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00"
        sof = b"\xff\xc0" + struct.pack(">HBHHB", 11, 8, height, width, 1) + b"\x01\x11\x00"
        return b"\xff\xd8" + app0 + sof + b"\xff\xd9"
    if fmt == "bmp":
        info = struct.pack("<IiiHHIIiiII", 40, width, height, 1, 8, 0, 0, 2835, 2835, 0, 0)
        return b"BM" + struct.pack("<IHHI", 54 + 16, 0, 0, 54) + info + bytes(16)
    if fmt == "pgm":
        return f"P5\n# big\n{width} {height}\n255\n".encode() + bytes(16)
    if fmt == "tif":
        entries = [(256, 4, 1, width), (257, 4, 1, height), (258, 3, 1, 8), (262, 3, 1, 1)]
        ifd = struct.pack("<H", len(entries)) + b"".join(struct.pack("<HHII", *e) for e in entries) + bytes(4)
        return b"II*\x00" + struct.pack("<I", 8) + ifd
    if fmt == "webp":
        vp8x = b"VP8X" + struct.pack("<I", 10) + b"\x00\x00\x00\x00" + (width - 1).to_bytes(3, "little") \
            + (height - 1).to_bytes(3, "little")
        return b"RIFF" + struct.pack("<I", 4 + len(vp8x)) + b"WEBP" + vp8x
    raise ValueError(fmt)


@pytest.mark.parametrize("fmt", ["png", "jpg", "bmp", "pgm", "tif", "webp"])
def test_oversize_images_are_refused_from_the_header(tmp_path, monkeypatch, fmt):
    def no_decode(*_args, **_kwargs):
        raise AssertionError("pixels were decoded")

    monkeypatch.setattr(cv2, "imdecode", no_decode)
    monkeypatch.setattr(cv2, "imread", no_decode)
    path = tmp_path / f"huge.{fmt}"
    path.write_bytes(_huge(fmt, 20000, 20000))
    assert image_header(path.read_bytes())[1:3] == (20000, 20000)
    start = time.perf_counter()
    c = check_file(path)
    seconds = time.perf_counter() - start
    assert c.percepts is None and "20000x20000" in c.error and "MAX_IMAGE_PIXELS" in c.error, c.error
    assert f"{MAX_IMAGE_PIXELS / 1e6:g} million" in c.error
    assert seconds < 0.5


def test_an_image_just_within_the_limit_is_decoded(tmp_path, monkeypatch):
    monkeypatch.setattr("sensors.file_reading.MAX_IMAGE_PIXELS", 60 * 80)
    ink = _drawing()
    cv2.imwrite(str(tmp_path / "ok.png"), 255 - ink)
    assert read_image_file(tmp_path / "ok.png").max() > 0.9
    cv2.imwrite(str(tmp_path / "big.png"), 255 - cv2.resize(ink, (81, 60)))
    with pytest.raises(FeatureError, match="big.png: image is too large: 81x60"):
        read_image_file(tmp_path / "big.png")


def _wav_bytes(rate: int, data: np.ndarray) -> bytes:
    buf = io.BytesIO()
    wavfile.write(buf, rate, data)
    return buf.getvalue()


def test_long_or_odd_rate_audio_is_refused_from_the_header(tmp_path, monkeypatch):
    def no_decode(*_args, **_kwargs):
        raise AssertionError("samples were decoded")

    monkeypatch.setattr(wavfile, "read", no_decode)
    seconds = MAX_AUDIO_SECONDS + 10
    long = tmp_path / "long.wav"
    long.write_bytes(_wav_bytes(8000, np.full(int(8000 * seconds), 130, np.uint8)))
    c = check_file(long)
    assert c.percepts is None and "too long" in c.error and "MAX_AUDIO_SECONDS" in c.error, c.error
    slow = tmp_path / "slow.wav"
    slow.write_bytes(_wav_bytes(500, np.full(2000, 1000, np.int16)))
    assert "sample rate 500 Hz" in check_file(slow).error


def test_audio_within_the_limits_still_reads(tmp_path):
    t = np.arange(12000) / 48000.0
    path = tmp_path / "tone.wav"
    path.write_bytes(_wav_bytes(48000, (0.3 * np.sin(2 * np.pi * 440 * t) * 32767).astype(np.int16)))
    c = check_file(path)
    assert c.error is None and c.modality == "audio" and c.percepts[0].x.shape == (N_MELS, N_FRAMES)


# ------------------------------------------------------------------------------------- fuzz


def _valid_files() -> list[tuple[str, bytes]]:
    ink = np.zeros((10, 12), np.uint8)
    ink[2:8, 3:5] = 255
    ink[2:4, 3:10] = 200
    paper = 255 - ink
    files = [(".png", cv2.imencode(".png", paper)[1].tobytes()),
             (".png", cv2.imencode(".png", np.dstack([np.zeros_like(ink)] * 3 + [ink]))[1].tobytes()),
             (".jpg", cv2.imencode(".jpg", paper)[1].tobytes()),
             (".bmp", cv2.imencode(".bmp", paper)[1].tobytes()),
             (".pgm", cv2.imencode(".pgm", paper)[1].tobytes()),
             (".tif", cv2.imencode(".tif", paper)[1].tobytes()),
             (".webp", cv2.imencode(".webp", paper)[1].tobytes())]
    t = np.arange(400) / 8000.0
    tone = 0.5 * np.sin(2 * np.pi * 440 * t)
    files += [(".wav", _wav_bytes(8000, (tone * 32767).astype(np.int16))),
              (".wav", _wav_bytes(8000, tone.astype(np.float32))),
              (".wav", _wav_bytes(16000, np.round(np.stack([tone, tone], 1) * 127 + 128).astype(np.uint8))),
              (".wav", _wav_bytes(11025, (tone * 2**30).astype(np.int32)))]
    return files


VALID = _valid_files()
SUFFIXES = [".png", ".jpg", ".jpeg", ".bmp", ".pgm", ".tif", ".webp", ".wav", ".WAV", ".PNG", ".txt", ".gif", ""]


@st.composite
def damaged(draw) -> tuple[str, bytes]:
    suffix, data = draw(st.sampled_from(VALID))
    data = bytearray(data)
    for _ in range(draw(st.integers(0, 4))):
        op = draw(st.sampled_from(["flip", "flip", "set", "truncate", "insert", "delete"]))
        at = draw(st.integers(0, max(0, len(data) - 1)))
        if op == "flip" and data:
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif op == "set" and data:
            data[at] = draw(st.sampled_from([0x00, 0xFF, 0x7F, 0x80]))
        elif op == "truncate":
            del data[at:]
        elif op == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=16))
        elif op == "delete":
            del data[at:at + draw(st.integers(1, 16))]
    if draw(st.integers(0, 9)) == 0:
        suffix = draw(st.sampled_from(SUFFIXES))
    return suffix, bytes(data)


FILES = st.one_of(
    st.tuples(st.sampled_from(SUFFIXES), st.binary(max_size=600)),
    st.tuples(st.sampled_from(SUFFIXES), st.sampled_from([v for _, v in VALID]).map(lambda b: b[:24])
              .flatmap(lambda head: st.binary(max_size=300).map(lambda tail: head + tail))),
    damaged(),
)


def test_fuzz_every_file_gives_a_stimulus_or_a_clear_error():
    """2,000 random, truncated and damaged files: each is a valid stimulus or one clear line of error;
    no other exception escapes the per-file check, and none takes long."""
    seen: Counter[str] = Counter()
    slowest = [0.0]
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)

        @settings(max_examples=2000, deadline=None, derandomize=True, database=None,
                  suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
        @given(case=FILES)
        def one(case: tuple[str, bytes]) -> None:
            suffix, data = case
            path = folder / f"case{suffix}"
            path.write_bytes(data)
            start = time.perf_counter()
            c = check_file(path)  # anything but FeatureError/OSError would escape and fail here
            slowest[0] = max(slowest[0], time.perf_counter() - start)
            if c.error is not None:
                assert c.percepts is None and c.error.strip() and "\n" not in c.error
                seen["error"] += 1
            else:
                assert c.modality in ("visual", "audio")
                shape = (IMAGE_SIZE, IMAGE_SIZE) if c.modality == "visual" else (N_MELS, N_FRAMES)
                for x in (p.x for p in c.percepts):
                    assert x.shape == shape and x.dtype == np.float32
                    assert np.all(np.isfinite(x)) and 0.0 <= x.min() and x.max() <= 1.0
                seen[c.modality] += 1

        one()
    assert sum(seen.values()) >= 2000
    assert seen["error"] > 500 and seen["visual"] > 100 and seen["audio"] > 50, seen
    assert slowest[0] < 5.0, f"one file took {slowest[0]:.1f} s"
