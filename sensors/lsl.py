"""The Lab Streaming Layer side of the bridge, without a process: clocks, stream declarations, samples.

LSL (liblsl, through pylsl) stamps every sample with the sending machine's
`local_clock()`, a steady clock in seconds; an inlet's `time_correction()` is what to
add to a remote stream's stamps to bring them onto our own `local_clock()`. The bus
stamps events in ns on the hub's clock (`Service.bus_ns`). `ClockBridge` reads both
clocks side by side whenever it maps a time, so an event time crosses between the two
with only the microseconds between two clock reads lost, and no drift builds up.

`cdz lsl out` (`sensors.lsl_out`) declares its streams here so that LabRecorder and an
XDF file carry what each channel means; `cdz lsl in` (`sensors.lsl_in`) reads a
stream's declared shape here and looks up each sample's stamp in `SampleStamps`.
pylsl is imported only by the processes (`load_pylsl`): reading `cdz --help` needs no liblsl.
"""

from __future__ import annotations

import bisect
import math
import re
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from agent.core.messages import Excitation, Recall, Reconstruction
from sensors.errors import SensorError

STREAM_KINDS = {Excitation: "excitation", Recall: "recall", Reconstruction: "reconstruction"}
RECON_UNIT = "normalised intensity [0, 1]"  # a decoded MNIST image or log-mel spectrogram (sensors.image_features, sensors.sound_features)


def load_pylsl() -> Any:
    """pylsl, imported late (it loads liblsl) with an error that says what to install."""
    try:
        import pylsl
    except ImportError:
        raise SensorError("the pylsl package is missing: pip install 'pylsl>=1.16,<2'") from None
    except (OSError, RuntimeError) as e:  # pylsl raises these when liblsl itself cannot be loaded
        raise SensorError(f"liblsl cannot be loaded ({e}): reinstall pylsl, which ships it, or set PYLSL_LIB") from None
    return pylsl


# ---------------------------------------------------------------------- clocks
class ClockBridge:
    """The bus clock (ns) against our LSL clock (s), measured each time it is used.

    Each reading brackets one bus-clock read between two LSL-clock reads; of `reads`
    readings the narrowest bracket is trusted. Measuring at every use follows NTP
    stepping the wall clock under the bus's time, and costs a few microseconds."""

    def __init__(self, bus_now: Callable[[], int], lsl_now: Callable[[], float], reads: int = 3):
        self.bus_now = bus_now
        self.lsl_now = lsl_now
        self.reads = max(1, reads)

    def offset_ns(self) -> float:
        """The bus clock minus the LSL clock, in ns."""
        best = (math.inf, 0.0)
        for _ in range(self.reads):
            a = self.lsl_now()
            b = self.bus_now()
            c = self.lsl_now()
            best = min(best, (c - a, b - (a + c) * 0.5e9))
        return best[1]

    def to_lsl(self, t_bus_ns: int) -> float:
        """An event time on the bus clock as a stamp of our LSL clock."""
        return (t_bus_ns - self.offset_ns()) / 1e9

    def to_bus(self, t_lsl_s: float) -> int:
        """A stamp of our LSL clock as an event time on the bus clock."""
        return int(round(t_lsl_s * 1e9 + self.offset_ns()))


class SampleStamps:
    """The LSL stamp of each recent sample of a stream, by its index since the stream began.

    Chunks are kept whole (`keep` samples at least), so that a word's onset, found a
    second after it was pulled, gets the stamp its own sample had: no rate is assumed
    where the sender stamped. An index older than what is kept is extrapolated from the
    oldest kept sample at the nominal `rate`."""

    def __init__(self, rate: float, keep: int):
        self.rate = rate
        self.keep = max(1, keep)
        self._firsts: deque[int] = deque()
        self._stamps: deque[np.ndarray] = deque()
        self.count = 0  # samples added so far

    def add(self, stamps: np.ndarray) -> None:
        if stamps.size == 0:
            return
        self._firsts.append(self.count)
        self._stamps.append(np.asarray(stamps, np.float64))
        self.count += stamps.size
        while len(self._firsts) > 1 and self.count - self._firsts[1] >= self.keep:
            self._firsts.popleft()
            self._stamps.popleft()

    def at(self, index: int) -> float:
        """The stamp of sample `index` (LSL seconds)."""
        if not self._firsts:
            raise ValueError("no samples yet")
        k = bisect.bisect_right(self._firsts, index) - 1
        if k < 0:
            return float(self._stamps[0][0]) - (self._firsts[0] - index) / self.rate
        i = index - self._firsts[k]
        stamps = self._stamps[k]
        if i < stamps.size:
            return float(stamps[i])
        return float(stamps[-1]) + (i - stamps.size + 1) / self.rate


# ---------------------------------------------------------------------- streams out
def stream_name(kind: str, sense: str) -> str:
    """`cdz-excitation-audio`: what LabRecorder lists and `cdz lsl in` resolves."""
    return f"cdz-{kind}-{sense}"


