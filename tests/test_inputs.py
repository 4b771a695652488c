"""Every input a user gives on the command line or leaves in a run folder: each defect
found in issue 11 has its test here (settings, --overwrite, damaged run folders)."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from agent.core.checkpoint import MARKER, RunFolder
from agent.core.config import Config, SettingsError, override
from agent.core.storage import RunError, load_arrays, save_arrays
from tools.cli import main
from replay.data.datasets import DataMissingError
from replay.pipeline import load_brain
from replay.driver import train

TINY = ["data.digits=[0,1]", 'data.speakers=["jackson"]', "data.per_class=40", "data.test_per_class=4",
        "teacher.epochs=2", "cortex.initial_nodes=10", "senses.audio.encoder.arch=linear", "senses.visual.encoder.epochs=1", "senses.visual.encoder.batch_size=16",
        "senses.audio.encoder.epochs=1", "refine.at=[]"]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, data_dir) -> RunFolder:
    """A small finished run (trained once for the module; tests work on copies)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CDZ_DATA_DIR", str(data_dir))
        return train(override(Config(), TINY), tmp_path_factory.mktemp("tiny") / "run", progress=False)


@pytest.fixture
def run_copy(tiny_run, tmp_path, data_dir, monkeypatch) -> RunFolder:
    monkeypatch.setenv("CDZ_DATA_DIR", str(data_dir))
    return RunFolder(shutil.copytree(tiny_run.path, tmp_path / "run", symlinks=True))


def _digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


