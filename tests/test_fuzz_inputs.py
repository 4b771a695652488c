"""Fuzzing the inputs a user gives: `--set` values and every file of a run folder.

Each case must end in a clear error (a type the command line turns into one line,
exit 2) or be accepted whole; never a traceback, a hang, or a deleted file. Files to
`cdz recall` are fuzzed in tests/test_recall_inputs.py and messages to every
process in tests/test_processes.py. `CDZ_FUZZ_CASES` raises the count per surface
(default 2,000) for a benchmark-sized run.
"""

from __future__ import annotations

import math
import os
import shutil
import tomllib
from dataclasses import fields, is_dataclass
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.core.autoencoder import load_autoencoder
from agent.core.checkpoint import RunFolder
from agent.core.config import Config, SettingsError, load_toml, override, save_toml, to_dict
from agent.core.storage import RunError, load_arrays, save_arrays
from replay.pipeline import Encodings, load_brain
from replay.driver import train

CASES = int(os.environ.get("CDZ_FUZZ_CASES", "2000"))
ARRAY_CASES = max(CASES // 6, 50)  # whole files with swapped arrays: slower per case, a complement to the bytes
FUZZ = settings(max_examples=CASES, deadline=None, derandomize=True, database=None,
                suppress_health_check=list(HealthCheck))
# what `cdz` turns into one line and exit 2 (tools/cli.py); anything else is a traceback
CLEAR = (RunError, SettingsError, ValueError, KeyError, FileNotFoundError, OSError)
TINY = ["data.digits=[0,1]", 'data.speakers=["jackson"]', "data.per_class=40", "data.test_per_class=4",
        "teacher.epochs=2", "cortex.initial_nodes=10", "senses.audio.encoder.arch=linear", "senses.visual.encoder.epochs=1", "senses.visual.encoder.batch_size=16",
        "refine.at=[]"]


def _leaf_fields(obj, prefix: str = "") -> list[str]:
    out = []
    for f in fields(obj):
        value = getattr(obj, f.name)
        out += _leaf_fields(value, f"{prefix}{f.name}.") if is_dataclass(value) else [f"{prefix}{f.name}"]
    return out


FIELDS = _leaf_fields(Config())


def _toml(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return {math.inf: "inf", -math.inf: "-inf"}.get(v, "nan" if v != v else repr(v))
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(v, list):
        return "[" + ", ".join(_toml(x) for x in v) + "]"
    return repr(v)


SCALARS = st.one_of(st.integers(-2**70, 2**70), st.floats(allow_nan=True, allow_infinity=True), st.booleans(),
                    st.text(max_size=12), st.sampled_from(["conv", "linear", "gaussian", "new", "stimuli", "theo"]))
VALUES = st.one_of(SCALARS.map(_toml), st.lists(SCALARS, max_size=4).map(_toml), st.text(max_size=20),
                   st.sampled_from(["", "[", "{a=1}", "0x10", "1e400", "[0,1,2]", "[]", "[1.5, -2]"]))
KEYS = st.one_of(st.sampled_from(FIELDS), st.sampled_from(FIELDS).map(lambda k: k.upper()), st.text(max_size=16))


@FUZZ
@given(key=KEYS, value=VALUES)
def test_fuzzed_settings_are_accepted_whole_or_refused_clearly(key, value, tmp_path_factory):
    try:
        config = override(Config(), [f"{key}={value}"])
    except (SettingsError, KeyError) as e:
        assert str(e) and "\n" not in str(e)
        return
    for path in FIELDS:  # every accepted value is of its field's type and finite
        v = config
        for part in path.split("."):
            v = getattr(v, part)
        for x in (v if isinstance(v, tuple) else (v,)):
            assert not isinstance(x, float) or math.isfinite(x), (path, x)
    toml = tmp_path_factory.getbasetemp() / "fuzz-config.toml"
    save_toml(config, toml)  # what was accepted is saved and read back the same
    assert load_toml(toml) == config and tomllib.loads(toml.read_text()) is not None
    assert to_dict(config).keys() == to_dict(Config()).keys()


# ---------------------------------------------------------------------- run folders
@pytest.fixture(scope="module")
def fuzz_run(tmp_path_factory, data_dir) -> RunFolder:
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CDZ_DATA_DIR", str(data_dir))
        run = train(override(Config(), TINY), tmp_path_factory.mktemp("fuzz") / "run", progress=False)
    return RunFolder(shutil.copytree(run.path, tmp_path_factory.mktemp("fuzz-copy") / "run"))


def _open(run: RunFolder, damaged: Path) -> None:
    """What a command reads of the damaged file's kind (the same calls `cdz eval` / `cdz live` make)."""
    name = damaged.name
    if name == "config.toml":
        run.config()
    elif name.endswith(".pt"):
        load_autoencoder(damaged)
    elif name == "encodings.npz":
        Encodings.load(run, run.config().modalities)
    elif name == "metrics.json":
        run.metrics()
    elif name == "stream.npz":
        load_arrays(damaged)
    else:  # the checkpoint, LATEST, the marker, log.txt
        load_brain(run)


def _files(run: RunFolder) -> list[Path]:
    return sorted(p for p in run.path.rglob("*") if p.is_file() and p.name != "log.txt")


@st.composite
def damage(draw, size: int) -> list[tuple[str, int, bytes]]:
    """Byte-level edits: overwrite bytes, truncate, append, or replace the whole file."""
    how = draw(st.sampled_from(["flip", "truncate", "append", "replace", "empty"]))
    if how == "flip":
        return [("flip", draw(st.integers(0, max(size - 1, 0))), draw(st.binary(min_size=1, max_size=8)))
                for _ in range(draw(st.integers(1, 4)))]
    if how == "truncate":
        return [("truncate", draw(st.integers(0, max(size - 1, 0))), b"")]
    if how == "append":
        return [("append", 0, draw(st.binary(min_size=1, max_size=64)))]
    if how == "replace":
        return [("replace", 0, draw(st.binary(max_size=256)))]
    return [("replace", 0, b"")]


def _apply(data: bytes, edits: list[tuple[str, int, bytes]]) -> bytes:
    out = bytearray(data)
    for how, at, payload in edits:
        if how == "flip":
            out[at:at + len(payload)] = payload
        elif how == "truncate":
            del out[at:]
        elif how == "append":
            out += payload
        else:
            out = bytearray(payload)
    return bytes(out)


def test_fuzzed_run_folder_bytes_end_in_a_clear_error(fuzz_run):
    files = _files(fuzz_run)
    originals = {p: p.read_bytes() for p in files}
    outcomes = {"clear error": 0, "still readable": 0}

    @FUZZ
    @given(st.data())
    def case(data):
        path = data.draw(st.sampled_from(files))
        edits = data.draw(damage(len(originals[path])))
        path.write_bytes(_apply(originals[path], edits))
        try:
            _open(fuzz_run, path)
            outcomes["still readable"] += 1
        except CLEAR:
            outcomes["clear error"] += 1
        finally:
            path.write_bytes(originals[path])

    case()
    print(f"run-folder byte damage over {len(files)} files: {outcomes}")
    assert outcomes["clear error"] > CASES // 2
    assert {p: p.read_bytes() for p in _files(fuzz_run)} == originals  # loading never deletes or rewrites


ARRAYS = st.one_of(
    st.tuples(st.sampled_from([np.float32, np.float64, np.int64, np.int32, np.bool_, np.uint8]),
              st.lists(st.integers(0, 5), max_size=3)).map(lambda t: np.zeros(t[1], t[0])),
    st.lists(st.integers(-3, 2**40), max_size=6).map(lambda v: np.array(v, np.int64)),
    st.lists(st.floats(allow_nan=True, allow_infinity=True), max_size=6).map(lambda v: np.array(v, np.float64)),
)


def test_fuzzed_checkpoint_arrays_end_in_a_clear_error(fuzz_run):
    """Whole, readable files whose arrays were swapped for others of any shape, dtype or value:
    what the semantic checks (agent.core.state_check) are for."""
    path = fuzz_run.latest_checkpoint() / "brain.npz"
    original = path.read_bytes()
    arrays = load_arrays(path)
    keys = sorted(arrays)
    outcomes = {"clear error": 0, "still loads": 0}

    @settings(FUZZ, max_examples=ARRAY_CASES)
    @given(st.data())
    def case(data):
        changed = dict(arrays)
        for key in data.draw(st.lists(st.sampled_from(keys), min_size=1, max_size=3, unique=True)):
            how = data.draw(st.sampled_from(["swap", "drop", "shift", "slice"]))
            a = arrays[key]
            if how == "swap":
                changed[key] = data.draw(ARRAYS)
            elif how == "drop":
                del changed[key]
            elif how == "shift" and a.dtype.kind in "iu":
                changed[key] = a + data.draw(st.sampled_from([-2, 1, 10**6, 2**40]))
            elif a.ndim and len(a):
                changed[key] = a[: data.draw(st.integers(0, len(a) - 1))]
        save_arrays(path, changed)
        try:
            load_brain(fuzz_run)
            outcomes["still loads"] += 1
        except CLEAR:
            outcomes["clear error"] += 1
        finally:
            path.write_bytes(original)

    case()
    print(f"checkpoint array damage: {outcomes}")
    assert outcomes["clear error"] > ARRAY_CASES // 2
