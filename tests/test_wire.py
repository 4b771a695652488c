"""agent.runtime.wire: every message kind survives encode -> ZeroMQ -> decode unchanged and without
copying its array, and decode turns every malformed message into a WireError (nothing else),
because receivers count and drop WireErrors but would crash on any other exception."""

from __future__ import annotations

import dataclasses

import msgpack
import numpy as np
import pytest
import zmq
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from agent.core.messages import (KINDS, ClusterChange, Control, Credit, Excitation, Feedback, Frame, Recall, Reconstruction,
                            Stats, Stimulus, Weights)
from agent.runtime.wire import (DTYPES, MAX_BATCH, MAX_DIMS, MAX_HEADER_BYTES, MAX_PAYLOAD_BYTES, BatchTooLarge, WireError,
                                decode, decode_all, encode, encode_batch, encode_batches, is_batch, topic)

pytestmark = pytest.mark.timeout(60)


# --------------------------------------------------------------------------- helpers
def samples() -> dict[str, object]:
    """One message per kind (two for Stimulus/Stats), with non-default values in every field."""
    return {
        "stimulus_uint8": Stimulus(modality="visual", t_ns=1_700_000_000_123_456_789, seq=7,
                                   data=np.arange(12, dtype=np.uint8).reshape(3, 4), source="camera", gen=2,
                                   mseq=5, learn=False, grow=False, internal=True, depth=3),
        "stimulus_int16": Stimulus(modality="audio", t_ns=-5, seq=0, data=np.array([-32768, -1, 0, 32767], np.int16),
                                   source="mic"),
        "excite": Excitation(modality="visual", t_ns=10, seq=11, cluster_id=-1, node_id=42, strength=0.25,
                             source="worker",
                         gen=1, learn=False),
        "feedback": Feedback(modality="audio", t_ns=12, seq=13, node_ids=(1, 2, 3), cluster_ids=(4, -1, 2**62),
                             certainties=(0.0, 0.5, 1.0), source="hub", gen=4),
        "recall": Recall(modality="audio", t_ns=14, seq=15, cluster_id=9, cue_modality="visual", cue_cluster=-1,
                         source="hub", gen=5, internal=True, depth=2),
        "recon": Reconstruction(modality="visual", t_ns=16, seq=17, cluster_id=3, cue_modality="audio",
                       data=np.linspace(-1, 1, 2 * 3 * 4 * 5, dtype=np.float32).reshape(2, 3, 4, 5),
                       source="worker", gen=6, internal=True, depth=1),
        "clusters": ClusterChange(modality="visual", t_ns=18, seq=19, created=(1, 2, 3), deleted=(7,), source="worker"),
        "control": Control(command="rewind",
                           args={"to": 5, "why": "test", "ratio": 0.5, "hard": True, "big": 2**64 - 1},
                           source="supervisor", gen=3, t_ns=20, seq=21),
        "stats": Stats(values={"rate_hz": 12.5, "queue": 3, "ok": True, "state": "run"}, source="worker_visual",
                       t_ns=22, seq=23),
        "stats_odd_source": Stats(values={"n": 1}, source="Worker-1 (pid 7)"),
        "credit": Credit(seq=24, t_ns=25, source="hub", gen=2),
        "frame": Frame(modality="visual", t_ns=26, seq=27, data=np.arange(48, dtype=np.uint8).reshape(4, 4, 3),
                       source="camera"),
        "weights": Weights(modality="visual", t_ns=28, seq=29, target="audio", rows=(3, 5), cols=(1, 2, 9),
                           data=np.full((2, 3), 0.25, np.float32), source="hub"),
    }


EXPECTED_TOPICS = {
    "stimulus_uint8": b"stimulus.visual", "stimulus_int16": b"stimulus.audio", "excite": b"excite.visual",
    "feedback": b"feedback.audio", "recall": b"recall.audio", "recon": b"recon.visual",
    "clusters": b"clusters.visual", "control": b"control", "stats": b"stats.worker_visual",
    "stats_odd_source": b"stats",  # a source that is not a plain name is left out of the topic
    "credit": b"credit",
    "frame": b"frame.visual",
    "weights": b"weights.visual",
}


