"""agent.core.checkpoint: run folders, atomic checkpoints, arrays loaded without pickle."""

from __future__ import annotations

import time

import numpy as np
import pytest

from agent.core.brain import Brain
from agent.core.checkpoint import RunError, RunFolder, atomic_write_bytes, load_arrays, save_arrays
from agent.core.config import Config, CortexSettings, override


def arrays(k: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(k)
    return {"pos": rng.normal(size=(5, 3)).astype(np.float32), "ids": np.arange(5, dtype=np.int64) + k,
            "scalar": np.array(1.5 * k), "empty": np.zeros((0, 4), np.float32)}


def assert_arrays_equal(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert a[key].dtype == b[key].dtype and a[key].shape == b[key].shape, key
        assert np.array_equal(a[key], b[key]), key


# --------------------------------------------------------------------------- arrays
def test_save_and_load_arrays_round_trip(tmp_path):
    path = tmp_path / "sub" / "a.npz"
    save_arrays(path, arrays(3))
    assert_arrays_equal(load_arrays(path), arrays(3))
    assert [p.name for p in path.parent.iterdir()] == ["a.npz"]  # no temp file left behind


def test_load_arrays_never_unpickles(tmp_path):
    path = tmp_path / "evil.npz"
    np.savez(path, ok=np.arange(3), obj=np.array([{"x": 1}, None], dtype=object))
    with pytest.raises(RunError, match="evil.npz"):
        load_arrays(path)


def test_load_arrays_refuses_a_pickle_file(tmp_path):
    path = tmp_path / "pickled.npz"
    with open(path, "wb") as f:  # an .npy of dtype object: its payload would be a pickle
        np.lib.format.write_array_header_1_0(f, {"descr": "|O", "fortran_order": False, "shape": (2,)})
        f.write(b"\x80\x04payload-that-must-never-be-unpickled.")
    with pytest.raises(RunError, match="pickled.npz"):
        load_arrays(path)


def test_missing_and_garbage_files_are_run_errors_with_the_path(tmp_path):
    with pytest.raises(RunError, match="nothing.npz"):
        load_arrays(tmp_path / "nothing.npz")
    bad = tmp_path / "garbage.npz"
    bad.write_bytes(b"not an npz at all" * 10)
    with pytest.raises(RunError, match="garbage.npz"):
        load_arrays(bad)


def test_atomic_write_bytes_replaces_whole_file(tmp_path):
    path = tmp_path / "d" / "m.json"
    atomic_write_bytes(path, b"first version, long")
    atomic_write_bytes(path, b"second")
    assert path.read_bytes() == b"second"
    assert [p.name for p in path.parent.iterdir()] == ["m.json"]


# --------------------------------------------------------------------------- run folder
def test_run_folder_config_round_trip(tmp_path):
    cfg = override(Config(), ["cortex.initial_nodes=12", "cdz.kernel=gaussian"])
    run = RunFolder(tmp_path / "run")
    run.create(cfg)
    assert RunFolder(str(tmp_path / "run")).config() == cfg


def test_missing_folder_or_config_is_a_run_error(tmp_path):
    with pytest.raises(RunError, match="no run folder"):
        RunFolder(tmp_path / "nope").config()
    (tmp_path / "empty").mkdir()
    with pytest.raises(RunError, match="config.toml"):
        RunFolder(tmp_path / "empty").config()
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "config.toml").write_text("[cortex]\nno_such_knob = 1\n")
    with pytest.raises(RunError, match="no_such_knob"):
        RunFolder(bad).config()


def test_metrics_update_merges(tmp_path):
    run = RunFolder(tmp_path)
    assert run.metrics() == {}
    run.update_metrics(a=1, b=[1, 2])
    run.update_metrics(b=3)
    assert run.metrics() == {"a": 1, "b": 3}
    run.metrics_path.write_text("{broken")
    with pytest.raises(RunError, match="metrics"):
        run.metrics()


# --------------------------------------------------------------------------- checkpoints
def test_no_checkpoint_yet_is_a_run_error(tmp_path):
    run = RunFolder(tmp_path)
    assert run.latest_checkpoint() is None
    with pytest.raises(RunError, match="no checkpoint"):
        run.load_checkpoint()


def test_checkpoint_round_trip(tmp_path):
    run = RunFolder(tmp_path)
    folder = run.save_checkpoint(1234, arrays(1))
    assert folder.is_dir() and (folder / "brain.npz").exists()
    step, got = run.load_checkpoint()
    assert step == 1234
    assert_arrays_equal(got, arrays(1))


def test_latest_points_to_the_newest_and_old_ones_are_dropped(tmp_path):
    run = RunFolder(tmp_path)
    for k, step in enumerate((10, 200, 3000, 40000)):
        run.save_checkpoint(step, arrays(k), keep=2)
        assert run.load_checkpoint()[0] == step
        assert_arrays_equal(run.load_checkpoint()[1], arrays(k))
    assert run.latest_checkpoint() == run.checkpoints_dir / f"{40000:012d}"
    kept = sorted(p.name for p in run.checkpoints_dir.iterdir() if p.is_dir())
    assert kept == [f"{3000:012d}", f"{40000:012d}"]
    assert (run.checkpoints_dir / "LATEST").read_text().strip() == f"{40000:012d}"


def test_leftover_half_written_temp_folder_does_not_break_loading(tmp_path):
    run = RunFolder(tmp_path)
    run.save_checkpoint(100, arrays(1))
    # a crash while writing step 200: a temp folder with a truncated file, LATEST untouched
    tmp = run.checkpoints_dir / f".tmp-{200:012d}-99999"
    tmp.mkdir()
    good = (run.latest_checkpoint() / "brain.npz").read_bytes()
    (tmp / "brain.npz").write_bytes(good[: len(good) // 2])
    (run.checkpoints_dir / ".LATEST.abcd").write_bytes(b"0000000")  # a temp LATEST that never got renamed
    step, got = run.load_checkpoint()
    assert step == 100
    assert_arrays_equal(got, arrays(1))
    # and saving goes on past the debris
    run.save_checkpoint(300, arrays(3), keep=1)
    step, got = run.load_checkpoint()
    assert step == 300
    assert_arrays_equal(got, arrays(3))


def test_saving_the_same_step_again_replaces_it(tmp_path):
    run = RunFolder(tmp_path)
    run.save_checkpoint(5, arrays(1))
    run.save_checkpoint(5, arrays(2))
    step, got = run.load_checkpoint()
    assert step == 5
    assert_arrays_equal(got, arrays(2))


@pytest.mark.parametrize("damage", ["truncate", "garbage", "flip"])
def test_corrupt_brain_npz_is_a_run_error_naming_the_file(tmp_path, damage):
    run = RunFolder(tmp_path)
    folder = run.save_checkpoint(7, {"big": np.arange(4096, dtype=np.float64)})
    path = folder / "brain.npz"
    data = bytearray(path.read_bytes())
    if damage == "truncate":
        data = data[: len(data) // 3]
    elif damage == "garbage":
        data = bytearray(b"\x00garbage" * 100)
    else:  # flip bytes inside the stored array: the zip CRC must catch it
        mid = len(data) // 2
        data[mid: mid + 16] = bytes(255 - b for b in data[mid: mid + 16])
    path.write_bytes(bytes(data))
    with pytest.raises(RunError) as err:
        run.load_checkpoint()
    assert str(path) in str(err.value)


def test_brain_survives_a_checkpoint(tmp_path):
    cfg = Config(cortex=CortexSettings(initial_nodes=5))
    dims, epochs = {"visual": 4, "audio": 4}, {"visual": 50, "audio": 50}
    rng = np.random.default_rng(0)
    brain = Brain(cfg, dims, epochs)
    for i in range(60):
        brain.learn("visual" if i % 2 else "audio", rng.normal(size=4), 0.5 * i)
    run = RunFolder(tmp_path)
    run.save_checkpoint(60, brain.state_dict())
    step, state = run.load_checkpoint()
    back = Brain(cfg, dims, epochs)
    back.load_state_dict(state)
    assert step == 60
    ref = brain.state_dict()
    assert ref.keys() == back.state_dict().keys()
    for k, v in back.state_dict().items():
        assert np.array_equal(v, ref[k]), k
    z = rng.normal(size=4)
    assert back.learn("audio", z, 100.0) == brain.learn("audio", z, 100.0)


def test_load_arrays_reads_only_the_parts_asked_for(tmp_path):
    path = tmp_path / "a.npz"
    save_arrays(path, {"cortex.visual.pos": np.ones(3), "experience.audio.x": np.zeros((2, 4)), "refinements": np.array(1)})
    assert set(load_arrays(path, only=("cortex.visual.", "refinements"))) == {"cortex.visual.pos", "refinements"}
    assert set(load_arrays(path)) == {"cortex.visual.pos", "experience.audio.x", "refinements"}


def test_a_part_written_in_the_background_is_saved_once_on_disk_and_a_failure_is_no_save(tmp_path, thread_bus):
    """`Service.write_part`: the process goes on while its part is written; `saved` goes out only
    once the file is complete, and a part that could not be written is reported, never claimed."""
    from agent.runtime.bus import BusClient
    from agent.runtime.service import Service
    from agent.core.messages import Control

    run = RunFolder(tmp_path / "run")
    run.create(Config())
    listener = BusClient(thread_bus, "listener", [b"control"])
    service = Service(BusClient(thread_bus, "worker-visual"))
    try:
        listener.handshake(timeout_s=10)
        service.bus.handshake(timeout_s=10)
        big = {"cortex.visual.x": np.random.default_rng(0).random((2000, 64, 64), dtype=np.float32)}
        service.write_part(run, 7, "cortex.visual", big)
        assert service.writing is not None  # returned before the file is written
        service.finish_writing()
        assert (run.checkpoints_dir / "000000000007" / "cortex.visual.npz").exists()
        np.testing.assert_array_equal(load_arrays(run.checkpoints_dir / "000000000007" / "cortex.visual.npz")[
            "cortex.visual.x"], big["cortex.visual.x"])
        (run.checkpoints_dir / "000000000008").write_text("a file where the step's folder should be")
        service.write_part(run, 8, "cortex.visual", {"cortex.visual.x": np.ones(2)})
        service.finish_writing()
        said = []
        deadline = time.monotonic() + 2
        while time.monotonic() < deadline:
            msg = listener.recv(100)
            if isinstance(msg, Control) and msg.command == "saved":
                said.append((msg.args["step"], msg.args["part"]))
        assert said == [(7, "cortex.visual")]
    finally:
        service.bus.close()
        listener.close()
