"""agent.runtime.bus: addresses, the XSUB/XPUB forwarder between clients, dropping of bad messages,
and CurveZMQ keys that shut out every process without the client key pair.

Every test uses real sockets on loopback (tcp or ipc), private zmq contexts and receive
timeouts, and closes everything it opened."""

from __future__ import annotations

import contextlib
import os
import random
import stat
import threading
import time

import msgpack
import numpy as np
import pytest
import zmq

from agent.runtime.bus import BusAddress, BusClient, BusError, Forwarder, Keys, free_tcp_bus, make_keys
from agent.core.messages import Control, Excitation, Stimulus
from agent.runtime.wire import WireError, decode, encode, encode_batch

pytestmark = pytest.mark.timeout(60)


# --------------------------------------------------------------------------- helpers
@contextlib.contextmanager
def running_forwarder(address: str, keys=None):
    """A Forwarder on a private context, run() in a daemon thread, torn down completely."""
    ctx = zmq.Context()
    fwd = Forwarder(address, keys=keys, ctx=ctx)
    thread = threading.Thread(target=fwd.run, daemon=True, name="forwarder")
    thread.start()
    try:
        yield fwd
    finally:
        if fwd.keys is None:
            # thread-safe: ending the context makes run() return, then its sockets are closed here
            ender = threading.Thread(target=ctx.term, daemon=True)
            ender.start()
            thread.join(10)
            fwd.close()
        else:
            # with keys, ending the context first would leave close() failing and term() hanging
            # (see the report); close() first, as `cdz bus` does
            fwd.close()
            thread.join(10)
            ender = threading.Thread(target=ctx.term, daemon=True)
            ender.start()
        ender.join(10)
        assert not thread.is_alive(), "Forwarder.run() did not return"
        assert not ender.is_alive(), "the forwarder's context did not terminate (a socket was left open)"


@pytest.fixture
def clients():
    """Make BusClients on a private context; all are closed and the context ended after the test."""
    ctx = zmq.Context()
    made: list[BusClient] = []

    def make(address: str, name: str, topics=(), keys=None) -> BusClient:
        client = BusClient(address, name, topics=list(topics), keys=keys, ctx=ctx)
        made.append(client)
        return client

    try:
        yield make
    finally:
        for c in made:
            c.close()
        ctx.term()


@pytest.fixture
def raw_pub():
    """Plain zmq PUB sockets (no validation at all), closed after the test."""
    ctx = zmq.Context()
    made = []

    def make(endpoint: str) -> zmq.Socket:
        s = ctx.socket(zmq.PUB)
        s.setsockopt(zmq.LINGER, 0)
        s.connect(endpoint)
        made.append(s)
        return s

    try:
        yield make
    finally:
        for s in made:
            s.close(0)
        ctx.term()


def stimulus(modality: str = "visual", seq: int = 1, source: str = "sensor") -> Stimulus:
    return Stimulus(modality=modality, t_ns=time.time_ns(), seq=seq, data=np.arange(seq, seq + 6, dtype=np.int16),
                    source=source)


def receive_until_mark(client: BusClient, mark: str = "mark", timeout_s: float = 10.0) -> list:
    """Everything `client` receives (hellos excepted) until Control(mark); fails on timeout."""
    got = []
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        msg = client.recv(timeout_ms=100)
        if isinstance(msg, Control) and msg.command == mark:
            return got
        if msg is not None and not (isinstance(msg, Control) and msg.command == "hello"):
            got.append(msg)
    pytest.fail(f"{client.name} did not receive Control({mark!r}) within {timeout_s} s")


def receive_for(client: BusClient, seconds: float) -> list:
    """Everything `client` receives within `seconds`, hellos excepted."""
    got = []
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        msg = client.recv(timeout_ms=max(1, int(left * 1000)))
        if msg is not None and not (isinstance(msg, Control) and msg.command == "hello"):
            got.append(msg)
    return got


