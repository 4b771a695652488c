"""A PulseAudio null sink whose monitor is a microphone that tests can talk into.

`pulse_sink` (session-scoped) starts a private PulseAudio daemon with only a unix socket
and a null sink `cdz_null`, whose monitor source `cdz_null.monitor` becomes the default
source; it points this process and its children at it (PULSE_SERVER, PULSE_SOURCE,
PULSE_SINK) and reinitialises PortAudio, which then lists the ALSA device "pulse"
(from libasound2-plugins). Whatever `play_wav_into_sink` plays comes back through
PortAudio as if spoken into a microphone. Real audio hardware and the user's own sound
server are never touched. If PULSE_SERVER already names a running server, that one is
used instead (the null sink is loaded there and unloaded afterwards).

The private daemon is started as (the same as a CI job would do by hand)

    mkdir -m 700 $TMP/runtime
    HOME=$TMP XDG_RUNTIME_DIR=$TMP/runtime XDG_CONFIG_HOME=$TMP/config \\
    pulseaudio -n --daemonize=no --exit-idle-time=-1 --disable-shm=yes --use-pid-file=no \\
        --log-target=file:$TMP/pulse.log \\
        --load="module-native-protocol-unix socket=$TMP/native auth-anonymous=1" \\
        --load="module-null-sink sink_name=cdz_null"
    export PULSE_SERVER=unix:$TMP/native PULSE_SOURCE=cdz_null.monitor PULSE_SINK=cdz_null

(-n: no default.pa, so no hardware, D-Bus or suspend-on-idle modules; it runs as root too,
with a warning.) Missing packages or a daemon that will not start skip the tests, or fail
them when CDZ_REQUIRE_PULSE=1 (for CI, where they must run).

A null sink renders in blocks of up to 2 s until a low-latency reader attaches, so a new
input stream may stay silent for up to 2 s: wait for the first samples before playing
(`Microphone.wait_for_audio`).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import pytest
try:
    from tests.processes import stop_process
except ImportError:  # pragma: no cover - run from inside tests/
    from processes import stop_process

SINK = "cdz_null"
SOURCE = f"{SINK}.monitor"
DEVICE = "pulse"  # the PortAudio (ALSA) device that goes through PulseAudio
PACKAGES = "apt-get install pulseaudio pulseaudio-utils libasound2-plugins libportaudio2"


@dataclass(frozen=True)
class PulseSink:
    """A running null sink: the server address, the sink, its monitor, the PortAudio device name."""

    server: str
    sink: str = SINK
    source: str = SOURCE
    device: str = DEVICE
    log: Path | None = None


def _unavailable(reason: str) -> None:
    if os.environ.get("CDZ_REQUIRE_PULSE", "").strip() not in ("", "0"):
        pytest.fail(f"PulseAudio test setup failed: {reason}", pytrace=False)
    pytest.skip(reason)


def _pactl(server: str, *args: str, timeout: float = 10.0) -> subprocess.CompletedProcess:
    return subprocess.run(["pactl", f"--server={server}", *args], capture_output=True, text=True, timeout=timeout)


def _start_daemon(folder: Path) -> tuple[subprocess.Popen, str, Path]:
    """A private pulseaudio in the foreground (so we own its pid); its server address once it answers."""
    runtime = folder / "runtime"
    runtime.mkdir(mode=0o700, exist_ok=True)
    sock, log = folder / "native", folder / "pulse.log"
    env = {**os.environ, "HOME": str(folder), "XDG_RUNTIME_DIR": str(runtime),
           "XDG_CONFIG_HOME": str(folder / "config")}
    for var in ("PULSE_SERVER", "PULSE_SOURCE", "PULSE_SINK"):
        env.pop(var, None)
    cmd = ["pulseaudio", "-n", "--daemonize=no", "--exit-idle-time=-1", "--disable-shm=yes", "--use-pid-file=no",
           f"--log-target=file:{log}", f"--load=module-native-protocol-unix socket={sock} auth-anonymous=1",
           f"--load=module-null-sink sink_name={SINK}"]
    proc = subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    server = f"unix:{sock}"
    deadline = time.monotonic() + 15.0
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            break
        if sock.exists() and _pactl(server, "info").returncode == 0:
            return proc, server, log
        time.sleep(0.1)
    _stop(proc)
    tail = log.read_text(errors="replace")[-1500:] if log.exists() else "(no log)"
    _unavailable(f"pulseaudio would not start ({' '.join(cmd)}); its log ends:\n{tail}")
    raise AssertionError("unreachable")


def _stop(proc: subprocess.Popen) -> None:
    stop_process(proc)


def _reinit_portaudio() -> None:
    """PortAudio lists devices once, when sounddevice is imported: make it look again."""
    sd = sys.modules.get("sounddevice")
    if sd is not None:
        sd._terminate()
        sd._initialize()


@pytest.fixture(scope="session")
def pulse_sink(tmp_path_factory) -> Iterator[PulseSink]:
    """A null sink to play into and its monitor as the default source (see the module doc)."""
    missing = [tool for tool in ("pulseaudio", "pactl", "paplay") if shutil.which(tool) is None]
    if missing:
        _unavailable(f"{', '.join(missing)} not found: {PACKAGES}")
    try:
        import sounddevice  # noqa: F401
    except OSError as e:
        _unavailable(f"PortAudio is missing ({e}): {PACKAGES}")
    proc, module, log = None, None, None
    server = os.environ.get("PULSE_SERVER", "")
    if server and _pactl(server, "info").returncode == 0:
        loaded = _pactl(server, "load-module", "module-null-sink", f"sink_name={SINK}")
        if loaded.returncode != 0:
            _unavailable(f"cannot load module-null-sink on {server}: {loaded.stderr.strip()}")
        module = loaded.stdout.strip()
    else:
        proc, server, log = _start_daemon(tmp_path_factory.mktemp("pulse"))
        for args in (("set-default-sink", SINK), ("set-default-source", SOURCE)):
            _pactl(server, *args)
    mp = pytest.MonkeyPatch()
    mp.setenv("PULSE_SERVER", server)
    mp.setenv("PULSE_SOURCE", SOURCE)
    mp.setenv("PULSE_SINK", SINK)
    try:
        _reinit_portaudio()
        import sounddevice as sd

        names = [str(d["name"]) for d in sd.query_devices() if d["max_input_channels"] > 0]
        if DEVICE not in names:
            _unavailable(f"PortAudio lists no '{DEVICE}' input (only {names}): the ALSA pulse plugin is "
                         f"missing: {PACKAGES}")
        yield PulseSink(server, log=log)
    finally:
        if module is not None:
            _pactl(server, "unload-module", module)
        mp.undo()
        if proc is not None:
            _stop(proc)
        _reinit_portaudio()


def play_wav_into_sink(path: Path | str, wait: bool = True, timeout: float = 120.0) -> subprocess.Popen:
    """Play a wav file into the null sink (paplay); with wait=False it plays in the background."""
    proc = subprocess.Popen(["paplay", f"--device={SINK}", str(path)], stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    if wait:
        _, err = proc.communicate(timeout=timeout)
        if proc.returncode != 0:
            raise RuntimeError(f"paplay {path} failed ({proc.returncode}): {err.decode(errors='replace')}")
    return proc