def assert_same(got, want) -> None:
    """Field-by-field equality (dataclass == cannot compare arrays), arrays by dtype, shape and values."""
    assert type(got) is type(want)
    for f in dataclasses.fields(want):
        a, b = getattr(got, f.name), getattr(want, f.name)
        if isinstance(b, np.ndarray):
            assert isinstance(a, np.ndarray) and a.dtype == b.dtype and a.shape == b.shape, f.name
            assert np.array_equal(a, b), f.name
        else:
            assert a == b and type(a) is type(b), (f.name, a, b)


DELETE = object()


def tamper(msg, *, topic_frame: bytes | None = None, payload: list | None = None, header: bytes | None = None,
           **changes) -> list:
    """The frames of `msg` with header fields changed (or removed with DELETE), or frames replaced."""
    frames = encode(msg)
    h = msgpack.unpackb(frames[1])
    for key, value in changes.items():
        if value is DELETE:
            h.pop(key)
        else:
            h[key] = value
    frames[1] = header if header is not None else msgpack.packb(h, use_bin_type=True)
    if topic_frame is not None:
        frames[0] = topic_frame
    if payload is not None:
        frames[2:] = payload
    return frames


S = samples()


# --------------------------------------------------------------------------- round trips
@pytest.mark.parametrize("name", list(S))
def test_round_trip_in_memory(name):
    """decode(encode(m)) gives back m, field for field."""
    assert_same(decode(encode(S[name])), S[name])


@pytest.mark.parametrize("name", list(S))
def test_topic_of_each_kind(name):
    """Subscribers filter on these prefixes, so the topic must follow kind and modality (or source)."""
    assert encode(S[name])[0] == EXPECTED_TOPICS[name]


def test_topic_function():
    assert topic("stimulus", "visual") == b"stimulus.visual"
    assert topic("control") == b"control"
    assert topic("control", "visual") == b"control.visual"
    assert topic("stats", "hub") == b"stats.hub"


def test_every_kind_has_a_sample():
    """Guards this file: a new message kind must get a round-trip sample here."""
    assert {type(m).KIND for m in S.values()} == set(KINDS)


@pytest.fixture(scope="module")
def pubsub():
    """A PUB/SUB pair over TCP loopback (a real network path, unlike inproc), subscribed to everything."""
    ctx = zmq.Context()
    pub, sub = ctx.socket(zmq.PUB), ctx.socket(zmq.SUB)
    try:
        for s in (pub, sub):
            s.setsockopt(zmq.LINGER, 0)
        port = pub.bind_to_random_port("tcp://127.0.0.1")
        sub.setsockopt(zmq.SUBSCRIBE, b"")
        sub.connect(f"tcp://127.0.0.1:{port}")
        for _ in range(200):  # PUB drops everything until the subscription has arrived: probe until one lands
            pub.send_multipart([b"probe", b""])
            if sub.poll(50):
                break
        else:
            pytest.fail("the SUB socket never received the probe")
        while sub.poll(200):  # drain the extra probes
            sub.recv_multipart()
        yield pub, sub
    finally:
        pub.close(0)
        sub.close(0)
        ctx.term()


@pytest.mark.parametrize("name", list(S))
def test_round_trip_over_tcp_without_copies(pubsub, name):
    """Over a real socket, received with copy=False, the message decodes unchanged and its
    array is a view of the received frame, not a copy."""
    pub, sub = pubsub
    msg = S[name]
    pub.send_multipart(encode(msg), copy=False)
    assert sub.poll(5000), "message did not arrive"
    frames = sub.recv_multipart(copy=False)
    assert isinstance(frames[1], zmq.Frame)
    got = decode(frames)
    assert_same(got, msg)
    if hasattr(msg, "data"):
        frame_bytes = np.frombuffer(frames[2].buffer, dtype=np.uint8)
        assert np.shares_memory(got.data, frame_bytes)
        assert got.data.base is not None  # a view, owning no memory of its own


def test_decoded_array_is_read_only(pubsub):
    pub, sub = pubsub
    pub.send_multipart(encode(S["recon"]), copy=False)
    assert sub.poll(5000)
    assert not decode(sub.recv_multipart(copy=False)).data.flags.writeable


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(hnp.arrays(dtype=st.sampled_from(DTYPES),
                  shape=hnp.array_shapes(min_dims=1, max_dims=MAX_DIMS, min_side=1, max_side=6),
                  elements={"allow_nan": False, "allow_infinity": False}))