def wait_until_heard(pub: zmq.Socket, client: BusClient) -> None:
    """A fresh PUB drops everything until the subscriptions reach it: probe until one arrives, then drain."""
    for _ in range(200):
        pub.send_multipart(encode(Control(command="probe")))
        msg = client.recv(timeout_ms=50)
        if isinstance(msg, Control) and msg.command == "probe":
            break
    else:
        pytest.fail("the raw publisher never reached the client")
    while client.recv(timeout_ms=200) is not None:  # extra probes and late hellos
        pass


def same_stimulus(a, b) -> bool:
    return (type(a) is type(b) is Stimulus and (a.modality, a.seq, a.source) == (b.modality, b.seq, b.source)
            and np.array_equal(a.data, b.data))


# --------------------------------------------------------------------------- addresses
@pytest.mark.parametrize("text, pub, sub, loopback", [
    ("tcp://127.0.0.1:5570", "tcp://127.0.0.1:5570", "tcp://127.0.0.1:5571", True),
    ("tcp://127.0.0.9:1", "tcp://127.0.0.9:1", "tcp://127.0.0.9:2", True),
    ("tcp://localhost:6000", "tcp://localhost:6000", "tcp://localhost:6001", True),
    ("tcp://[::1]:6000", "tcp://[::1]:6000", "tcp://[::1]:6001", True),
    ("tcp://::1:65534", "tcp://::1:65534", "tcp://::1:65535", True),
    ("tcp://10.1.2.3:5570", "tcp://10.1.2.3:5570", "tcp://10.1.2.3:5571", False),
    ("tcp://0.0.0.0:5570", "tcp://0.0.0.0:5570", "tcp://0.0.0.0:5571", False),
    ("tcp://*:5570", "tcp://*:5570", "tcp://*:5571", False),
    ("tcp://example.org:5570", "tcp://example.org:5570", "tcp://example.org:5571", False),
    ("ipc:///tmp/cdz-bus", "ipc:///tmp/cdz-bus.in", "ipc:///tmp/cdz-bus.out", True),
])
def test_parse_address(text, pub, sub, loopback):
    """tcp uses PORT and PORT+1, ipc two files; only loopback and ipc may run without keys."""
    a = BusAddress.parse(text)
    assert (a.text, a.pub, a.sub, a.loopback) == (text, pub, sub, loopback)


@pytest.mark.parametrize("text, match", [
    ("", "must start with tcp:// or ipc://"),
    ("127.0.0.1:5570", "must start with tcp:// or ipc://"),
    ("udp://127.0.0.1:5570", "must start with tcp:// or ipc://"),
    ("ipc://", "lacks a path"),
    ("tcp://127.0.0.1", "must look like tcp://HOST:PORT"),
    ("tcp://127.0.0.1:", "must look like tcp://HOST:PORT"),
    ("tcp://127.0.0.1:http", "must look like tcp://HOST:PORT"),
    ("tcp://127.0.0.1:-5", "must look like tcp://HOST:PORT"),
    ("tcp://127.0.0.1:65535", "must look like tcp://HOST:PORT"),  # PORT+1 would not exist
    ("tcp://:5570", "must look like tcp://HOST:PORT"),
])
def test_parse_bad_address(text, match):
    with pytest.raises(BusError, match=match):
        BusAddress.parse(text)


def test_parse_superscript_port_is_a_bus_error():
    with pytest.raises(BusError):
        BusAddress.parse("tcp://127.0.0.1:²")


def test_port_0_binds_two_free_consecutive_ports_and_reports_them():
    first = Forwarder("tcp://127.0.0.1:0")
    second = Forwarder("tcp://127.0.0.1:0")
    try:
        for fwd in (first, second):
            pub, sub = (int(e.rpartition(":")[2]) for e in (fwd.address.pub, fwd.address.sub))
            assert pub > 0 and sub == pub + 1 and fwd.address.text == f"tcp://127.0.0.1:{pub}"
        assert first.address.pub != second.address.pub
        with pytest.raises(BusError, match="cannot bind"):  # the reported address really is taken
            Forwarder(first.address.text).close()
    finally:
        first.close()
        second.close()


