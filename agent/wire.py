"""The wire format of the runtime: one frozen dataclass per message kind.

A message travels as ZeroMQ multipart frames `[topic, header, payload...]`:

* topic: `<kind>.<modality>` (or `control`, `credit`, and `stats.<source>` when
  the source is a plain name like `hub`, else just `stats`), so subscribers
  filter by prefix;
* header: a small msgpack map (version, kind, modality, event time `t` in ns,
  sequence number, source, generation, and per kind the dtype, shape and ids);
* payload: the raw bytes of at most one array, sent and received without copies.

There is no pickle anywhere. `decode` checks every field and size against the
schema (known kind and modality, integer ranges, dtype allowed, bytes matching
shape, a size cap, finite values) and raises `WireError` otherwise; receivers
count the error and drop the message (see `agent.bus.Inbox`).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any, ClassVar, Sequence

import msgpack
import numpy as np

VERSION = 1
MAX_HEADER_BYTES = 1024 * 1024
MAX_PAYLOAD_BYTES = 8 * 1024 * 1024  # a 64x64 float32 spectrogram is 16 KiB; a VGA RGB frame ~1 MiB
MAX_IDS = 65536  # ids per feedback / cluster-change message (a pruning round can delete thousands)
MAX_DIMS = 4
DTYPES = ("uint8", "int16", "float32")
_NAME = re.compile(r"[a-z][a-z0-9_]{0,31}")  # used with fullmatch
_I64 = (-(2**63), 2**63 - 1)


class WireError(ValueError):
    """A message that does not follow the wire format; the text says what is wrong."""


# ---------------------------------------------------------------------- field checks
def _int(h: dict, key: str, lo: int = _I64[0], hi: int = _I64[1]) -> int:
    v = h.get(key)
    if type(v) is not int or not lo <= v <= hi:  # bool is not int here
        raise WireError(f"header field {key!r} must be an integer in [{lo}, {hi}], got {v!r}")
    return v


def _float(h: dict, key: str) -> float:
    v = h.get(key)
    if type(v) not in (int, float) or not math.isfinite(v):
        raise WireError(f"header field {key!r} must be a finite number, got {v!r}")
    return float(v)


def _bool(h: dict, key: str) -> bool:
    v = h.get(key)
    if type(v) is not bool:
        raise WireError(f"header field {key!r} must be true or false, got {v!r}")
    return v


def _name(h: dict, key: str, allow_empty: bool = False) -> str:
    v = h.get(key)
    if not isinstance(v, str) or not (_NAME.fullmatch(v) or (allow_empty and v == "")):
        raise WireError(f"header field {key!r} must be a lowercase name like 'visual', got {v!r}")
    return v


def _source(h: dict) -> str:
    v = h.get("src")
    if not isinstance(v, str) or len(v) > 64:
        raise WireError(f"header field 'src' must be a string of at most 64 characters, got {v!r}")
    return v


def _ints(h: dict, key: str) -> tuple[int, ...]:
    v = h.get(key)
    if not isinstance(v, list) or len(v) > MAX_IDS:
        raise WireError(f"header field {key!r} must be a list of at most {MAX_IDS} integers")
    for x in v:
        if type(x) is not int or not -1 <= x <= _I64[1]:
            raise WireError(f"header field {key!r} holds a bad id {x!r}")
    return tuple(v)


def _floats(h: dict, key: str, n: int) -> tuple[float, ...]:
    v = h.get(key)
    if not isinstance(v, list) or len(v) != n:
        raise WireError(f"header field {key!r} must be a list of {n} numbers")
    out = []
    for x in v:
        if type(x) not in (int, float) or not math.isfinite(x):
            raise WireError(f"header field {key!r} holds a non-finite or non-numeric value {x!r}")
        out.append(float(x))
    return tuple(out)


def _array(h: dict, payload: list) -> np.ndarray:
    """The single array payload, as a read-only view of the received frame (no copy)."""
    dtype, shape = h.get("dtype"), h.get("shape")
    if dtype not in DTYPES:
        raise WireError(f"payload dtype must be one of {DTYPES}, got {dtype!r}")
    if not isinstance(shape, list) or not 1 <= len(shape) <= MAX_DIMS or \
            any(type(s) is not int or not 1 <= s <= MAX_PAYLOAD_BYTES for s in shape):
        raise WireError(f"payload shape must be 1 to {MAX_DIMS} positive integers, got {shape!r}")
    if len(payload) != 1:
        raise WireError(f"expected exactly one payload frame, got {len(payload)}")
    buf = _buffer(payload[0])
    want = math.prod(shape) * np.dtype(dtype).itemsize  # Python ints: no overflow
    if want > MAX_PAYLOAD_BYTES:
        raise WireError(f"payload of {want} bytes exceeds the cap of {MAX_PAYLOAD_BYTES}")
    if len(buf) != want:
        raise WireError(f"payload has {len(buf)} bytes; dtype {dtype} and shape {shape} need {want}")
    arr = np.frombuffer(buf, dtype=dtype).reshape(shape)
    arr.flags.writeable = False  # a view of the received frame: copy before changing it
    if arr.dtype.kind == "f" and not np.isfinite(arr).all():
        raise WireError("payload contains NaN or inf")
    return arr


def _buffer(frame: Any) -> memoryview:
    """The bytes of a frame: bytes, a zmq.Frame (received with copy=False) or any buffer."""
    buf = getattr(frame, "buffer", None)
    try:
        view = buf if buf is not None else memoryview(frame)
        return view.cast("B") if view.format != "B" or view.ndim != 1 else view
    except TypeError:
        raise WireError(f"frame of unexpected type {type(frame).__name__}") from None


def _as_payload(arr: np.ndarray) -> tuple[dict, np.ndarray]:
    """Check an array the way receivers will (so nobody sends what everyone drops); native byte order."""
    if not isinstance(arr, np.ndarray) or not 1 <= arr.ndim <= MAX_DIMS or arr.size == 0:
        raise WireError(f"cannot send {type(arr).__name__} of shape {getattr(arr, 'shape', None)}: "
                        f"need an array of 1 to {MAX_DIMS} dims")
    if arr.dtype.name not in DTYPES:
        raise WireError(f"cannot send dtype {arr.dtype}; allowed: {DTYPES}")
    arr = np.ascontiguousarray(arr, dtype=arr.dtype.newbyteorder("="))
    if arr.nbytes > MAX_PAYLOAD_BYTES:
        raise WireError(f"payload of {arr.nbytes} bytes exceeds the cap of {MAX_PAYLOAD_BYTES}")
    if arr.dtype.kind == "f" and not np.isfinite(arr).all():
        raise WireError("cannot send NaN or inf")
    return {"dtype": arr.dtype.name, "shape": list(arr.shape)}, arr


# ---------------------------------------------------------------------- messages
@dataclass(frozen=True, slots=True)
class Stimulus:
    """Sensor -> worker: one raw stimulus (an image or a spectrogram) to encode and learn."""

    KIND: ClassVar[str] = "stimulus"
    modality: str
    t_ns: int  # event time (capture time of live input; stream time of a replay)
    seq: int  # global sequence number of the source's stream
    data: np.ndarray = field(repr=False)
    source: str = ""
    gen: int = 0  # run generation: bumped on every rewind, older messages are ignored
    mseq: int = 0  # sequence number among this modality's stimuli (gap = loss)
    learn: bool = True  # False: only classify and recall (nothing changes)
    grow: bool = True  # node growth allowed (a replay stops it near the end)
    internal: bool = False  # a thought, not a sensation (stream of thought)
    depth: int = 0  # thought depth: 0 for real input
    near: int = -1  # replays: stimuli of other modalities within B of this one (-1: unknown)

    def _header(self) -> tuple[dict, list]:
        meta, arr = _as_payload(self.data)
        return {"mseq": self.mseq, "learn": self.learn, "grow": self.grow, "internal": self.internal,
                "depth": self.depth, "near": self.near, **meta}, [arr]

    @classmethod
    def _parse(cls, common: dict, h: dict, payload: list) -> "Stimulus":
        return cls(data=_array(h, payload), mseq=_int(h, "mseq", 0), learn=_bool(h, "learn"), grow=_bool(h, "grow"),
                   internal=_bool(h, "internal"), depth=_int(h, "depth", 0, 1 << 20),
                   near=_int(h, "near", -1, 1 << 30), **common)


@dataclass(frozen=True, slots=True)
class Excite:
    """Worker -> hub: the cluster a stimulus excited (cluster -1: the stimulus was rejected)."""

    KIND: ClassVar[str] = "excite"
    modality: str
    t_ns: int
    seq: int
    cluster_id: int
    node_id: int
    strength: float = 1.0
    source: str = ""
    gen: int = 0
    learn: bool = True  # False: a pure query; the hub answers with recall only
    internal: bool = False  # the stimulus was a thought (its recalls are thoughts too)
    depth: int = 0
    relived: bool = False  # lived again after a sleep (agent.sleep): learned, but no recall and no latency

    def _header(self) -> tuple[dict, list]:
        extra = {"relived": True} if self.relived else {}  # absent in older recordings: False
        return {"cluster": self.cluster_id, "node": self.node_id, "strength": self.strength, "learn": self.learn,
                "internal": self.internal, "depth": self.depth, **extra}, []

    @classmethod
    def _parse(cls, common: dict, h: dict, payload: list) -> "Excite":
        _no_payload(payload)
        strength = _float(h, "strength")
        if strength < 0:
            raise WireError("header field 'strength' must be >= 0")
        return cls(cluster_id=_int(h, "cluster", -1), node_id=_int(h, "node", -1), strength=strength,
                   learn=_bool(h, "learn"), internal=_bool(h, "internal"), depth=_int(h, "depth", 0, 1 << 20),
                   relived=_bool(h, "relived") if "relived" in h else False,
                   **common)


@dataclass(frozen=True, slots=True)
class Feedback:
    """Hub -> worker: after excitation `seq`, these nodes should move towards these clusters.

    In lossless mode the hub sends one (possibly empty) Feedback per modality for every
    sequence number, which is also the worker's go-ahead for the next stimulus.
    """

    KIND: ClassVar[str] = "feedback"
    modality: str
    t_ns: int
    seq: int
    node_ids: tuple[int, ...] = ()
    cluster_ids: tuple[int, ...] = ()
    certainties: tuple[float, ...] = ()
    source: str = ""
    gen: int = 0

    def _header(self) -> tuple[dict, list]:
        return {"nodes": list(self.node_ids), "clusters": list(self.cluster_ids),
                "certainty": list(self.certainties)}, []

    @classmethod
    def _parse(cls, common: dict, h: dict, payload: list) -> "Feedback":
        _no_payload(payload)
        nodes, clusters = _ints(h, "nodes"), _ints(h, "clusters")
        if len(nodes) != len(clusters):
            raise WireError("feedback needs as many clusters as nodes")
        cert = _floats(h, "certainty", len(nodes))
        if any(not 0.0 <= c <= 1.0 for c in cert):
            raise WireError("feedback certainties must lie in [0, 1]")
        return cls(node_ids=nodes, cluster_ids=clusters, certainties=cert, **common)


@dataclass(frozen=True, slots=True)
class Recall:
    """Hub -> worker of `modality`: show what cluster `cluster_id` looks like (cue from another sense)."""

    KIND: ClassVar[str] = "recall"
    modality: str
    t_ns: int  # event time of the cue stimulus: latency is measured from it
    seq: int
    cluster_id: int
    cue_modality: str
    cue_cluster: int
    source: str = ""
    gen: int = 0
    internal: bool = False
    depth: int = 0

    def _header(self) -> tuple[dict, list]:
        return {"cluster": self.cluster_id, "cue": self.cue_modality, "cue_cluster": self.cue_cluster,
                "internal": self.internal, "depth": self.depth}, []

    @classmethod
    def _parse(cls, common: dict, h: dict, payload: list) -> "Recall":
        _no_payload(payload)
        return cls(cluster_id=_int(h, "cluster", 0), cue_modality=_name(h, "cue"),
                   cue_cluster=_int(h, "cue_cluster", -1), internal=_bool(h, "internal"),
                   depth=_int(h, "depth", 0, 1 << 20), **common)


@dataclass(frozen=True, slots=True)
class Recon:
    """Worker -> anyone: the decoded mode of a recalled cluster, in stimulus space."""

    KIND: ClassVar[str] = "recon"
    modality: str
    t_ns: int  # event time of the cue stimulus
    seq: int
    cluster_id: int
    cue_modality: str
    data: np.ndarray = field(repr=False)
    source: str = ""
    gen: int = 0
    internal: bool = False
    depth: int = 0

    def _header(self) -> tuple[dict, list]:
        meta, arr = _as_payload(self.data)
        return {"cluster": self.cluster_id, "cue": self.cue_modality, "internal": self.internal,
                "depth": self.depth, **meta}, [arr]

    @classmethod
    def _parse(cls, common: dict, h: dict, payload: list) -> "Recon":
        return cls(cluster_id=_int(h, "cluster", 0), cue_modality=_name(h, "cue"), data=_array(h, payload),
                   internal=_bool(h, "internal"), depth=_int(h, "depth", 0, 1 << 20), **common)


@dataclass(frozen=True, slots=True)
class Clusters:
    """Worker -> hub: clusters born and deleted just before excitation `seq` of this modality."""

    KIND: ClassVar[str] = "clusters"
    modality: str
    t_ns: int
    seq: int
    created: tuple[int, ...] = ()
    deleted: tuple[int, ...] = ()
    source: str = ""
    gen: int = 0

    def _header(self) -> tuple[dict, list]:
        return {"created": list(self.created), "deleted": list(self.deleted)}, []

    @classmethod
    def _parse(cls, common: dict, h: dict, payload: list) -> "Clusters":
        _no_payload(payload)
        return cls(created=_ints(h, "created"), deleted=_ints(h, "deleted"), **common)


@dataclass(frozen=True, slots=True)
class Frame:
    """Camera -> viewers: a small preview of what the camera sees (uint8, HxW or HxWx3).

    Not a stimulus: nothing learns from it. The camera sends a few per second."""

    KIND: ClassVar[str] = "frame"
    modality: str
    t_ns: int
    seq: int
    data: np.ndarray = field(repr=False)
    source: str = ""
    gen: int = 0

    def _header(self) -> tuple[dict, list]:
        meta, arr = _as_payload(self.data)
        return meta, [arr]

    @classmethod
    def _parse(cls, common: dict, h: dict, payload: list) -> "Frame":
        return cls(data=_array(h, payload), **common)


@dataclass(frozen=True, slots=True)
class Weights:
    """Hub -> viewers: the CDZ matrix W[modality -> target] over live clusters (rows: `rows`
    cluster ids of `modality`, columns: `cols` cluster ids of `target`), now and then."""

    KIND: ClassVar[str] = "weights"
    modality: str
    t_ns: int
    seq: int
    target: str
    rows: tuple[int, ...]
    cols: tuple[int, ...]
    data: np.ndarray = field(repr=False)
    source: str = ""
    gen: int = 0

    def _header(self) -> tuple[dict, list]:
        meta, arr = _as_payload(self.data)
        return {"target": self.target, "rows": list(self.rows), "cols": list(self.cols), **meta}, [arr]

    @classmethod
    def _parse(cls, common: dict, h: dict, payload: list) -> "Weights":
        data = _array(h, payload)
        rows, cols = _ints(h, "rows"), _ints(h, "cols")
        if data.shape != (len(rows), len(cols)):
            raise WireError(f"weights of shape {data.shape} do not match {len(rows)} rows x {len(cols)} columns")
        return cls(target=_name(h, "target"), rows=rows, cols=cols, data=data, **common)


@dataclass(frozen=True, slots=True)
class Credit:
    """Hub -> player and workers (lossless flow): every stimulus below `seq` is learned and
    answered; `t_ns` is the event time of the last one. The player's credit, the workers' watermark."""

    KIND: ClassVar[str] = "credit"
    seq: int
    t_ns: int
    source: str = ""
    gen: int = 0
    modality: str = ""

    def _header(self) -> tuple[dict, list]:
        return {}, []

    @classmethod
    def _parse(cls, common: dict, h: dict, payload: list) -> "Credit":
        _no_payload(payload)
        return cls(**common)


_VALUE_TYPES = (bool, int, float, str)


@dataclass(frozen=True, slots=True)
class Control:
    """Supervisor <-> processes: hello, ready, go, rewind, ack (credit), stop.

    `args` holds flat scalars only (bool, int, finite float, short str).
    """

    KIND: ClassVar[str] = "control"
    command: str
    args: dict[str, Any] = field(default_factory=dict)
    source: str = ""
    gen: int = 0
    t_ns: int = 0
    seq: int = 0
    modality: str = ""

    def _header(self) -> tuple[dict, list]:
        return {"cmd": self.command, "args": _check_args(self.args)}, []

    @classmethod
    def _parse(cls, common: dict, h: dict, payload: list) -> "Control":
        _no_payload(payload)
        command, args = _name(h, "cmd"), _check_args(h.get("args"))
        _check_fields(args, CONTROL_ARGS.get(command, {}), f"control {command!r}")
        return cls(command=command, args=args, **common)


@dataclass(frozen=True, slots=True)
class Stats:
    """Every process, about once a second: rates, queue depths, drops, latencies."""

    KIND: ClassVar[str] = "stats"
    values: dict[str, Any] = field(default_factory=dict)
    source: str = ""
    gen: int = 0
    t_ns: int = 0
    seq: int = 0
    modality: str = ""

    def _header(self) -> tuple[dict, list]:
        return {"values": _check_args(self.values)}, []

    @classmethod
    def _parse(cls, common: dict, h: dict, payload: list) -> "Stats":
        _no_payload(payload)
        values = _check_args(h.get("values"))
        _check_fields(values, STATS_FIELDS, "stats")
        return cls(values=values, **common)


# What processes act on, checked like framing (a bad one is counted and dropped, never acted on).
# A field type is (types, lowest value); bool is never a number here.
_COUNT = ((int,), 0)
_NUMBER = ((int, float), None)
_TEXT = ((str,), None)
_FLAG = ((bool,), None)
CONTROL_ARGS: dict[str, dict[str, tuple]] = {  # known commands; unknown ones pass (no process acts on them)
    "hello": {"nonce": _TEXT}, "ready": {"gen": _COUNT, "step": _COUNT}, "go": {"gen": _COUNT, "step": _COUNT},
    "rewind": {"gen": _COUNT, "step": _COUNT}, "stop": {"to": _TEXT}, "checkpoint": {"step": _COUNT},
    "saved": {"step": _COUNT, "part": _TEXT}, "pause": {}, "resume": {},
    "sleep": {"on": _FLAG}, "reload": {"id": _COUNT},
}
STATS_FIELDS: dict[str, tuple] = {  # the fields processes and `cdz top` read; others are any flat scalar
    **dict.fromkeys(("role", "modality", "device", "source"), _TEXT),
    **dict.fromkeys(("stalled", "eof", "playing", "finished", "sleeping"), _FLAG),
    **dict.fromkeys(("gen", "bad_messages", "stale_gen", "next_seq", "learned", "nodes", "clusters", "queue",
                     "processed", "sent", "acked", "total", "next", "experience", "recons", "rejected", "lost",
                     "resent", "duplicates", "dropped_oldest"), _COUNT),
    **dict.fromkeys(("rate_per_s", "latency_p50_ms", "latency_p99_ms", "uptime_s", "fps"), _NUMBER),
}


def _check_fields(values: dict[str, Any], schema: dict[str, tuple], what: str) -> None:
    """Each value present is of its field's type (and not below its lowest value); absent ones may be absent."""
    for key, (types, lowest) in schema.items():
        if key not in values:
            continue
        v = values[key]
        if type(v) not in types or (lowest is not None and v < lowest):
            want = "/".join(t.__name__ for t in types) + (f" >= {lowest}" if lowest is not None else "")
            raise WireError(f"{what}: {key!r} must be {want}, got {v!r}"[:200])


