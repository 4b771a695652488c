"""replay.data.datasets: real files, verified, filtered, cached; clear errors otherwise."""

from __future__ import annotations

import gzip
import os
import shutil
import urllib.error
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from replay.data import datasets as ds
from sensors.file_reading import read_audio_file
from sensors.image_features import image_to_stimulus


@pytest.fixture
def offline(monkeypatch, tmp_path, data_dir) -> Path:
    """Point the loader at the shared data, a fresh cache folder and no network."""
    cache = tmp_path / "xdg"
    monkeypatch.setenv("CDZ_DATA_DIR", str(data_dir))
    monkeypatch.setenv("XDG_CACHE_HOME", str(cache))
    monkeypatch.setenv("CDZ_NO_DOWNLOAD", "1")
    return cache / "cdz-agent"


@pytest.fixture
def nowhere(monkeypatch, tmp_path) -> Path:
    """A data dir and cache that hold nothing, with downloading disabled."""
    missing = tmp_path / "no-such-data"
    monkeypatch.setenv("CDZ_DATA_DIR", str(missing))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("CDZ_NO_DOWNLOAD", "1")
    return missing


# --------------------------------------------------------------------------- places


def test_data_dirs_env_first_then_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("CDZ_DATA_DIR", str(tmp_path / "d"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "c"))
    assert ds.data_dirs() == [tmp_path / "d", tmp_path / "c" / "cdz-agent"]
    monkeypatch.delenv("CDZ_DATA_DIR")
    assert ds.data_dirs() == [tmp_path / "c" / "cdz-agent"]


# --------------------------------------------------------------------------- MNIST


@pytest.mark.parametrize("split,size", [("train", 60000), ("test", 10000)])
def test_mnist_full_splits(offline, split, size):
    s = ds.load_mnist(split, download=False)
    assert s.modality == "visual"
    assert s.x.shape == (size, 28, 28) and s.x.dtype == np.float32
    assert s.y.shape == (size,) and s.y.dtype == np.int64
    assert float(s.x.min()) == 0.0 and float(s.x.max()) == 1.0
    assert sorted(set(s.y.tolist())) == list(range(10))
    assert len(s.names) == size and s.names[7] == f"mnist/{split}/7"
    assert s.speakers is None


def test_mnist_known_first_labels(offline):
    # the first training labels of MNIST are well known; catches byte-order/offset slips
    assert ds.load_mnist("train", per_class=None).y[:8].tolist() == [5, 0, 4, 1, 9, 2, 1, 3]


def test_mnist_equals_image_to_stimulus(offline, data_dir):
    raw = ds.read_idx(data_dir / "mnist" / "t10k-images-idx3-ubyte.gz", ds.IDX_IMAGES_MAGIC, (28, 28))
    s = ds.load_mnist("test")
    for i in (0, 1, 4321, 9999):
        np.testing.assert_array_equal(s.x[i], image_to_stimulus(raw[i]))


def test_mnist_digits_and_per_class(offline):
    full = ds.load_mnist("test")
    s = ds.load_mnist("test", digits=[7, 2], per_class=3)
    assert Counter(s.y.tolist()) == {2: 3, 7: 3}
    expected = sorted(np.flatnonzero(full.y == 2)[:3].tolist() + np.flatnonzero(full.y == 7)[:3].tolist())
    assert s.names == tuple(f"mnist/test/{i}" for i in expected)
    np.testing.assert_array_equal(s.x, full.x[expected])


@pytest.mark.parametrize("kw", [{"split": "val"}, {"split": "train", "digits": [10]},
                                {"split": "train", "digits": []}, {"split": "train", "per_class": 0}])
def test_mnist_bad_arguments(offline, kw):
    with pytest.raises(ValueError) as err:
        ds.load_mnist(**kw)
    if kw["split"] == "val":
        assert "train" in str(err.value) and "test" in str(err.value)


def test_mnist_missing_names_path_and_env(nowhere):
    with pytest.raises(ds.DataMissingError) as err:
        ds.load_mnist("test")
    msg = str(err.value)
    assert str(nowhere / "mnist") in msg and "CDZ_DATA_DIR" in msg
    assert "t10k-images-idx3-ubyte.gz" in msg