def test_free_tcp_bus_gives_two_bindable_ports():
    a = BusAddress.parse(free_tcp_bus())
    assert a.loopback
    ctx = zmq.Context()
    socks = [ctx.socket(zmq.PULL) for _ in range(2)]
    try:
        socks[0].bind(a.pub)
        socks[1].bind(a.sub)
    finally:
        for s in socks:
            s.close(0)
        ctx.term()


# --------------------------------------------------------------------------- forwarding
@pytest.fixture(params=["tcp", "ipc"])
def bus_address(request, tmp_path):
    return free_tcp_bus() if request.param == "tcp" else f"ipc://{tmp_path}/bus"


def test_forwarder_carries_subscribed_topics_only(bus_address, clients):
    """A client gets what it subscribed to (and control), in order; other topics are filtered out."""
    with running_forwarder(bus_address):
        listener = clients(bus_address, "listener", topics=[b"stimulus.visual"])
        listener.handshake(timeout_s=10)
        talker = clients(bus_address, "talker")
        talker.handshake(timeout_s=10)
        sent = [stimulus("visual", 1), stimulus("audio", 2),
                Excitation(modality="visual", t_ns=0, seq=3, cluster_id=1, node_id=2),
                stimulus("visual", 4)]
        for msg in sent:
            talker.send(msg)
        talker.send(Control(command="mark"))
        got = receive_until_mark(listener)
        assert len(got) == 2 and same_stimulus(got[0], sent[0]) and same_stimulus(got[1], sent[3])
        assert listener.dropped == 0


def test_subscribe_later_and_large_payload(clients):
    """subscribe() adds a topic on a live client; a 1 MiB payload (sent without copying) arrives intact."""
    address = free_tcp_bus()
    with running_forwarder(address):
        listener = clients(address, "listener")
        listener.handshake()
        listener.subscribe(b"stimulus.audio")
        talker = clients(address, "talker")
        talker.handshake()
        big = Stimulus(modality="audio", t_ns=0, seq=9,
                       data=np.random.default_rng(0).random((512, 512), dtype=np.float32))
        talker.send(big)
        talker.send(Control(command="mark"))
        got = receive_until_mark(listener)
        assert len(got) == 1 and np.array_equal(got[0].data, big.data) and got[0].seq == 9


def test_handshake_fails_clearly_without_a_bus(clients):
    """No forwarder: handshake gives up with a BusError that says how to start one."""
    client = clients(free_tcp_bus(), "lonely")
    with pytest.raises(BusError, match="cdz bus"):
        client.handshake(timeout_s=0.5)


def _bad_messages() -> dict[str, list]:
    rng = random.Random(0)
    good = encode(stimulus("visual", 5))
    nan = encode(Stimulus(modality="visual", t_ns=0, seq=6,
                          data=np.ones(2, np.float32)))[:2] + [np.array([1.0, np.nan], np.float32)]
    h = msgpack.unpackb(good[1])
    return {
        "random header bytes": [b"stimulus.visual", rng.randbytes(64)],
        "random bytes in every frame": [b"stimulus.visual" + rng.randbytes(8), rng.randbytes(30), rng.randbytes(9)],
        "topic only": [b"stimulus.visual"],
        "four frames": good + [b"extra"],
        "payload missing": good[:2],
        "NaN payload": nan,
        "short payload": [good[0], good[1], bytes(3)],
        "wrong version": [good[0], msgpack.packb({**h, "v": 99}), good[2]],
        "control with nested args": [b"control", msgpack.packb({"v": 1, "kind": "control", "mod": "", "t": 0,
                                                                 "seq": 0, "src": "x", "gen": 0, "cmd": "go",
                                                                 "args": {"a": [1]}})],
    }