def _check_args(args: Any) -> dict[str, Any]:
    if not isinstance(args, dict) or len(args) > 256:
        raise WireError("args must be a map of at most 256 entries")
    for k, v in args.items():
        if not isinstance(k, str) or len(k) > 64:
            raise WireError(f"bad args key {k!r}")
        if type(v) not in _VALUE_TYPES or (type(v) is float and not math.isfinite(v)) or \
                (type(v) is str and len(v) > 1024):
            raise WireError(f"args value of {k!r} must be a finite number, bool or short string, got {v!r}")
    return dict(args)


def _no_payload(payload: list) -> None:
    if payload:
        raise WireError(f"this kind carries no payload, got {len(payload)} extra frames")


Message = Stimulus | Excite | Feedback | Recall | Recon | Clusters | Frame | Weights | Credit | Control | Stats
KINDS: dict[str, type] = {c.KIND: c for c in (Stimulus, Excite, Feedback, Recall, Recon, Clusters, Frame, Weights,
                                              Credit, Control, Stats)}
_PER_MODALITY = ("stimulus", "excite", "feedback", "recall", "recon", "clusters", "frame", "weights")


def topic(kind: str, modality: str = "") -> bytes:
    """The topic a message is published under; subscribe to a prefix of it."""
    if kind in _PER_MODALITY:
        return f"{kind}.{modality}".encode()
    return kind.encode() if not modality else f"{kind}.{modality}".encode()