def test_any_allowed_array_round_trips(arr):
    """Every allowed dtype and 1..MAX_DIMS dims, any finite values, including non-contiguous input."""
    for data in (arr, arr.T):
        got = decode(encode(Stimulus(modality="visual", t_ns=0, seq=0, data=data))).data
        assert got.dtype == data.dtype and got.shape == data.shape
        assert np.array_equal(got, data)


def test_big_endian_array_round_trips():
    data = np.array([1, 2, 300], dtype=">i2")
    assert np.array_equal(decode(encode(Stimulus(modality="visual", t_ns=0, seq=0, data=data))).data, data)


# --------------------------------------------------------------------------- encode refuses
@pytest.mark.parametrize("data, match", [
    (np.zeros(3, np.float64), "cannot send dtype"),
    (np.zeros(3, np.int64), "cannot send dtype"),
    (np.zeros((1,) * (MAX_DIMS + 1), np.uint8), "cannot send ndarray of shape"),
    (np.zeros((0, 3), np.uint8), "cannot send ndarray of shape"),
])
def test_encode_refuses_arrays_the_schema_forbids(data, match):
    with pytest.raises(WireError, match=match):
        encode(Stimulus(modality="visual", t_ns=0, seq=0, data=data))


@pytest.mark.parametrize("args", [{"a": [1]}, {"a": {"b": 1}}, {"a": float("nan")}, {1: 2}, {"a": b"raw"}])
def test_encode_refuses_control_args_that_are_not_flat_scalars(args):
    with pytest.raises(WireError, match="args"):
        encode(Control(command="go", args=args))


# --------------------------------------------------------------------------- decode refuses
def with_payload(msg, payload: np.ndarray) -> list:
    """Frames of `msg` with its payload swapped for `payload` (encode itself refuses NaN)."""
    return encode(msg)[:2] + [payload]


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_encode_refuses_non_finite_payloads(value):
    """A sender learns at once that receivers would drop its message."""
    data = np.ones(4, np.float32)
    data[1] = value
    with pytest.raises(WireError, match="NaN or inf"):
        encode(Stimulus(modality="audio", t_ns=0, seq=0, data=data))