def test_bad_messages_are_counted_and_skipped(clients, raw_pub):
    """Garbage published by anyone is dropped and counted by the receiver, never raised;
    the good messages that follow still arrive."""
    address = free_tcp_bus()
    bad = _bad_messages()
    for frames in bad.values():  # each one really is invalid
        with pytest.raises(WireError):
            decode(frames)
    with running_forwarder(address):
        client = clients(address, "receiver", topics=[b"stimulus."])
        client.handshake()
        pub = raw_pub(BusAddress.parse(address).pub)
        wait_until_heard(pub, client)
        assert client.dropped == 0
        first, last = stimulus("visual", 7), stimulus("audio", 8)
        pub.send_multipart(encode(first))
        for frames in bad.values():
            pub.send_multipart(frames)
        pub.send_multipart(encode(last))
        got = [client.recv(timeout_ms=5000), client.recv(timeout_ms=5000)]
        assert same_stimulus(got[0], first) and same_stimulus(got[1], last)
        assert client.dropped == len(bad)
        assert sum(client.drops.values()) == client.dropped and len(client.drops) > 3  # counted by reason
        assert client.recv(timeout_ms=100) is None


def test_overflowing_shape_does_not_crash_recv(clients, raw_pub):
    address = free_tcp_bus()
    good = encode(stimulus("visual", 1))
    h = msgpack.unpackb(good[1])
    evil = [good[0], msgpack.packb({**h, "dtype": "uint8", "shape": [2**22, 2**21, 2**21]}), b""]
    with running_forwarder(address):
        client = clients(address, "receiver", topics=[b"stimulus."])
        client.handshake()
        pub = raw_pub(BusAddress.parse(address).pub)
        wait_until_heard(pub, client)
        pub.send_multipart(evil)
        pub.send_multipart(good)
        msg = None
        for _ in range(50):
            msg = client.recv(timeout_ms=100)
            if isinstance(msg, Stimulus):
                break
        assert isinstance(msg, Stimulus) and client.dropped == 1


# --------------------------------------------------------------------------- non-loopback needs keys
class _NoSockets:
    """A stand-in context that fails the test if anything tries to open a socket."""

    def socket(self, *args, **kwargs):
        raise AssertionError("a socket was opened before the address was checked")


@pytest.mark.parametrize("address", ["tcp://0.0.0.0:5570", "tcp://10.1.2.3:5570", "tcp://*:5570"])
def test_public_forwarder_without_keys_is_refused_before_binding(address):
    with pytest.raises(BusError, match="not on loopback.*cdz keys"):
        Forwarder(address, ctx=_NoSockets())


def test_public_client_without_keys_is_refused():
    with pytest.raises(BusError, match="not on loopback"):
        BusClient("tcp://10.1.2.3:5570", "c", ctx=_NoSockets())


def test_forwarder_on_a_busy_address_says_so():
    address = free_tcp_bus()
    with running_forwarder(address):
        ctx = zmq.Context()
        try:
            with pytest.raises(BusError, match="cannot bind the bus"):
                Forwarder(address, ctx=ctx)
        finally:
            ctx.term()  # hangs if the failed Forwarder left a socket open


# --------------------------------------------------------------------------- CurveZMQ
def test_make_keys_writes_both_pairs_with_private_secrets(tmp_path):
    folder = make_keys(tmp_path / "k")
    names = {p.name for p in folder.iterdir()}
    assert {"bus.key", "bus.key_secret", "client.key", "client.key_secret"} <= names
    for name in ("bus.key_secret", "client.key_secret"):
        assert stat.S_IMODE(os.stat(folder / name).st_mode) == 0o600, name
    keys = Keys.load(folder)
    assert len({keys.bus_public, keys.bus_secret, keys.client_public, keys.client_secret}) == 4
    assert all(len(k) == 40 for k in (keys.bus_public, keys.bus_secret, keys.client_public, keys.client_secret))