CHANNELS: dict[str, tuple[tuple[str, str, str], ...]] = {  # kind -> (label, unit, type) per channel
    "excitation": (("cluster", "id", "cluster"), ("node", "id", "node"), ("strength", "similarity", "strength"),
                   ("internal", "bool", "flag")),
    "recall": (("cluster", "id", "cluster"), ("cue_sense", "index into desc/cdz/senses", "sense"),
               ("cue_cluster", "id", "cluster"), ("internal", "bool", "flag")),
}
MEANING = {
    "excitation": "a stimulus of this sense excited node `node` of cluster `cluster` (-1: the stimulus was "
                  "refused); `internal` 1 for a thought",
    "recall": "the hub recalled cluster `cluster` of this sense from cluster `cue_cluster` of the cue sense",
    "reconstruction": "the recalled cluster of this sense decoded: an image (visual) or log-mel spectrogram "
                      "(audio), row-major, shape in desc/cdz/shape",
}


def stream_info(pylsl: Any, kind: str, sense: str, *, source_id: str, version: str, senses: Sequence[str] = (),
                shape: Sequence[int] = ()) -> Any:
    """The declaration of one outgoing stream: name, type, channels, format, source id and a `desc`
    with channel labels and units, the agent's version, and the clock its stamps are on."""
    if kind == "reconstruction":
        count, fmt = int(np.prod(shape)), pylsl.cf_float32
    else:
        count, fmt = len(CHANNELS[kind]), pylsl.cf_double64
    info = pylsl.StreamInfo(stream_name(kind, sense), f"cdz.{kind}", count, pylsl.IRREGULAR_RATE, fmt, source_id)
    desc = info.desc()
    channels = desc.append_child("channels")
    if kind == "reconstruction":
        channels.append_child_value("layout", "row-major " + "x".join(map(str, shape)))
        channels.append_child_value("unit", RECON_UNIT)
    else:
        for label, unit, ctype in CHANNELS[kind]:
            ch = channels.append_child("channel")
            ch.append_child_value("label", label)
            ch.append_child_value("unit", unit)
            ch.append_child_value("type", ctype)
    cdz = desc.append_child("cdz")
    cdz.append_child_value("version", version)
    cdz.append_child_value("kind", kind)
    cdz.append_child_value("sense", sense)
    cdz.append_child_value("meaning", MEANING[kind])
    cdz.append_child_value("timestamps", "the event time of the stimulus (capture time), mapped from the hub's "
                                         "clock onto this machine's LSL clock; not the time it was sent")
    if senses:
        listed = cdz.append_child("senses")
        for s in senses:
            listed.append_child_value("sense", s)
    if shape:
        dims = cdz.append_child("shape")
        for name, n in zip(("height", "width", "depth"), shape):
            dims.append_child_value(name, str(n))
    acq = desc.append_child("acquisition")
    acq.append_child_value("manufacturer", "cdz-agent")
    acq.append_child_value("model", f"cdz-agent {version}")
    return info


def sample_of(msg: Excitation | Recall | Reconstruction, senses: Sequence[str]) -> np.ndarray:
    """One message as one sample of its stream (see `CHANNELS`); a cue sense not in `senses` is -1."""
    if isinstance(msg, Excitation):
        return np.array([msg.cluster_id, msg.node_id, msg.strength, float(msg.internal)], np.float64)
    if isinstance(msg, Recall):
        cue = senses.index(msg.cue_modality) if msg.cue_modality in senses else -1
        return np.array([msg.cluster_id, cue, msg.cue_cluster, float(msg.internal)], np.float64)
    return np.ascontiguousarray(msg.data, np.float32).ravel()


# ---------------------------------------------------------------------- streams in
_SHAPE = re.compile(r"(\d+)x(\d+)(?:x([134]))?")


def parse_shape(text: str) -> tuple[int, int, int]:
    """`28x28` or `480x640x3` (height x width [x depth 1, 3 or 4]) -> (h, w, depth); ValueError otherwise."""
    found = _SHAPE.fullmatch(text.strip().lower())
    if not found or int(found.group(1)) < 1 or int(found.group(2)) < 1:
        raise ValueError(f"expected HEIGHTxWIDTH or HEIGHTxWIDTHxDEPTH (depth 1, 3 or 4), e.g. 28x28, got {text!r}")
    return int(found.group(1)), int(found.group(2)), int(found.group(3) or 1)


def declared_shape(info: Any) -> tuple[int, int, int] | None:
    """A frame stream's shape from its `desc`: `shape/height`, `width` (and `depth`), as `cdz lsl out`
    writes them under `cdz/`, or at the top of `desc`; None where it declares none."""
    desc = info.desc()
    for node in (desc.child("cdz").child("shape"), desc.child("shape")):
        h, w, d = (node.child_value(k).strip() for k in ("height", "width", "depth"))
        if h.isdecimal() and w.isdecimal():
            return int(h), int(w), int(d) if d.isdecimal() else 1
    return None


def frame_of(sample: np.ndarray, shape: tuple[int, int, int]) -> np.ndarray:
    """One flattened frame -> an HxW (grey) or HxWxD (RGB/RGBA, turned to OpenCV's BGR/BGRA) uint8 image.

    Floats are taken as [0, 1] intensities (as `cdz lsl out` sends them); integers as 0..255."""
    h, w, d = shape
    img = np.asarray(sample).reshape((h, w) if d == 1 else (h, w, d))
    if img.dtype.kind == "f":
        img = np.clip(img, 0.0, 1.0) * 255.0
    img = np.clip(img, 0, 255).astype(np.uint8)
    if d >= 3:
        img = np.ascontiguousarray(img[..., [2, 1, 0, 3][:d]])  # RGB(A), LSL's usual order -> BGR(A)
    return img