def _cases():
    stim, exc, fb, ctl = S["stimulus_uint8"], S["excite"], S["feedback"], S["control"]
    nan_payload = np.ones(6, np.float32)
    nan_payload[4] = np.nan
    inf_payload = np.ones(6, np.float32)
    inf_payload[0] = -np.inf
    f32 = Stimulus(modality="audio", t_ns=0, seq=0, data=np.ones(6, np.float32))
    good_header = encode(stim)[1]
    cases = {
        # version, kind, names
        "version 2": (tamper(stim, v=2), "unsupported wire version 2"),
        "version missing": (tamper(stim, v=DELETE), "unsupported wire version None"),
        "version as text": (tamper(stim, v="1"), "unsupported wire version"),
        "unknown kind": (tamper(stim, kind="telepathy"), "unknown message kind 'telepathy'"),
        "kind not a string": (tamper(stim, kind=3), "unknown message kind 3"),
        "modality uppercase": (tamper(stim, mod="Visual"), "'mod' must be a lowercase name"),
        "modality starts with digit": (tamper(stim, mod="2d"), "'mod' must be a lowercase name"),
        "modality too long": (tamper(stim, mod="v" * 33), "'mod' must be a lowercase name"),
        "modality with dot": (tamper(stim, mod="visual.x"), "'mod' must be a lowercase name"),
        "modality not text": (tamper(stim, mod=7), "'mod' must be a lowercase name"),
        "modality empty": (tamper(stim, mod="", topic_frame=b"stimulus."), "'mod' must be a lowercase name"),
        "cue modality bad": (tamper(S["recall"], cue="Visual"), "'cue' must be a lowercase name"),
        "command bad": (tamper(ctl, cmd="Go!"), "'cmd' must be a lowercase name"),
        "source too long": (tamper(stim, src="s" * 65), "'src' must be a string of at most 64"),
        "source not text": (tamper(stim, src=5), "'src' must be a string"),
        # topic
        "topic of another modality": (tamper(stim, topic_frame=b"stimulus.audio"), "does not match the header"),
        "topic of another kind": (tamper(stim, topic_frame=b"excite.visual"), "does not match the header"),
        "topic empty": (tamper(stim, topic_frame=b""), "does not match the header"),
        "stats topic without source": (tamper(S["stats"], topic_frame=b"stats"), "does not match the header"),
        # integers
        "seq float": (tamper(stim, seq=1.5), "'seq' must be an integer"),
        "seq text": (tamper(stim, seq="3"), "'seq' must be an integer"),
        "seq bool": (tamper(stim, seq=True), "'seq' must be an integer"),
        "seq negative": (tamper(stim, seq=-1), "'seq' must be an integer in \\[0, "),
        "seq missing": (tamper(stim, seq=DELETE), "'seq' must be an integer"),
        "t beyond int64": (tamper(stim, t=2**63), "'t' must be an integer"),
        "gen negative": (tamper(stim, gen=-1), "'gen' must be an integer"),
        "depth too deep": (tamper(stim, depth=(1 << 20) + 1), "'depth' must be an integer"),
        "cluster below -1": (tamper(exc, cluster=-2), "'cluster' must be an integer"),
        "learn as int": (tamper(stim, learn=1), "'learn' must be true or false"),
        # floats
        "strength NaN": (tamper(exc, strength=float("nan")), "'strength' must be a finite number"),
        "strength inf": (tamper(exc, strength=float("inf")), "'strength' must be a finite number"),
        "strength -inf": (tamper(exc, strength=float("-inf")), "'strength' must be a finite number"),
        "strength text": (tamper(exc, strength="1"), "'strength' must be a finite number"),
        "strength negative": (tamper(exc, strength=-0.5), "'strength' must be >= 0"),
        "certainty NaN": (tamper(fb, certainty=[0.5, float("nan"), 1.0]), "non-finite"),
        "stats value inf": (tamper(S["stats"], values={"rate": float("inf")}), "must be a finite number"),
        # feedback lists
        "fewer clusters than nodes": (tamper(fb, clusters=[1, 2]), "as many clusters as nodes"),
        "more clusters than nodes": (tamper(fb, clusters=[1, 2, 3, 4]), "as many clusters as nodes"),
        "fewer certainties": (tamper(fb, certainty=[0.5, 0.5]), "'certainty' must be a list of 3 numbers"),
        "nodes not a list": (tamper(fb, nodes=3), "'nodes' must be a list"),
        "node id below -1": (tamper(fb, nodes=[1, -2, 3]), "'nodes' holds a bad id -2"),
        "node id float": (tamper(fb, nodes=[1, 2.0, 3]), "'nodes' holds a bad id"),
        "certainty above 1": (tamper(fb, certainty=[0.5, 1.5, 1.0]), "certainties must lie in \\[0, 1\\]"),
        "certainty below 0": (tamper(fb, certainty=[-0.01, 0.5, 1.0]), "certainties must lie in \\[0, 1\\]"),
        "created not ints": (tamper(S["clusters"], created=["a"]), "'created' holds a bad id"),
        # payload
        "payload one byte short": (tamper(stim, payload=[bytes(11)]), "payload has 11 bytes.*need 12"),
        "payload one byte long": (tamper(stim, payload=[bytes(13)]), "payload has 13 bytes.*need 12"),
        "payload size for another dtype": (tamper(stim, dtype="int16"), "payload has 12 bytes.*need 24"),
        "dtype float64": (tamper(stim, dtype="float64"), "payload dtype must be one of"),
        "dtype object": (tamper(stim, dtype="object"), "payload dtype must be one of"),
        "dtype missing": (tamper(stim, dtype=DELETE), "payload dtype must be one of"),
        "too many dims": (tamper(stim, shape=[1, 1, 1, 3, 4]), "payload shape must be 1 to 4"),
        "zero dims": (tamper(stim, shape=[]), "payload shape must be 1 to 4"),
        "zero side": (tamper(stim, shape=[0, 12]), "payload shape must be 1 to 4"),
        "negative side": (tamper(stim, shape=[-3, -4]), "payload shape must be 1 to 4"),
        "float side": (tamper(stim, shape=[3.0, 4]), "payload shape must be 1 to 4"),
        "side over cap": (tamper(stim, shape=[MAX_PAYLOAD_BYTES + 1]), "payload shape must be 1 to 4"),
        "payload over cap": (tamper(f32, shape=[MAX_PAYLOAD_BYTES // 4 + 1]), "exceeds the cap"),
        "payload over cap in 2-D": (tamper(f32, shape=[4096, 4096]), "exceeds the cap"),
        "payload frame missing": (tamper(stim, payload=[]), "expected exactly one payload frame, got 0"),
        "NaN in payload": (with_payload(Stimulus(modality="audio", t_ns=0, seq=0, data=np.ones(6, np.float32)),
                                        nan_payload), "NaN or inf"),
        "inf in payload": (with_payload(Reconstruction(modality="audio", t_ns=0, seq=0, cluster_id=1,
                                                       cue_modality="visual", data=np.ones(6, np.float32)),
                                        inf_payload),
                           "NaN or inf"),
        "extra frame on excite": (encode(exc) + [b"x"], "carries no payload, got 1 extra"),
        "extra frame on control": (encode(ctl) + [b""], "carries no payload, got 1 extra"),
        "four frames": (encode(stim) + [b"x"], "a message has 2 or 3 frames, got 4"),
        "one frame": ([b"stimulus.visual"], "a message has 2 or 3 frames, got 1"),
        "no frame": ([], "a message has 2 or 3 frames, got 0"),
        # header encoding
        "header unused msgpack byte": (tamper(stim, header=b"\xc1"), "header is not valid msgpack"),
        "header truncated": (tamper(stim, header=good_header[:-3]), "header is not valid msgpack"),
        "header with trailing bytes": (tamper(stim, header=good_header + b"\x00"), "header is not valid msgpack"),
        "header with int map keys": (tamper(stim, header=msgpack.packb({1: 2})), "header is not valid msgpack"),
        "header empty": (tamper(stim, header=b""), "header is not valid msgpack"),
        "header a list": (tamper(stim, header=msgpack.packb([1, "stimulus"])), "header must be a msgpack map"),
        "header an int": (tamper(stim, header=msgpack.packb(1)), "header must be a msgpack map"),
        "header over the cap": (tamper(stim, pad="x" * MAX_HEADER_BYTES), "header of \\d+ bytes exceeds the cap"),
        "header frame a str": ([b"control", "not bytes"], "frame of unexpected type str"),
        "topic frame an int": ([12, encode(ctl)[1]], "frame of unexpected type int"),
        # control / stats args
        "args value a list": (tamper(ctl, args={"a": [1, 2]}), "args value of 'a'"),
        "args value a map": (tamper(ctl, args={"a": {"b": 1}}), "args value of 'a'"),
        "args value bytes": (tamper(ctl, args={"a": b"\x00"}), "args value of 'a'"),
        "args value nil": (tamper(ctl, args={"a": None}), "args value of 'a'"),
        "args value long text": (tamper(ctl, args={"a": "x" * 1025}), "args value of 'a'"),
        "args key bytes": (tamper(ctl, args={b"a": 1}), "bad args key b'a'"),
        "args key too long": (tamper(ctl, args={"k" * 65: 1}), "bad args key"),
        "args too many": (tamper(ctl, args={f"k{i}": i for i in range(257)}), "at most 256 entries"),
        "args not a map": (tamper(ctl, args=[1]), "args must be a map"),
        "args missing": (tamper(ctl, args=DELETE), "args must be a map"),
        "stats values nested": (tamper(S["stats"], values={"q": [1]}), "args value of 'q'"),
    }
    return cases


CASES = _cases()


@pytest.mark.parametrize("name", list(CASES))
def test_decode_rejects(name):
    """Each malformed message raises WireError (a ValueError) whose text names the problem."""
    frames, match = CASES[name]
    with pytest.raises(WireError, match=match) as err:
        decode(frames)
    assert isinstance(err.value, ValueError)


@pytest.mark.parametrize("mutate", ["short payload", "seq", "nan", "topic"])
def test_rejections_hold_for_zmq_frames(pubsub, mutate):
    """The same checks apply to frames received with copy=False (zmq.Frame, not bytes)."""
    pub, sub = pubsub
    bad = {"short payload": tamper(S["stimulus_uint8"], payload=[bytes(5)]),
           "seq": tamper(S["excite"], seq=-3),
           "nan": with_payload(Stimulus(modality="audio", t_ns=0, seq=0, data=np.ones(2, np.float32)),
                               np.array([1.0, np.nan], np.float32)),
           "topic": tamper(S["control"], topic_frame=b"control.visual")}[mutate]
    pub.send_multipart(bad)
    assert sub.poll(5000)
    with pytest.raises(WireError):
        decode(sub.recv_multipart(copy=False))


def test_shape_whose_size_overflows_int64_is_a_wire_error():
    frames = tamper(S["stimulus_uint8"], shape=[2**22, 2**21, 2**21], payload=[b""])
    with pytest.raises(WireError):
        decode(frames)


def test_name_with_trailing_newline_is_rejected():
    frames = tamper(S["stimulus_uint8"], mod="visual\n", topic_frame=b"stimulus.visual\n")
    with pytest.raises(WireError, match="lowercase name"):
        decode(frames)


# --------------------------------------------------------------------------- property tests
# msgpack-able values, biased towards ones that are nearly valid for some header field
NEAR_VALID = st.sampled_from([0, 1, -1, 2, 2**63 - 1, 2**63, 2**64 - 1, -2**63, 1.0, 0.5, -0.0, True, False, None,
                              "", "visual", "audio", "uint8", "int16", "float32", "go", [], [1], [3, 4], [0.5],
                              [12], [1, 1, 1, 12], {}, {"a": 1}, b"", b"\x00"])
SCALARS = (st.none() | st.booleans() | st.integers(-2**63, 2**64 - 1) | st.floats() | st.text(max_size=40)
           | st.binary(max_size=40))
VALUES = st.recursive(NEAR_VALID | SCALARS,
                      lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=8), inner,
                                                                                  max_size=4),
                      max_leaves=12)
HEADER_KEYS = sorted({k for m in S.values() for k in msgpack.unpackb(encode(m)[1])} | {"pad"})


def decode_or_wire_error(frames):
    """The contract: a message, or WireError; any other exception fails the test."""
    try:
        return decode(frames)
    except WireError:
        return None


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(topic_frame=st.sampled_from([t for t in EXPECTED_TOPICS.values()]) | st.binary(max_size=24),
       header=st.binary(max_size=256),
       payload=st.lists(st.binary(max_size=64), max_size=2))
def test_random_bytes_never_raise_anything_but_wire_error(topic_frame, header, payload):
    decode_or_wire_error([topic_frame, header, *payload])


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(name=st.sampled_from(list(S)),
       edits=st.lists(st.tuples(st.sampled_from(HEADER_KEYS), st.just(DELETE) | VALUES), min_size=1, max_size=3))
def test_mutated_headers_never_raise_anything_but_wire_error(name, edits):
    """Replace or delete header fields of a valid message; whatever still decodes must re-encode to itself."""
    frames = encode(S[name])
    h = msgpack.unpackb(frames[1])
    for key, value in edits:
        if value is DELETE:
            h.pop(key, None)
        else:
            h[key] = value
    frames[1] = msgpack.packb(h, use_bin_type=True)
    msg = decode_or_wire_error(frames)
    if msg is not None:
        assert_same(decode(encode(msg)), msg)


@settings(max_examples=200, deadline=None)
@given(name=st.sampled_from(list(S)), value=VALUES)
def test_header_replaced_by_any_value_is_a_wire_error_or_message(name, value):
    """A header that is some other msgpack value (or a map of junk) never crashes decode."""
    frames = encode(S[name])
    frames[1] = msgpack.packb(value, use_bin_type=True)
    assert decode_or_wire_error(frames) is None or isinstance(value, dict)


def test_header_caps_are_what_the_schema_says():
    """A header just under the cap still decodes: the cap is about size, not about the field."""
    msg = S["control"]
    frames = encode(msg)
    h = msgpack.unpackb(frames[1])
    base = len(msgpack.packb({**h, "pad": ""}, use_bin_type=True))
    h["pad"] = "x" * (MAX_HEADER_BYTES - base - 4)  # str8/16/32 prefixes differ by a few bytes
    frames[1] = msgpack.packb(h, use_bin_type=True)
    assert len(frames[1]) <= MAX_HEADER_BYTES
    assert_same(decode(frames), msg)


def test_payload_at_the_cap_decodes():
    """Exactly MAX_PAYLOAD_BYTES is allowed (the cap is inclusive)."""
    data = np.zeros(MAX_PAYLOAD_BYTES, np.uint8)
    got = decode(encode(Stimulus(modality="visual", t_ns=0, seq=0, data=data)))
    assert got.data.nbytes == MAX_PAYLOAD_BYTES and not got.data.any()


# ---------------------------------------------------------------------- what processes act on
@pytest.mark.parametrize("msg, says", [
    (Stats(values={"bad_messages": "abc"}), "bad_messages"),  # stopped `cdz top` ("error: clusters")
    (Stats(values={"nodes": -5}), "nodes"),
    (Stats(values={"role": 3}), "role"),
    (Stats(values={"stalled": 1}), "stalled"),
    (Stats(values={"rate_per_s": "fast"}), "rate_per_s"),
    (Control(command="rewind", args={"gen": "x", "step": 3}), "gen"),
    (Control(command="stop", args={"to": 7}), "to"),
    (Control(command="checkpoint", args={"step": -1}), "step"),
    (Control(command="saved", args={"step": 4, "part": 1.5}), "part"),
    (Control(command="go", args={"gen": True}), "gen"),  # a bool is no generation
])
def test_well_framed_messages_with_wrongly_typed_fields_are_refused(msg, says):
    with pytest.raises(WireError, match=says):
        decode(encode(msg))


def test_fields_nobody_reads_may_be_any_scalar_and_missing_ones_may_be_missing():
    assert decode(encode(Stats(values={"nodes": 5}))).values == {"nodes": 5}  # top shows the rest as "-"
    assert decode(encode(Stats(values={"mood": "fine", "ok": True}))).values == {"mood": "fine", "ok": True}
    assert decode(encode(Control(command="mark", args={"anything": "goes"}))).args == {"anything": "goes"}
    assert decode(encode(Control(command="rewind", args={"gen": 2, "step": 0}))).args == {"gen": 2, "step": 0}


# --------------------------------------------------------------------------- batches
def _three(msg):
    """Three messages like `msg` (same kind, sense, source and generation), with other times and seqs."""
    return [dataclasses.replace(msg, t_ns=msg.t_ns + k, seq=msg.seq + k) for k in range(3)]


@pytest.mark.parametrize("name", sorted(S))
def test_a_batch_of_each_kind_decodes_to_its_messages_in_order(name):
    msgs = _three(S[name])
    frames = encode_batch(msgs)
    assert frames[0] == EXPECTED_TOPICS[name] and frames[1] == b""
    arrays = [getattr(m, f.name) for m in msgs for f in dataclasses.fields(m)
              if isinstance(getattr(m, f.name), np.ndarray)]
    assert len(frames) == 3 + bool(arrays)  # one header for all, then every array in one frame
    if arrays:
        assert len(frames[3]) == sum(a.nbytes for a in arrays)
    got = decode_all(frames)
    assert len(got) == 3
    for g, m in zip(got, msgs):
        assert_same(g, m)


def test_a_single_message_decodes_alone_through_decode_all():
    assert_same(decode_all(encode(S["excite"]))[0], S["excite"])


def test_a_batch_sent_as_a_process_takes_its_source_and_generation():
    plain = [Excitation(modality="audio", t_ns=k, seq=k, cluster_id=k, node_id=k) for k in range(3)]  # not stamped
    got = decode_all(encode_batch(plain, source="worker_audio", gen=7))
    assert [(g.source, g.gen, g.seq) for g in got] == [("worker_audio", 7, k) for k in range(3)]


@pytest.mark.parametrize("msgs", [
    [S["excite"], dataclasses.replace(S["excite"], modality="audio")],  # two senses
    [S["excite"], dataclasses.replace(S["excite"], gen=9)],  # two generations
    [S["excite"], dataclasses.replace(S["excite"], source="other")],  # two sources
    [S["excite"], S["clusters"]],  # two kinds
    [],
])
def test_encode_batch_refuses_what_one_header_cannot_say(msgs):
    with pytest.raises(WireError, match="batch"):
        encode_batch(msgs)


def _rebatched(frames: list, **edits) -> list:
    h = msgpack.unpackb(frames[2])
    h.update(edits)
    return [frames[0], b"", msgpack.packb(h, use_bin_type=True), *frames[3:]]


@pytest.mark.parametrize("case", ["bad row", "row not a map", "no rows", "too many rows", "payload missing",
                                  "payload extra", "payload short", "payload long", "bad row shape", "wrong topic",
                                  "bad envelope"])
def test_a_bad_batch_is_one_wire_error(case):
    exc = encode_batch(_three(S["excite"]))
    stim = encode_batch(_three(S["stimulus_uint8"]))
    rows = msgpack.unpackb(exc[2])["rows"]
    frames = {
        "bad row": _rebatched(exc, rows=[rows[0], {**rows[1], "cluster": -7}, rows[2]]),
        "row not a map": _rebatched(exc, rows=[rows[0], 5]),
        "no rows": _rebatched(exc, rows=[]),
        "too many rows": _rebatched(exc, rows=[rows[0]] * (MAX_BATCH + 1)),
        "payload missing": stim[:-1],
        "payload extra": exc + [b"\x00" * 4],
        "payload short": [*stim[:3], bytes(stim[3])[:-1]],
        "payload long": [*stim[:3], bytes(stim[3]) + b"\x00"],
        "bad row shape": _rebatched(stim, rows=[{**r, "shape": [3, 5]} for r in msgpack.unpackb(stim[2])["rows"]]),
        "wrong topic": [b"excite.audio", *exc[1:]],
        "bad envelope": _rebatched(exc, gen=-1),
    }[case]
    with pytest.raises(WireError):
        decode_all(frames)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(name=st.sampled_from(list(S)),
       edits=st.lists(st.tuples(st.sampled_from(HEADER_KEYS), st.just(DELETE) | VALUES), min_size=1, max_size=3),
       row=st.integers(0, 2))
def test_mutated_batch_rows_never_raise_anything_but_wire_error(name, edits, row):
    """Edit one row of a valid batch; whatever still decodes must re-encode to itself, message by message."""
    frames = encode_batch(_three(S[name]))
    h = msgpack.unpackb(frames[2])
    for key, value in edits:
        if value is DELETE:
            h["rows"][row].pop(key, None)
        else:
            h["rows"][row][key] = value
    frames[2] = msgpack.packb(h, use_bin_type=True)
    try:
        msgs = decode_all(frames)
    except WireError:
        return
    for msg in msgs:
        assert_same(decode(encode(msg)), msg)


def test_a_burst_too_large_for_one_header_goes_out_as_several_batches_in_order():
    """Dense pairing gives a hub burst of feedback whose ids overflow one header; receivers would drop
    such a batch (and a lossless run would lose that feedback for good), so it is cut up instead."""
    ids = tuple(range(2**40, 2**40 + 120))
    burst = [Feedback(modality="audio", t_ns=k, seq=k, node_ids=ids, cluster_ids=ids, certainties=(0.5,) * len(ids),
                      source="hub", gen=1) for k in range(1000)]
    with pytest.raises(BatchTooLarge):
        encode_batch(burst)
    batches = encode_batches(burst)
    assert len(batches) > 1 and all(len(b[2]) <= MAX_HEADER_BYTES for b in batches)
    got = [m for b in batches for m in decode_all(b)]
    assert [m.seq for m in got] == list(range(1000)) and got[-1].node_ids == ids
    many = [dataclasses.replace(S["excite"], seq=k) for k in range(MAX_BATCH + 5)]
    assert [len(decode_all(b)) for b in encode_batches(many)] == [MAX_BATCH, 5]


def test_a_stats_batch_sent_as_a_process_is_under_that_process_topic():
    frames = encode_batch([Stats(values={"queue": 1}), Stats(values={"queue": 2})], source="hub", gen=0)
    assert frames[0] == b"stats.hub" and [m.values["queue"] for m in decode_all(frames)] == [1, 2]


def test_a_batch_of_one_is_still_a_batch():
    frames = encode_batch([S["excite"]])
    assert is_batch(frames) and not is_batch(encode(S["excite"]))
    assert_same(decode_all(frames)[0], S["excite"])
