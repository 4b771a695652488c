"""The wire format of the runtime: how the messages of `agent.core.messages` travel between processes.

A message travels as ZeroMQ multipart frames `[topic, header, payload...]`:

* topic: `<kind>.<modality>` (or `control`, `credit`, and `stats.<source>` when
  the source is a plain name like `hub`, else just `stats`), so subscribers
  filter by prefix;
* header: a small msgpack map (version, kind, modality, event time `t` in ns,
  sequence number, source, generation, and per kind the dtype, shape and ids);
* payload: the raw bytes of at most one array, sent and received without copies.

A *batch* is several messages of one kind, sense, source and generation in one
multipart message: `[topic, b"", header, payload?]` (`encode_batch`; the empty
frame says "batch", as no header is empty). Its header holds the shared envelope
once and a list `rows`, one small map per message (its time, sequence number and
kind's fields), then, for the kinds that carry an array, one frame holding every
message's array back to back (each row's dtype and shape say where its own ends).
`decode_all` reads it back into messages, each row checked exactly as a single
message is; a batch with one bad row is one bad message, dropped whole. The
lossless flow batches what it sends (one ZeroMQ send of three or four frames per
burst instead of one send per stimulus); a recorder still writes each message on its
own, as `encode` puts it on the wire.

There is no pickle anywhere. `decode` checks every field and size against the
schema (known kind and modality, integer ranges, dtype allowed, bytes matching
shape, a size cap, finite values) and raises `WireError` otherwise; receivers
count the error and drop the message (see `agent.runtime.bus.Inbox`).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from typing import Any

import msgpack
import numpy as np

from agent.core.messages import (KINDS, ClusterChange, Control, Credit, Excitation, Feedback, Frame, Message, Recall,
                            Reconstruction, Stats, Stimulus, Weights)

VERSION = 1
MAX_HEADER_BYTES = 1024 * 1024
MAX_PAYLOAD_BYTES = 8 * 1024 * 1024  # a 64x64 float32 spectrogram is 16 KiB; a VGA RGB frame ~1 MiB
MAX_IDS = 65536  # ids per feedback / cluster-change message (a pruning round can delete thousands)
MAX_DIMS = 4
DTYPES = ("uint8", "int16", "float32")
_NATIVE = {np.dtype(n).newbyteorder("="): n for n in DTYPES}  # dtype.name is slow for a per-message check
_ITEMSIZE = {n: np.dtype(n).itemsize for n in DTYPES}
_NAME = re.compile(r"[a-z][a-z0-9_]{0,31}")  # used with fullmatch
_I64 = (-(2**63), 2**63 - 1)


class WireError(ValueError):
    """A message that does not follow the wire format; the text says what is wrong."""


class BatchTooLarge(WireError):
    """A batch whose header would exceed what receivers accept (`encode_batches` splits it)."""


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


def _payload_size(h: dict) -> int:
    """Bytes of the array a header describes (its dtype and shape checked)."""
    dtype, shape = h.get("dtype"), h.get("shape")
    if dtype not in DTYPES:
        raise WireError(f"payload dtype must be one of {DTYPES}, got {dtype!r}")
    if not isinstance(shape, list) or not 1 <= len(shape) <= MAX_DIMS or \
            any(type(s) is not int or not 1 <= s <= MAX_PAYLOAD_BYTES for s in shape):
        raise WireError(f"payload shape must be 1 to {MAX_DIMS} positive integers, got {shape!r}")
    want = math.prod(shape) * _ITEMSIZE[dtype]  # Python ints: no overflow
    if want > MAX_PAYLOAD_BYTES:
        raise WireError(f"payload of {want} bytes exceeds the cap of {MAX_PAYLOAD_BYTES}")
    return want


def _array(h: dict, payload: list) -> np.ndarray:
    """The single array payload, as a read-only view of the received frame (no copy)."""
    want = _payload_size(h)
    if len(payload) != 1:
        raise WireError(f"expected exactly one payload frame, got {len(payload)}")
    buf = _buffer(payload[0])
    if len(buf) != want:
        raise WireError(f"payload has {len(buf)} bytes; dtype {h['dtype']} and shape {h['shape']} need {want}")
    arr = np.frombuffer(buf, dtype=h["dtype"]).reshape(h["shape"])
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
    name = _NATIVE.get(arr.dtype)
    if name is None:  # another byte order (or a dtype nobody reads)
        name = arr.dtype.name
        if name not in DTYPES:
            raise WireError(f"cannot send dtype {arr.dtype}; allowed: {DTYPES}")
        arr = arr.astype(arr.dtype.newbyteorder("="))
    arr = np.ascontiguousarray(arr)
    if arr.nbytes > MAX_PAYLOAD_BYTES:
        raise WireError(f"payload of {arr.nbytes} bytes exceeds the cap of {MAX_PAYLOAD_BYTES}")
    if arr.dtype.kind == "f" and not np.isfinite(arr).all():
        raise WireError("cannot send NaN or inf")
    return {"dtype": name, "shape": list(arr.shape)}, arr


# ---------------------------------------------------------------------- each kind's header
# A kind's codec: the header fields (and payload) it adds to the envelope, and how they are read back.
def _stimulus_header(m: Stimulus) -> tuple[dict, list]:
    meta, arr = _as_payload(m.data)
    return {"mseq": m.mseq, "learn": m.learn, "grow": m.grow, "internal": m.internal, "depth": m.depth,
            "near": m.near, **meta}, [arr]


def _stimulus_parse(common: dict, h: dict, payload: list) -> Stimulus:
    return Stimulus(data=_array(h, payload), mseq=_int(h, "mseq", 0), learn=_bool(h, "learn"), grow=_bool(h, "grow"),
                    internal=_bool(h, "internal"), depth=_int(h, "depth", 0, 1 << 20),
                    near=_int(h, "near", -1, 1 << 30), **common)


def _excitation_header(m: Excitation) -> tuple[dict, list]:
    extra = {"relived": True} if m.relived else {}  # absent in older recordings: False
    return {"cluster": m.cluster_id, "node": m.node_id, "strength": m.strength, "learn": m.learn,
            "internal": m.internal, "depth": m.depth, **extra}, []


def _excitation_parse(common: dict, h: dict, payload: list) -> Excitation:
    _no_payload(payload)
    strength = _float(h, "strength")
    if strength < 0:
        raise WireError("header field 'strength' must be >= 0")
    return Excitation(cluster_id=_int(h, "cluster", -1), node_id=_int(h, "node", -1), strength=strength,
                      learn=_bool(h, "learn"), internal=_bool(h, "internal"), depth=_int(h, "depth", 0, 1 << 20),
                      relived=_bool(h, "relived") if "relived" in h else False, **common)


def _feedback_header(m: Feedback) -> tuple[dict, list]:
    return {"nodes": list(m.node_ids), "clusters": list(m.cluster_ids), "certainty": list(m.certainties)}, []


def _feedback_parse(common: dict, h: dict, payload: list) -> Feedback:
    _no_payload(payload)
    nodes, clusters = _ints(h, "nodes"), _ints(h, "clusters")
    if len(nodes) != len(clusters):
        raise WireError("feedback needs as many clusters as nodes")
    cert = _floats(h, "certainty", len(nodes))
    if any(not 0.0 <= c <= 1.0 for c in cert):
        raise WireError("feedback certainties must lie in [0, 1]")
    return Feedback(node_ids=nodes, cluster_ids=clusters, certainties=cert, **common)


def _recall_header(m: Recall) -> tuple[dict, list]:
    return {"cluster": m.cluster_id, "cue": m.cue_modality, "cue_cluster": m.cue_cluster, "internal": m.internal,
            "depth": m.depth}, []


def _recall_parse(common: dict, h: dict, payload: list) -> Recall:
    _no_payload(payload)
    return Recall(cluster_id=_int(h, "cluster", 0), cue_modality=_name(h, "cue"),
                  cue_cluster=_int(h, "cue_cluster", -1), internal=_bool(h, "internal"),
                  depth=_int(h, "depth", 0, 1 << 20), **common)


def _reconstruction_header(m: Reconstruction) -> tuple[dict, list]:
    meta, arr = _as_payload(m.data)
    return {"cluster": m.cluster_id, "cue": m.cue_modality, "internal": m.internal, "depth": m.depth, **meta}, [arr]


def _reconstruction_parse(common: dict, h: dict, payload: list) -> Reconstruction:
    return Reconstruction(cluster_id=_int(h, "cluster", 0), cue_modality=_name(h, "cue"), data=_array(h, payload),
                          internal=_bool(h, "internal"), depth=_int(h, "depth", 0, 1 << 20), **common)


def _cluster_change_header(m: ClusterChange) -> tuple[dict, list]:
    return {"created": list(m.created), "deleted": list(m.deleted)}, []


def _cluster_change_parse(common: dict, h: dict, payload: list) -> ClusterChange:
    _no_payload(payload)
    return ClusterChange(created=_ints(h, "created"), deleted=_ints(h, "deleted"), **common)


def _frame_header(m: Frame) -> tuple[dict, list]:
    meta, arr = _as_payload(m.data)
    return meta, [arr]


def _frame_parse(common: dict, h: dict, payload: list) -> Frame:
    return Frame(data=_array(h, payload), **common)


def _weights_header(m: Weights) -> tuple[dict, list]:
    meta, arr = _as_payload(m.data)
    return {"target": m.target, "rows": list(m.rows), "cols": list(m.cols), **meta}, [arr]


def _weights_parse(common: dict, h: dict, payload: list) -> Weights:
    data = _array(h, payload)
    rows, cols = _ints(h, "rows"), _ints(h, "cols")
    if data.shape != (len(rows), len(cols)):
        raise WireError(f"weights of shape {data.shape} do not match {len(rows)} rows x {len(cols)} columns")
    return Weights(target=_name(h, "target"), rows=rows, cols=cols, data=data, **common)


def _credit_header(m: Credit) -> tuple[dict, list]:
    return {}, []


def _credit_parse(common: dict, h: dict, payload: list) -> Credit:
    _no_payload(payload)
    return Credit(**common)


def _control_header(m: Control) -> tuple[dict, list]:
    return {"cmd": m.command, "args": _check_args(m.args)}, []


def _control_parse(common: dict, h: dict, payload: list) -> Control:
    _no_payload(payload)
    command, args = _name(h, "cmd"), _check_args(h.get("args"))
    _check_fields(args, CONTROL_ARGS.get(command, {}), f"control {command!r}")
    return Control(command=command, args=args, **common)


def _stats_header(m: Stats) -> tuple[dict, list]:
    return {"values": _check_args(m.values)}, []


def _stats_parse(common: dict, h: dict, payload: list) -> Stats:
    _no_payload(payload)
    values = _check_args(h.get("values"))
    _check_fields(values, STATS_FIELDS, "stats")
    return Stats(values=values, **common)


_VALUE_TYPES = (bool, int, float, str)


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
    "clock": {"t0": _COUNT}, "clock_reply": {"to": _TEXT, "t0": _COUNT, "t1": _COUNT, "t2": _COUNT},
}
STATS_FIELDS: dict[str, tuple] = {  # the fields processes and `cdz top` read; others are any flat scalar
    **dict.fromkeys(("role", "modality", "device", "source"), _TEXT),
    **dict.fromkeys(("stalled", "eof", "playing", "finished", "sleeping", "clock_known", "stamps_events"), _FLAG),
    **dict.fromkeys(("gen", "bad_messages", "stale_gen", "next_seq", "learned", "nodes", "clusters", "queue",
                     "processed", "sent", "acked", "total", "next", "experience", "session_heard", "recons", "rejected", "lost",
                     "resent", "duplicates", "dropped_oldest", "sequence_jumps", "ahead", "refused_clusters",
                     "clock_jumps", "clock_exchanges"), _COUNT),
    **dict.fromkeys(("rate_per_s", "latency_p50_ms", "latency_p99_ms", "uptime_s", "fps", "clock_offset_ms",
                     "clock_uncertainty_ms"), _NUMBER),
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


_CODECS: dict[str, tuple] = {  # kind -> (header of a message, message of a parsed header)
    "stimulus": (_stimulus_header, _stimulus_parse), "excite": (_excitation_header, _excitation_parse),
    "feedback": (_feedback_header, _feedback_parse), "recall": (_recall_header, _recall_parse),
    "recon": (_reconstruction_header, _reconstruction_parse),
    "clusters": (_cluster_change_header, _cluster_change_parse), "frame": (_frame_header, _frame_parse),
    "weights": (_weights_header, _weights_parse), "credit": (_credit_header, _credit_parse),
    "control": (_control_header, _control_parse), "stats": (_stats_header, _stats_parse),
}
assert set(_CODECS) == set(KINDS), "every message kind of agent.core.messages has a codec"
_PER_MODALITY = ("stimulus", "excite", "feedback", "recall", "recon", "clusters", "frame", "weights")
_WITH_PAYLOAD = frozenset({"stimulus", "recon", "frame", "weights"})  # one array frame per message
MAX_BATCH = 4096  # messages in one batch


def topic(kind: str, modality: str = "") -> bytes:
    """The topic a message is published under; subscribe to a prefix of it."""
    if kind in _PER_MODALITY:
        return f"{kind}.{modality}".encode()
    return kind.encode() if not modality else f"{kind}.{modality}".encode()


def encode(msg: Message) -> list:
    """Frames of a message: topic, msgpack header, then the payload array itself (zero copy)."""
    row, payload = _row(msg)
    header = {"v": VERSION, "kind": msg.KIND, "mod": msg.modality, "t": row.pop("t"), "seq": row.pop("seq"),
              "src": msg.source, "gen": int(msg.gen), **row}
    return [_topic_of(msg.KIND, msg.modality, msg.source), msgpack.packb(header, use_bin_type=True), *payload]


def _row(msg: Message) -> tuple[dict, list]:
    """A message's own header fields (all but the shared envelope) and its payload frames."""
    extra, payload = _CODECS[msg.KIND][0](msg)
    return {"t": int(msg.t_ns), "seq": int(msg.seq), **extra}, payload