def test_make_keys_twice_refuses_to_overwrite(tmp_path):
    folder = make_keys(tmp_path / "k")
    before = (folder / "bus.key_secret").read_bytes()
    with pytest.raises(BusError, match="already holds keys"):
        make_keys(folder)
    assert (folder / "bus.key_secret").read_bytes() == before


def test_keys_load_missing_folder_names_the_command(tmp_path):
    with pytest.raises(BusError, match="cdz keys"):
        Keys.load(tmp_path / "nowhere")


def test_keys_load_without_secrets_names_the_command(tmp_path):
    folder = tmp_path / "public_only"
    folder.mkdir()
    keys = make_keys(tmp_path / "k")
    for name in ("bus", "client"):  # a secret file holding only a public key
        (folder / f"{name}.key_secret").write_bytes((keys / f"{name}.key").read_bytes())
    with pytest.raises(BusError, match="cdz keys"):
        Keys.load(folder)


def test_curve_bus_carries_messages_between_key_holders(tmp_path, clients):
    """Keys are honoured on loopback too; clients with the folder's client pair talk normally."""
    keys = make_keys(tmp_path / "k")
    address = free_tcp_bus()
    with running_forwarder(address, keys=keys) as fwd:
        assert fwd.keys is not None
        listener = clients(address, "listener", topics=[b"stimulus.visual"], keys=keys)
        listener.handshake()
        talker = clients(address, "talker", keys=keys)
        talker.handshake()
        sent = stimulus("visual", 3)
        talker.send(sent)
        talker.send(Control(command="mark"))
        got = receive_until_mark(listener)
        assert len(got) == 1 and same_stimulus(got[0], sent)


@pytest.mark.parametrize("intruder_keys", ["other keys", "no keys"])
def test_curve_bus_shuts_out_clients_without_the_client_key(tmp_path, clients, intruder_keys):
    """An intruder can neither hear the bus nor be heard on it, while key holders carry on."""
    keys = make_keys(tmp_path / "k")
    other = make_keys(tmp_path / "other") if intruder_keys == "other keys" else None
    address = free_tcp_bus()
    with running_forwarder(address, keys=keys):
        good = clients(address, "good", topics=[b"stimulus.visual"], keys=keys)
        good.handshake()
        intruder = clients(address, "intruder", topics=[b"stimulus.visual"], keys=other)
        with pytest.raises(BusError, match="no answer from the bus"):
            intruder.handshake(timeout_s=1.5)  # publishes hellos and listens for 1.5 s
        intruder.send(stimulus("visual", 666, source="intruder"))
        mine = stimulus("visual", 1, source="good")
        good.send(mine)
        good.send(Control(command="mark"))
        got = receive_until_mark(good)
        assert len(got) == 1 and same_stimulus(got[0], mine)  # nothing from the intruder
        assert receive_for(good, 0.3) == []
        assert receive_for(intruder, 0.3) == []


def test_a_batch_arrives_as_its_messages_in_order_each_with_its_own_frames(clients):
    """send_batch: one ZeroMQ message; the receiver gets every message in order, and `last_frames` of
    each is exactly what sending it alone would have put on the wire (so recorders write singles)."""
    address = free_tcp_bus()
    with running_forwarder(address):
        listener = clients(address, "listener", topics=[b"stimulus.", b"excite."])
        listener.handshake()
        talker = clients(address, "talker")
        talker.handshake()
        stimuli = [stimulus("visual", k) for k in range(5)]
        excites = [Excitation(modality="audio", t_ns=k, seq=k, cluster_id=k, node_id=k + 10) for k in range(3)]
        talker.send_batch(stimuli)
        talker.send_batch(excites[:2])  # two messages without payload: three frames, still a batch
        talker.send_batch(excites[2:])  # a batch of one goes out as a single message
        talker.send(Control(command="mark"))
        got, frames = [], []
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            msg = listener.recv(100)
            if isinstance(msg, Control):
                if msg.command == "mark":
                    break
                continue  # the talker's hellos
            if msg is not None:
                got.append(msg)
                frames.append([bytes(memoryview(f)) for f in listener.last_frames])
        assert len(got) == 8 and listener.dropped == 0
        assert all(same_stimulus(g, s) for g, s in zip(got[:5], stimuli))
        assert [(e.seq, e.cluster_id, e.node_id) for e in got[5:]] == [(k, k, k + 10) for k in range(3)]
        for sent, f in zip([*stimuli, *excites], frames):
            assert f == [bytes(memoryview(x)) for x in encode(sent)]