# ---------------------------------------------------------------------- settings
@pytest.mark.parametrize("assignment, field", [
    ("cortex.node_lr=abc", "cortex.node_lr"),  # was saved as a string; training crashed after the encoders
    ("cdz.window_s=nan", "cdz.window_s"),  # was accepted: the CDZ never dropped old excitations
    ("cdz.window_s=inf", "cdz.window_s"),
    ("cortex.initial_nodes=2.5", "cortex.initial_nodes"),
    ("cortex.initial_nodes=true", "cortex.initial_nodes"),
    ("data.digits=7", "data.digits"),  # was a TypeError traceback
    ("data.digits=[42]", "data.digits[0]"),  # was refused only after the run folder existed
    ("data.per_class=0", "data.per_class"),
    ("refine.teach_lr=-1", "refine.teach_lr"),
    ("teacher.p_mismatch=1.5", "teacher.p_mismatch"),
    ("cdz.kernel=box", "cdz.kernel"),
    ("seed=-1", "seed"),
    ('data.speakers=[1, 2]', "data.speakers[0]"),
])
def test_a_bad_setting_is_one_line_naming_the_field_before_any_folder_is_made(tmp_path, capsys, assignment, field):
    with pytest.raises(SettingsError, match="^" + re.escape(field) + ":"):
        override(Config(), [assignment])
    out = tmp_path / "run"
    assert main(["train", "--quiet", "--out", str(out), "--set", assignment]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and field.split("[")[0] in err and "Traceback" not in err
    assert not out.exists()


def test_settings_across_fields_are_checked_too():
    with pytest.raises(SettingsError, match="initial_nodes"):
        override(Config(), ["cortex.initial_nodes=7000"])  # above max_nodes
    with pytest.raises(SettingsError, match="repeat"):
        override(Config(), ["data.digits=[1,1]"])
    with pytest.raises(SettingsError, match="lag_s"):
        override(Config(), ["teacher.lag_s=[1.0, 0.0]"])
    assert override(Config(), ["cdz.window_s=2", "cortex.node_lr=1"]).cdz.window_s == 2.0  # ints are numbers


@pytest.mark.parametrize("text", ["", "# nothing here\n", "\xff\xfe"])
def test_an_emptied_config_toml_is_a_run_error_not_the_defaults(run_copy, text):
    run_copy.config_path.write_bytes(text.encode("latin-1"))
    with pytest.raises(RunError, match="bad config .*config.toml"):
        run_copy.config()


def test_a_damaged_config_toml_is_a_run_error_naming_it(run_copy):
    run_copy.config_path.write_text(run_copy.config_path.read_text().replace("node_lr = 0.04", 'node_lr = "x"'))
    with pytest.raises(RunError, match="config.toml.*cortex.node_lr"):
        run_copy.config()


# ---------------------------------------------------------------------- --overwrite
def test_overwrite_refuses_a_folder_the_project_did_not_make(tmp_path, capsys):
    fake = tmp_path / "fake"
    fake.mkdir()
    (fake / "config.toml").write_text("")
    (fake / "notes.txt").write_text("mine")
    assert main(["train", "--quiet", "--out", str(fake), "--overwrite", "--set", "data.per_class=5"]) == 2
    assert "not made by cdz" in capsys.readouterr().err
    assert sorted(p.name for p in fake.iterdir()) == ["config.toml", "notes.txt"]


def test_overwrite_takes_an_unmarked_run_only_if_it_holds_nothing_but_a_run(run_copy):
    """Runs made before the marker existed are replaced; a folder with anything else in it is not."""
    (run_copy.path / MARKER).unlink()
    (run_copy.path / "notes.txt").write_text("mine")
    with pytest.raises(RunError, match="not made by cdz"):
        train(override(Config(), TINY), run_copy.path, progress=False, overwrite=True)
    (run_copy.path / "notes.txt").unlink()
    train(override(Config(), [*TINY, "seed=3"]), run_copy.path, progress=False, overwrite=True)
    assert run_copy.config().seed == 3 and (run_copy.path / MARKER).is_file()


def test_overwrite_keeps_the_old_run_when_the_new_one_cannot_start(run_copy, tmp_path, monkeypatch):
    (run_copy.path / "notes.txt").write_text("mine")
    before = _digest(run_copy.path)
    empty = tmp_path / "no-data"
    empty.mkdir()
    monkeypatch.setenv("CDZ_DATA_DIR", str(empty))
    monkeypatch.setenv("CDZ_NO_DOWNLOAD", "1")
    with pytest.raises(DataMissingError, match="(?i)data|mnist|fsdd"):
        train(override(Config(), TINY), run_copy.path, progress=False, overwrite=True)
    assert _digest(run_copy.path) == before  # every file back, byte for byte; nothing left aside
    assert not [p for p in run_copy.path.iterdir() if p.name.startswith(".replaced-")]


def test_a_run_slow_to_die_leaves_a_run_made_there_since_alone(tmp_path):
    """A run stopped while its encoders train dies only once they finish (minutes). If the user has
    meanwhile deleted its folder and started a new run there, the dying one's clean-up must not
    delete the new run's config and marker (seen: the new run then failed at its end)."""
    from agent.core.checkpoint import new_run

    out = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        with new_run(Config(), out, overwrite=False):
            shutil.rmtree(out)  # the user gives up on it ...
            RunFolder(out).create(Config(seed=7))  # ... and another process starts a run there
            raise KeyboardInterrupt  # the first one's stop arrives only now
    assert (out / MARKER).is_file() and RunFolder(out).config().seed == 7


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGKILL])
def test_an_overwrite_killed_midway_gives_the_old_run_back(run_copy, data_dir, signum):
    """SIGTERM: the old run is put back at once, as on Ctrl-C. SIGKILL leaves it aside; the next
    command that opens the run puts it back and the run reads whole."""
    (run_copy.path / "notes.txt").write_text("mine")
    before = _digest(run_copy.path)
    argv = [sys.executable, "-m", "tools.cli", "train", "--quiet", "--overwrite", "--out", str(run_copy.path)]
    for s in [*TINY, "senses.visual.encoder.epochs=2000"]:  # the new run's encoders train long enough to be killed
        argv += ["--set", s]
    proc = subprocess.Popen(argv, cwd=Path(__file__).resolve().parents[1], stderr=subprocess.PIPE,
                            env={**os.environ, "CDZ_DATA_DIR": str(data_dir)})
    try:
        deadline = time.monotonic() + 120
        def learning() -> bool:  # SIGTERM: the old run being set aside (the earliest moment it can be
            # hit); SIGKILL: set aside, and the new one begun (its encoders are training)
            aside = [p for p in run_copy.path.iterdir() if p.name.startswith(".replaced-")]
            return bool(aside) and (signum == signal.SIGTERM or (run_copy.path / "config.toml").exists())

        while not learning():
            assert time.monotonic() < deadline and proc.poll() is None, "the new run never started"
            time.sleep(0.05)
        proc.send_signal(signum)
        code = proc.wait(60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert code == (143 if signum == signal.SIGTERM else -signal.SIGKILL), proc.stderr.read().decode()[-2000:]
    if signum == signal.SIGKILL:
        assert _digest(run_copy.path) != before  # half-made: the next command must notice
        run_copy.config()
    assert _digest(run_copy.path) == before
    load_brain(run_copy)


def test_a_sigterm_while_the_old_run_is_moved_aside_puts_it_back(run_copy, monkeypatch):
    """The moment between the first and the last entry moved aside: SIGTERM must already be
    handled there (it was handled only from the new run's config on, so a SIGTERM in that
    window killed the process with the old run half aside)."""
    from agent.core import checkpoint

    before = _digest(run_copy.path)
    real_replace, moved = os.replace, []

    def replace_then_sigterm(src, dst):
        real_replace(src, dst)
        if not moved:  # a SIGTERM right after the first entry went aside, to whatever handles it now
            moved.append(src)
            handler = signal.getsignal(signal.SIGTERM)
            assert callable(handler), "SIGTERM is not handled while the old run is being moved aside"
            handler(signal.SIGTERM, None)

    assert _new_run_under_sigterm(run_copy, monkeypatch, checkpoint.os, "replace", replace_then_sigterm) == 143
    assert moved and _digest(run_copy.path) == before and not list(run_copy.path.glob(".replaced-*"))


def _new_run_under_sigterm(run_copy, monkeypatch, module, name: str, patched) -> int:
    """`new_run` over `run_copy` with `module.name` patched to send SIGTERM at its moment; the exit code."""
    from agent.core import checkpoint

    previous = signal.signal(signal.SIGTERM, signal.SIG_DFL)  # as in a plain `cdz train`
    try:
        monkeypatch.setattr(module, name, patched)
        with pytest.raises(SystemExit) as stopped:
            with checkpoint.new_run(override(Config(), TINY), run_copy.path, overwrite=True):
                pass
        monkeypatch.undo()
    finally:
        signal.signal(signal.SIGTERM, previous)
    return stopped.value.code


def test_a_sigterm_while_the_new_run_s_marker_is_written_puts_the_old_run_back(run_copy, monkeypatch):
    """The moment the new run names its owner but its marker is not yet on disk: the old run must
    still be put back (the owner was named before the marker was written, so the clean-up took the
    folder for another process's run and left the old one aside; a loaded full-suite run hit it)."""
    from agent.core import checkpoint

    (run_copy.path / "notes.txt").write_text("mine")
    before = _digest(run_copy.path)
    real_write = checkpoint.atomic_write_bytes

    def sigterm_then_write(path, data):
        if path.name == checkpoint.MARKER:
            signal.getsignal(signal.SIGTERM)(signal.SIGTERM, None)  # arrives just before the marker is written
        real_write(path, data)

    assert _new_run_under_sigterm(run_copy, monkeypatch, checkpoint, "atomic_write_bytes", sigterm_then_write) == 143
    assert _digest(run_copy.path) == before and not list(run_copy.path.glob(".replaced-*"))


def test_overwrite_replaces_only_what_the_project_wrote(run_copy):
    (run_copy.path / "notes.txt").write_text("mine")
    old_step = run_copy.load_checkpoint()[0]
    marker_checkpoint = run_copy.checkpoints_dir / "000000000001"
    shutil.copytree(run_copy.latest_checkpoint(), marker_checkpoint)  # an old file the new run will not write
    train(override(Config(), [*TINY, "seed=5"]), run_copy.path, progress=False, overwrite=True)
    assert (run_copy.path / "notes.txt").read_text() == "mine"
    assert (run_copy.path / MARKER).is_file()
    assert run_copy.config().seed == 5 and not marker_checkpoint.exists()
    assert run_copy.load_checkpoint()[0] == old_step
    assert not [p for p in run_copy.path.iterdir() if p.name.startswith(".replaced-")]


def test_a_stream_too_short_to_show_every_sense_is_one_line_and_leaves_nothing(tmp_path, capsys, data_dir,
                                                                              monkeypatch):
    monkeypatch.setenv("CDZ_DATA_DIR", str(data_dir))
    argv = ["train", "--quiet", "--out", str(tmp_path / "new")]
    for s in [*TINY, "teacher.epochs=0.002", "refine.at=[0.4]"]:  # was: "the cortex has no nodes yet", a half-made folder
        argv += ["--set", s]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "teacher.epochs" in err, err
    assert not (tmp_path / "new").exists()


def test_an_out_folder_that_cannot_be_made_says_why(tmp_path, capsys):
    """Was "No such file or directory" (the clean-up's own error hid the real one)."""
    (tmp_path / "a-file").write_text("")
    assert main(["train", "--quiet", "--out", str(tmp_path / "a-file" / "run"), "--set", "data.per_class=5"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"cdz train: error: cannot make the run folder {tmp_path / 'a-file' / 'run'}: Not a directory", err
    locked = tmp_path / "locked"
    locked.mkdir()
    if subprocess.run(["chattr", "+i", str(locked)], capture_output=True).returncode != 0:
        pytest.skip("chattr +i is not available here (the read-only case needs it: tests run as root)")
    try:
        assert main(["train", "--quiet", "--out", str(locked / "run"), "--set", "data.per_class=5"]) == 2
    finally:
        subprocess.run(["chattr", "-i", str(locked)])
    err = capsys.readouterr().err.strip()
    assert "cannot make the run folder" in err and "No such file" not in err, err


def test_a_run_that_fails_to_start_in_a_new_folder_leaves_nothing(tmp_path, monkeypatch):
    empty = tmp_path / "no-data"
    empty.mkdir()
    monkeypatch.setenv("CDZ_DATA_DIR", str(empty))
    monkeypatch.setenv("CDZ_NO_DOWNLOAD", "1")
    with pytest.raises(DataMissingError, match="(?i)mnist|fsdd"):
        train(override(Config(), TINY), tmp_path / "new", progress=False)
    assert not (tmp_path / "new").exists()  # so the same --out works next time, without --overwrite


# ---------------------------------------------------------------------- damaged run folders
def _damage_array(run: RunFolder, key: str, change) -> Path:
    path = run.latest_checkpoint() / "brain.npz"
    arrays = load_arrays(path)
    arrays[key] = change(arrays[key])
    save_arrays(path, arrays)
    return path


@pytest.mark.parametrize("key, change, says", [
    ("cortex.visual.link", lambda a: a[:, :-1], "cluster_id"),  # wrong shape: was an IndexError traceback
    ("cortex.audio.pos", lambda a: a[:, :3], "pos"),
    ("cdz.recent.modality", lambda a: np.full(max(len(a), 1), 7, np.int64), "recent"),  # index out of range
    ("cortex.visual.fb_keys", lambda a: np.concatenate([[[10**6, 0]], a[1:]]).astype(np.int64), "feedback node"),
    ("cortex.visual.node_id", lambda a: np.where(a >= 0, 3, a), "node ids repeat"),
    ("cortex.visual.pos", lambda a: np.full_like(a, np.nan), "NaN"),
    ("cdz.W.visual.audio", lambda a: a.astype(np.int64), "W.visual.audio"),
    ("rejected", lambda a: np.zeros(3), "rejected"),
    ("cortex.visual.link", np.zeros_like, "links to no cluster"),  # was recall 0.000 with exit 0
    ("cortex.audio.link", lambda a: -a, "negative"),
    ("cdz.W.visual.audio", lambda a: a - 1.0, "negative"),
])
def test_a_damaged_checkpoint_array_is_a_one_line_error_naming_the_checkpoint(run_copy, capsys, key, change, says):
    path = _damage_array(run_copy, key, change)
    with pytest.raises(RunError, match=f"damaged checkpoint {re.escape(str(path.parent))}: .*{says}"):
        load_brain(run_copy)
    assert main(["eval", "--quiet", "--no-baselines", "--no-judges", "--run", str(run_copy.path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("cdz eval: error: damaged checkpoint") and err.count("\n") == 0


def test_a_fifo_in_place_of_the_brain_is_refused_not_waited_on(run_copy, capsys):
    path = run_copy.latest_checkpoint() / "brain.npz"
    path.unlink()
    os.mkfifo(path)
    done = subprocess.run([sys.executable, "-m", "tools.cli", "eval", "--quiet", "--no-baselines", "--no-judges",
                           "--run", str(run_copy.path)], capture_output=True, text=True, timeout=60,
                          cwd=Path(__file__).resolve().parents[1])
    assert done.returncode == 2 and "not a regular file" in done.stderr, done.stderr[-1000:]


@pytest.mark.parametrize("content", [b"garbage" * 10, b"PK\x03\x04" + bytes(60)])
def test_a_damaged_encoder_is_one_line_without_torchs_advice(tmp_path, content):
    from agent.core.autoencoder import load_autoencoder

    path = tmp_path / "visual.pt"
    path.write_bytes(content)
    with pytest.raises(ValueError) as error:
        load_autoencoder(path)
    text = str(error.value)
    assert text.count("\n") == 0 and str(path) in text and "weights_only" not in text, text


def test_a_header_claiming_a_huge_array_is_refused_before_allocation(run_copy):
    import io
    import zipfile

    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": "<f8", "fortran_order": False, "shape": (10**12,)})
    path = run_copy.latest_checkpoint() / "brain.npz"
    with zipfile.ZipFile(path, "a") as z:  # np.savez's layout: one .npy entry per array
        z.writestr("huge.npy", buf.getvalue() + bytes(64))
    with pytest.raises(RunError, match="huge.npy.*claims"):
        load_arrays(path)


def test_a_missing_latest_falls_back_to_the_newest_complete_checkpoint(run_copy, caplog):
    step, state = run_copy.load_checkpoint()
    run_copy.save_checkpoint(step + 1, state)  # two complete checkpoints
    (run_copy.checkpoints_dir / "LATEST").unlink()
    assert run_copy.latest_checkpoint().name == f"{step + 1:012d}"
    assert "LATEST is missing or names no checkpoint" in caplog.text
    assert load_brain(run_copy).learned == step + 1
    assert caplog.text.count("LATEST is missing") == 1  # said once, however often the run is opened


def test_a_bad_state_changes_nothing_in_a_loaded_brain(run_copy):
    loaded = load_brain(run_copy)
    before = {k: v.copy() for k, v in loaded.brain.state_dict().items()}
    step, state = run_copy.load_checkpoint()
    state["cdz.recent.modality"] = np.full(max(len(state["cdz.recent.modality"]), 1), 9, np.int64)
    with pytest.raises(ValueError):
        loaded.brain.load_state_dict(state)  # the cortices come after the CDZ: all checked before any is loaded
    after = loaded.brain.state_dict()
    assert before.keys() == after.keys() and all(np.array_equal(before[k], after[k]) for k in before)