def _topic_of(kind: str, modality: str, source: str) -> bytes:
    """The topic a message of this envelope travels under (stats: its source's)."""
    return topic(kind, _topic_name(source if kind == "stats" else modality))


def encode_batch(msgs: Sequence[Message], source: str | None = None, gen: int | None = None) -> list:
    """Frames of several messages of one kind and sense: the topic, the batch mark, one header (the
    envelope once, then a row per message) and each one's payload. Sent as from `source` in
    generation `gen` when given (the messages' own are then not read), else all must share theirs."""
    if not 1 <= len(msgs) <= MAX_BATCH:
        raise WireError(f"a batch holds 1 to {MAX_BATCH} messages, not {len(msgs)}")
    first = msgs[0]
    stamped = source is None or gen is None
    source = first.source if source is None else source
    gen = first.gen if gen is None else gen
    rows, payloads = [], []
    for msg in msgs:
        if msg.KIND != first.KIND or msg.modality != first.modality or \
                (stamped and (msg.source != source or msg.gen != gen)):
            raise WireError(f"a batch shares kind, sense, source and generation: {msg.KIND} {msg.modality!r} "
                            f"from {msg.source!r} gen {msg.gen} is not {first.KIND} {first.modality!r} "
                            f"from {source!r} gen {gen}")
        row, payload = _row(msg)
        rows.append(row)
        payloads.extend(payload)
    header = {"v": VERSION, "kind": first.KIND, "mod": first.modality, "src": source, "gen": int(gen), "rows": rows}
    head = msgpack.packb(header, use_bin_type=True)
    if len(head) > MAX_HEADER_BYTES:
        raise BatchTooLarge(f"a batch header of {len(head)} bytes exceeds the receivers' cap of {MAX_HEADER_BYTES}; "
                            "send fewer messages at once (encode_batches)")
    frames = [_topic_of(first.KIND, first.modality, source), b"", head]
    if payloads:  # every array back to back in one frame; each row's dtype and shape say where it ends
        frames.append(b"".join(memoryview(a).cast("B") for a in payloads))
    return frames