def test_a_batch_of_one_gives_a_recorder_the_single_message_frames(clients, raw_pub):
    address = free_tcp_bus()
    with running_forwarder(address):
        listener = clients(address, "listener", topics=[b"excite."])
        listener.handshake()
        pub = raw_pub(BusAddress.parse(address).pub)
        one = Excitation(modality="visual", t_ns=5, seq=5, cluster_id=3, node_id=4, source="w")
        deadline, got = time.monotonic() + 10, None
        while time.monotonic() < deadline and got is None:
            pub.send_multipart(encode_batch([one]))
            got = listener.recv(50)
        assert got is not None and got.cluster_id == 3
        assert [bytes(memoryview(f)) for f in listener.last_frames] == [bytes(memoryview(x)) for x in encode(one)]


def test_a_batch_with_one_bad_message_is_dropped_whole_and_counted_once(clients, raw_pub):
    address = free_tcp_bus()
    with running_forwarder(address):
        listener = clients(address, "listener", topics=[b"excite."])
        listener.handshake()
        pub = raw_pub(BusAddress.parse(address).pub)
        good = encode(Excitation(modality="visual", t_ns=1, seq=1, cluster_id=1, node_id=1))
        rows = [Excitation(modality="visual", t_ns=k, seq=k, cluster_id=-7 if k == 2 else 1, node_id=1)
                for k in (1, 2, 3)]
        batch = encode_batch(rows)  # the second row's cluster is below -1
        extra = good + [good[1]]  # a single message with one frame too many is no batch
        deadline = time.monotonic() + 10
        got = []
        while time.monotonic() < deadline and listener.dropped < 2:
            pub.send_multipart(batch)
            pub.send_multipart(extra)
            msg = listener.recv(50)
            if msg is not None:
                got.append(msg)
        assert got == []  # the good messages of the bad batch were not delivered either
        assert set(listener.drops) == {"header field 'cluster'", "this kind carries"}
        batches, singles = listener.drops["header field 'cluster'"], listener.drops["this kind carries"]
        assert abs(batches - singles) <= 1  # one of each per round: a bad batch counts once, not per message


@pytest.mark.parametrize("timeout_ms", [1, 3])
def test_a_short_receive_timeout_waits_rather_than_spins(clients, timeout_ms):
    """recv(1) on a quiet bus sleeps in poll for its millisecond. Rounding it down to 0 made every
    player (which waits for credits with recv(1)) spin a whole core: its CPU time then equals its
    wall time. Waiting, a loop of such receives uses a small share of the wall time."""
    address = free_tcp_bus()
    with running_forwarder(address):
        client = clients(address, "quiet")
        client.handshake()
        while client.recv(50) is not None:  # the handshake's own messages
            pass
        wall0, cpu0, calls = time.monotonic(), time.process_time(), 0
        while time.monotonic() - wall0 < 0.5:
            assert client.recv(timeout_ms) is None
            calls += 1
        wall, cpu = time.monotonic() - wall0, time.process_time() - cpu0
        assert calls <= wall * 1000 / timeout_ms + 1  # each call took at least its timeout
        assert cpu < 0.5 * wall, f"{calls} receives used {cpu:.3f} s of CPU in {wall:.3f} s"