def encode(msg: Message) -> list:
    """Frames of a message: topic, msgpack header, then the payload array itself (zero copy)."""
    extra, payload = msg._header()
    modality = msg.modality
    header = {"v": VERSION, "kind": msg.KIND, "mod": modality, "t": int(msg.t_ns), "seq": int(msg.seq),
              "src": msg.source, "gen": int(msg.gen), **extra}
    sub = msg.source if msg.KIND == "stats" else modality
    return [topic(msg.KIND, _topic_name(sub)), msgpack.packb(header, use_bin_type=True), *payload]


def _topic_name(text: str) -> str:
    return text if _NAME.fullmatch(text or "") else ""


def decode(frames: Sequence[Any]) -> Message:
    """Parse and validate frames into a message; `WireError` if anything is off."""
    if not 2 <= len(frames) <= 3:
        raise WireError(f"a message has 2 or 3 frames, got {len(frames)}")
    head = _buffer(frames[1])
    if len(head) > MAX_HEADER_BYTES:
        raise WireError(f"header of {len(head)} bytes exceeds the cap of {MAX_HEADER_BYTES}")
    try:
        h = msgpack.unpackb(head, raw=False, strict_map_key=True)
    except Exception as e:  # msgpack raises several unrelated types on garbage
        raise WireError(f"header is not valid msgpack: {type(e).__name__}") from None
    if not isinstance(h, dict):
        raise WireError("header must be a msgpack map")
    if type(h.get("v")) is not int or h["v"] != VERSION:
        raise WireError(f"unsupported wire version {h.get('v')!r} (this build speaks {VERSION})")
    kind = h.get("kind")
    cls = KINDS.get(kind) if isinstance(kind, str) else None
    if cls is None:
        raise WireError(f"unknown message kind {kind!r}")
    modality = _name(h, "mod", allow_empty=kind not in _PER_MODALITY)
    common = {"modality": modality, "t_ns": _int(h, "t"), "seq": _int(h, "seq", 0), "source": _source(h),
              "gen": _int(h, "gen", 0)}
    sub = common["source"] if kind == "stats" else modality
    want_topic = topic(kind, _topic_name(sub))
    if bytes(_buffer(frames[0])) != want_topic:
        raise WireError(f"topic {bytes(_buffer(frames[0]))[:40]!r} does not match the header ({want_topic!r})")
    return cls._parse(common, h, list(frames[2:]))