def encode_batches(msgs: Sequence[Message], source: str | None = None, gen: int | None = None) -> list[list]:
    """`encode_batch` of `msgs`, in order, cut into as many batches as the receivers' caps need
    (`MAX_BATCH` messages, `MAX_HEADER_BYTES` of header): a dense burst of feedback can hold more
    ids than one header may carry, and a batch a receiver drops would be lost for good."""
    out: list[list] = []
    todo = [list(msgs[i : i + MAX_BATCH]) for i in range(0, len(msgs), MAX_BATCH)]
    while todo:
        part = todo.pop(0)
        try:
            out.append(encode_batch(part, source, gen))
        except BatchTooLarge:
            if len(part) == 1:
                raise
            half = len(part) // 2
            todo[:0] = [part[:half], part[half:]]
    return out


def is_batch(frames: Sequence[Any]) -> bool:
    """Whether frames are a batch (`[topic, b"", header, payload?]`) rather than one message."""
    return len(frames) >= 3 and len(_buffer(frames[1])) == 0


def stats_topic(source: str) -> bytes:
    """The topic of a process's stats: `stats.<source>` where the name is topic-safe, else `stats`."""
    return _topic_of("stats", "", source)


def _topic_name(text: str) -> str:
    return text if _NAME.fullmatch(text or "") else ""