def test_download_false_is_respected(monkeypatch, tmp_path):
    monkeypatch.delenv("CDZ_NO_DOWNLOAD", raising=False)
    monkeypatch.setenv("CDZ_DATA_DIR", str(tmp_path / "none"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setattr(ds.urllib.request, "urlopen", _no_network)
    with pytest.raises(ds.DataMissingError, match="download=False"):
        ds.load_mnist("test", download=False)


def _no_network(*args, **kwargs):
    raise urllib.error.URLError("network is unreachable (test)")


def test_failed_download_is_data_missing(monkeypatch, tmp_path, capsys):
    monkeypatch.delenv("CDZ_NO_DOWNLOAD", raising=False)
    monkeypatch.setenv("CDZ_DATA_DIR", str(tmp_path / "none"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setattr(ds.urllib.request, "urlopen", _no_network)
    with pytest.raises(ds.DataMissingError) as err:
        ds.load_mnist("test")
    assert "unreachable" in str(err.value) and "CDZ_DATA_DIR" in str(err.value)
    said = capsys.readouterr().err  # before any byte was asked for, the user was told where from and why
    assert "downloading it from https://" in said and "CDZ_NO_DOWNLOAD" in said and str(tmp_path / "none") in said
    assert not list((tmp_path / "xdg").rglob("*.gz")), "no partial download may be left"


def _copy_mnist(data_dir: Path, dest: Path) -> Path:
    (dest / "mnist").mkdir(parents=True)
    for name in ds.MNIST_FILES["test"]:
        shutil.copy(data_dir / "mnist" / name, dest / "mnist" / name)
    return dest / "mnist"


def test_mnist_corrupt_gz(monkeypatch, tmp_path, data_dir):
    folder = _copy_mnist(data_dir, tmp_path / "data")
    target = folder / "t10k-labels-idx1-ubyte.gz"
    raw = bytearray(target.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    target.write_bytes(bytes(raw))
    monkeypatch.setenv("CDZ_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("CDZ_NO_DOWNLOAD", "1")
    with pytest.raises(ds.DataCorruptError) as err:
        ds.load_mnist("test")
    assert str(target.resolve()) in str(err.value) or str(target) in str(err.value)


@pytest.mark.parametrize("header,match", [
    ((0x00000802).to_bytes(4, "big") + (3).to_bytes(4, "big"), "magic"),
    ((0x00000801).to_bytes(4, "big") + (5).to_bytes(4, "big"), "bytes"),
    (b"\x00\x00", "truncated"),
])
def test_read_idx_rejects_bad_files(tmp_path, header, match):
    path = tmp_path / "bad-idx1.gz"
    with gzip.open(path, "wb") as fh:
        fh.write(header + bytes([1, 2, 3]))
    with pytest.raises(ds.DataCorruptError, match=match) as err:
        ds.read_idx(path, ds.IDX_LABELS_MAGIC, ())
    assert str(path) in str(err.value)


def test_read_idx_rejects_non_gzip(tmp_path):
    path = tmp_path / "plain.gz"
    path.write_bytes(b"this is not gzip")
    with pytest.raises(ds.DataCorruptError, match="gzip"):
        ds.read_idx(path, ds.IDX_LABELS_MAGIC, ())


# --------------------------------------------------------------------------- FSDD


def test_fsdd_file_lists(offline):
    train = ds.list_fsdd_files("train", download=False)
    test = ds.list_fsdd_files("test", download=False)
    assert (len(train), len(test)) == (2700, 300)
    assert not {p.name for p in train} & {p.name for p in test}
    assert {int(p.stem.split("_")[2]) for p in test} == set(range(5))
    assert {int(p.stem.split("_")[2]) for p in train} == set(range(5, 50))
    assert Counter(p.stem.split("_")[1] for p in train) == {s: 450 for s in ds.FSDD_SPEAKERS}
    assert all(p.is_file() for p in train + test)


def test_fsdd_speaker_filters(offline):
    only = ds.list_fsdd_files("test", speakers=["theo"])
    assert len(only) == 50 and all("_theo_" in p.name for p in only)
    rest = ds.list_fsdd_files("test", exclude_speakers=["theo"])
    assert len(rest) == 250 and not any("_theo_" in p.name for p in rest)
    with pytest.raises(ValueError, match="george"):
        ds.list_fsdd_files("test", speakers=["nobody"])


def test_load_fsdd_subset(offline):
    s = ds.load_fsdd("test", digits=[3, 8], per_class=6)
    assert s.modality == "audio"
    assert s.x.shape == (12, 64, 64) and s.x.dtype == np.float32
    assert 0.0 <= float(s.x.min()) and float(s.x.max()) <= 1.0 and float(s.x.max()) == 1.0
    assert Counter(s.y.tolist()) == {3: 6, 8: 6}
    # per_class draws across speakers (order: digit, index, speaker)
    assert set(s.speakers.tolist()) == set(ds.FSDD_SPEAKERS)
    for name, label, speaker in zip(s.names, s.y, s.speakers):
        d, spk, _ = name.split("_")
        assert int(d) == label and spk == speaker
    first_three = ds.list_fsdd_files("test", digits=[3], per_class=1)[0]
    assert s.names[0] == first_three.stem
    np.testing.assert_array_equal(s.x[0], read_audio_file(first_three))


def test_load_fsdd_speaker_held_out(offline):
    s = ds.load_fsdd("train", digits=[1], per_class=4, exclude_speakers=["george", "lucas"])
    assert len(s) == 4 and not ({"george", "lucas"} & set(s.speakers.tolist()))


def test_fsdd_feature_cache(offline):
    first = ds.load_fsdd("test", digits=[5], per_class=3)
    cached = list((offline / "features").glob("fsdd-*.npy"))
    assert len(cached) == 1
    again = ds.load_fsdd("test", digits=[5], per_class=3)
    np.testing.assert_array_equal(first.x, again.x)
    cached[0].write_bytes(b"garbage")  # unreadable cache -> recomputed, rewritten
    third = ds.load_fsdd("test", digits=[5], per_class=3)
    np.testing.assert_array_equal(first.x, third.x)
    assert np.load(cached[0], allow_pickle=False).shape == (3, 64, 64)
    assert not list((offline / "features").glob(".*")), "no temporary files left behind"


def test_fsdd_missing(nowhere):
    with pytest.raises(ds.DataMissingError) as err:
        ds.load_fsdd("test")
    msg = str(err.value)
    assert str(nowhere / "fsdd") in msg and "CDZ_DATA_DIR" in msg and "0_george_0.wav" in msg


def test_fsdd_corrupt_recording(monkeypatch, tmp_path, data_dir):
    folder = tmp_path / "data" / "fsdd"
    folder.mkdir(parents=True)
    for name in ds.fsdd_all_names():
        os.symlink(data_dir / "fsdd" / name, folder / name)
    victim = folder / "4_theo_17.wav"
    raw = bytearray(victim.read_bytes())
    victim.unlink()
    raw[-10] ^= 0x55
    victim.write_bytes(bytes(raw))
    monkeypatch.setenv("CDZ_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("CDZ_NO_DOWNLOAD", "1")
    with pytest.raises(ds.DataCorruptError, match="FSDD") as err:
        ds.list_fsdd_files("train")
    assert str(folder.resolve()) in str(err.value)


# --------------------------------------------------------------------------- any


def test_each_sense_reads_its_data_through_its_declaration(offline):
    from agent.core.config import Config
    from replay.data.senses import sense

    config = Config(data=Config().data.__class__(digits=(0,), test_per_class=2))
    v, a = sense("visual").load(config, "test"), sense("audio").load(config, "test")
    assert (v.modality, v.x.shape) == ("visual", (2, 28, 28))
    assert (a.modality, a.x.shape) == ("audio", (2, 64, 64))
    with pytest.raises(KeyError, match="visual"):
        sense("smell")