def decode(frames: Sequence[Any]) -> Message:
    """Parse and validate the frames of one message; `WireError` if anything is off."""
    if not 2 <= len(frames) <= 3:
        raise WireError(f"a message has 2 or 3 frames, got {len(frames)}")
    h = _header(frames[1])
    parse, common = _envelope(h, frames[0])
    return parse({**common, "t_ns": _int(h, "t"), "seq": _int(h, "seq", 0)}, h, list(frames[2:]))


def decode_all(frames: Sequence[Any]) -> list[Message]:
    """The messages of a batch, or the one message that is not a batch; `WireError` if any is off."""
    if not is_batch(frames):
        return [decode(frames)]
    h = _header(frames[2])
    parse, common = _envelope(h, frames[0])
    rows = h.get("rows")
    if not isinstance(rows, list) or not 1 <= len(rows) <= MAX_BATCH:
        raise WireError(f"a batch header needs 'rows', a list of 1 to {MAX_BATCH} messages")
    arrays = h["kind"] in _WITH_PAYLOAD
    if len(frames) != 3 + arrays:
        raise WireError(f"a batch of {h['kind']!r} messages has {3 + arrays} frames, got {len(frames)}")
    buf = _buffer(frames[3]) if arrays else memoryview(b"")
    out, at = [], 0
    for row in rows:
        if not isinstance(row, dict):
            raise WireError("each row of a batch must be a msgpack map")
        payload = []
        if arrays:
            end = at + _payload_size(row)
            if end > len(buf):
                raise WireError(f"a batch's payload of {len(buf)} bytes ends before its rows' arrays do")
            payload, at = [buf[at:end]], end
        out.append(parse({**common, "t_ns": _int(row, "t"), "seq": _int(row, "seq", 0)}, row, payload))
    if at != len(buf):
        raise WireError(f"a batch's payload has {len(buf) - at} bytes beyond its rows' arrays")
    return out


def _header(frame: Any) -> dict:
    head = _buffer(frame)
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
    return h


def _envelope(h: dict, topic_frame: Any) -> tuple[Callable, dict]:
    """The kind's parser and the envelope fields every message of the header shares, checked
    against the topic the frames came under."""
    kind = h.get("kind")
    codec = _CODECS.get(kind) if isinstance(kind, str) else None
    if codec is None:
        raise WireError(f"unknown message kind {kind!r}")
    modality = _name(h, "mod", allow_empty=kind not in _PER_MODALITY)
    common = {"modality": modality, "source": _source(h), "gen": _int(h, "gen", 0)}
    want_topic = _topic_of(kind, modality, common["source"])
    if bytes(_buffer(topic_frame)) != want_topic:
        raise WireError(f"topic {bytes(_buffer(topic_frame))[:40]!r} does not match the header ({want_topic!r})")
    return codec[1], common
