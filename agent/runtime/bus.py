"""The message bus: one XSUB/XPUB forwarder that every process connects to.

A bus is named by one address. For `tcp://HOST:PORT` publishers connect to PORT
and subscribers to PORT+1; for `ipc:///path` to `/path.in` and `/path.out`.
Loopback and ipc need no keys. Binding any other interface requires CurveZMQ
keys (`cdz keys DIR`): the forwarder then only talks to clients holding the
client key pair from that folder, so a process without it can neither publish
nor subscribe.

`BusClient` is what processes use: a PUB and a SUB socket, `send(msg)`, and
`recv(timeout)` that decodes, validates, counts and drops bad messages (logging
each kind of error once) instead of raising.

An ipc bus owns its path while it runs (`IpcClaim`): a second bus on the same
path is refused, while socket files left behind by a killed bus are reused; a
bus that is closed (or stopped with SIGTERM/SIGINT) removes its files.
"""

from __future__ import annotations

import errno
import fcntl
import ipaddress
import logging
import math
import os
import re
import socket
import stat
import tempfile
import time
from collections import Counter, deque
from dataclasses import dataclass, replace
from pathlib import Path

import zmq
import zmq.auth

from agent.core.messages import Control, Message
from agent.runtime.wire import WireError, decode_all, encode, encode_batches, is_batch

log = logging.getLogger(__name__)

DEFAULT_BUS = "tcp://127.0.0.1:5570"
_LOOPBACK = {"localhost", "127.0.0.1", "::1", "[::1]"}


class BusError(RuntimeError):
    """A bus address or key setup that cannot work; the text says how to fix it."""


@dataclass(frozen=True)
class BusAddress:
    """The two endpoints of one bus: where publishers and subscribers connect."""

    text: str
    pub: str  # publishers connect here (the forwarder's XSUB)
    sub: str  # subscribers connect here (the forwarder's XPUB)
    loopback: bool

    @classmethod
    def parse(cls, text: str) -> "BusAddress":
        if text.startswith("ipc://"):
            path = text[len("ipc://"):]
            if not path:
                raise BusError(f"bus address {text!r} lacks a path, e.g. ipc:///tmp/cdz-bus")
            return cls(text, f"ipc://{path}.in", f"ipc://{path}.out", True)
        if text.startswith("tcp://"):
            host, sep, port = text[len("tcp://"):].rpartition(":")
            if not sep or not (port.isascii() and port.isdecimal()) or not 0 <= int(port) < 65535 or not host:
                raise BusError(f"bus address {text!r} must look like tcp://HOST:PORT (PORT and PORT+1 are used; "
                               "PORT 0: the bus picks two free ones)")
            p = int(port)
            return cls(text, f"tcp://{host}:{p}", f"tcp://{host}:{p + 1}", _is_loopback(host))
        raise BusError(f"bus address {text!r} must start with tcp:// or ipc://")

    @property
    def ipc_path(self) -> str | None:
        """The path of an ipc bus (its files are PATH.in and PATH.out); None for tcp and for
        Linux abstract names (ipc://@name), which have no files."""
        if not self.text.startswith("ipc://") or self.text.startswith("ipc://@"):
            return None
        return self.text[len("ipc://"):]


def _is_loopback(host: str) -> bool:
    if host in _LOOPBACK:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def free_tcp_bus(host: str = "127.0.0.1") -> str:
    """A bus address on two currently free consecutive ports (for tests and the launcher)."""
    for _ in range(50):
        with socket.socket() as s:
            s.bind((host, 0))
            port = s.getsockname()[1]
        if port >= 65534:
            continue
        with socket.socket() as s2:
            try:
                s2.bind((host, port + 1))
            except OSError:
                continue
        return f"tcp://{host}:{port}"
    raise BusError("found no two free consecutive ports")


# ---------------------------------------------------------------------- CurveZMQ keys
@dataclass(frozen=True)
class Keys:
    """CurveZMQ key pairs from a `cdz keys` folder: the bus's and the clients'."""

    folder: Path
    bus_public: bytes
    bus_secret: bytes
    client_public: bytes
    client_secret: bytes

    @classmethod
    def load(cls, folder: Path | str) -> "Keys":
        folder = Path(folder)
        try:
            bus_pub, bus_sec = zmq.auth.load_certificate(folder / "bus.key_secret")
            cli_pub, cli_sec = zmq.auth.load_certificate(folder / "client.key_secret")
        except (OSError, ValueError) as e:
            raise BusError(f"cannot read CurveZMQ keys from {folder} ({e}); make them with `cdz keys {folder}`") \
                from None
        if bus_sec is None or cli_sec is None:
            raise BusError(f"{folder} lacks secret keys; make them with `cdz keys {folder}`")
        return cls(folder, bus_pub, bus_sec, cli_pub, cli_sec)


def session_keys() -> Path:
    """Fresh key pairs for one run's own bus, in a private folder (0700) only this user can read:
    a process without them cannot stop, rewind or feed the run. Remove it when the run ends."""
    return make_keys(Path(tempfile.mkdtemp(prefix="cdz-keys-")))  # mkdtemp makes it 0700


def make_keys(folder: Path | str) -> Path:
    """Write a bus key pair and a client key pair into `folder` (secret files are 0600)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if (folder / "bus.key_secret").exists():
        raise BusError(f"{folder} already holds keys; remove them first to make new ones")
    zmq.auth.create_certificates(folder, "bus")
    zmq.auth.create_certificates(folder, "client")
    for secret in folder.glob("*.key_secret"):
        secret.chmod(0o600)
    return folder


# ---------------------------------------------------------------------- ipc ownership
def _listening(path: str) -> bool:
    """Whether some process accepts connections on the unix socket at `path` (a live owner).

    A socket file whose process died refuses the connection (ECONNREFUSED)."""
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(1.0)
    try:
        probe.connect(path)
        return True
    except PermissionError:
        raise BusError(f"cannot use ipc path {path}: permission denied (another user's bus?)") from None
    except OSError:  # ECONNREFUSED (stale file), ENOENT, a path that is no socket, too long a path
        return False
    finally:
        probe.close()


class IpcClaim:
    """Exclusive use of an ipc bus path by one live forwarder.

    Two checks, before binding anything:

    1. a lock file PATH.lock held with `flock(LOCK_EX | LOCK_NB)` for the forwarder's
       lifetime. The kernel releases the lock when its holder dies in any way (SIGKILL
       included), so a held lock means a live bus and a free one means that any files
       there are stale; two buses starting at the same moment cannot both win.
    2. a connection attempt on PATH.in and PATH.out, for a live owner that holds no lock
       (an older `cdz bus`, or another program): a live listener accepts, the file of a
       dead one refuses (ECONNREFUSED).

    A live owner makes the claim fail with a BusError naming the path (`cdz bus` exits 2).
    Stale socket files are left for the bind, which replaces them. `release` removes the
    socket files and the lock file; the lock is dropped last, so a bus that starts
    meanwhile cannot lose its fresh files to us.
    """

    def __init__(self, address: BusAddress):
        path = address.ipc_path
        assert path is not None
        self.address = address
        self.files = (f"{path}.in", f"{path}.out")
        self.lock_path = f"{path}.lock"
        self._fd: int | None = None
        for f in self.files:  # only socket files are replaced; a user's own file at the path is left alone
            if os.path.lexists(f) and not stat.S_ISSOCK(os.lstat(f).st_mode):
                raise BusError(f"cannot bind the bus at {address.text}: {f} exists and is not a socket; "
                               "move it or choose another path")
        self._refuse_foreign_lock()
        self._take_lock()
        try:
            for f in self.files:
                if _listening(f):
                    raise BusError(f"bus address {address.text} is in use: a process is listening on {f} "
                                   "(another bus?); stop it or choose another path")
        except BaseException:
            self.release(remove_files=False)
            raise
        stale = [f for f in self.files if os.path.lexists(f)]
        if stale:
            log.info("reusing the stale socket files of a bus that is gone: %s", ", ".join(stale))

    def _refuse_foreign_lock(self) -> None:
        """PATH.lock may be reused only if it is what a bus leaves: a regular file holding a pid."""
        try:
            info = os.lstat(self.lock_path)
        except FileNotFoundError:
            return
        ours = stat.S_ISREG(info.st_mode) and info.st_size <= 32
        if ours:
            with open(self.lock_path, "rb") as f:
                ours = re.fullmatch(rb"\d*\n?", f.read(33)) is not None
        if not ours:
            raise BusError(f"cannot bind the bus at {self.address.text}: {self.lock_path} is not a bus's lock file; "
                           "move it or choose another path")

    def _take_lock(self) -> None:
        folder = os.path.dirname(self.lock_path) or "."
        for _ in range(20):  # retried only while another bus removes its lock file under us
            try:
                fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
            except FileNotFoundError:
                raise BusError(f"cannot bind the bus at {self.address.text}: folder {folder} does not exist") \
                    from None
            except OSError as e:
                raise BusError(f"cannot bind the bus at {self.address.text}: cannot open {self.lock_path} "
                               f"({e.strerror})") from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as e:
                owner = _read_pid(fd)
                os.close(fd)
                if e.errno in (errno.EWOULDBLOCK, errno.EACCES, errno.EAGAIN):
                    raise BusError(f"bus address {self.address.text} is in use by a running bus"
                                   f"{f' (pid {owner})' if owner else ''}, which holds {self.lock_path}; "
                                   "stop it or choose another path") from None
                raise BusError(f"cannot lock {self.lock_path}: {e.strerror}") from None
            try:  # the file we locked must still be the one at the path (not one just removed)
                same = os.fstat(fd).st_ino == os.stat(self.lock_path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                os.ftruncate(fd, 0)
                os.write(fd, f"{os.getpid()}\n".encode())
                self._fd = fd
                return
            os.close(fd)
        raise BusError(f"cannot lock {self.lock_path}: it keeps being replaced")

    def release(self, remove_files: bool = True) -> None:
        """Remove our socket files (libzmq 4.3 leaves them) and the lock file, then drop the
        lock. Call it after closing the sockets. Safe to call twice."""
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:
            if remove_files:
                for f in self.files:
                    try:
                        os.unlink(f)
                    except FileNotFoundError:
                        pass
            try:
                os.unlink(self.lock_path)
            except FileNotFoundError:
                pass
        finally:
            os.close(fd)


def _read_pid(fd: int) -> int | None:
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    except OSError:
        return None
    return int(text) if text.isdecimal() else None


# ---------------------------------------------------------------------- the forwarder
class Forwarder:
    """The XSUB/XPUB forwarder. `run()` blocks until `close()` or the context ends."""

    def __init__(self, address: str, keys: Path | str | None = None, ctx: zmq.Context | None = None):
        self.address = BusAddress.parse(address)
        if not self.address.loopback and keys is None:
            raise BusError(f"bus {address} is not on loopback: pass --keys DIR (make them with `cdz keys DIR`) "
                           "so that only processes holding the client key can use it")
        self.ctx = ctx or zmq.Context.instance()
        self.keys = Keys.load(keys) if keys is not None else None
        self._auth = None
        self.xsub = self.xpub = None
        # an ipc path in use by a live bus is refused here; stale files of a dead one are reused
        self.claim = IpcClaim(self.address) if self.address.ipc_path is not None else None
        if self.keys is not None:
            from zmq.auth.thread import ThreadAuthenticator

            self._auth = ThreadAuthenticator(self.ctx)
            self._auth.start()
            allowed = self.keys.folder / "allowed"
            allowed.mkdir(exist_ok=True)
            (allowed / "client.key").write_bytes((self.keys.folder / "client.key").read_bytes())
            self._auth.configure_curve(domain="*", location=str(allowed))
        self.xsub = self.ctx.socket(zmq.XSUB)
        self.xpub = self.ctx.socket(zmq.XPUB)
        for s in (self.xsub, self.xpub):
            s.setsockopt(zmq.LINGER, 0)
            s.setsockopt(zmq.SNDHWM, 100_000)
            s.setsockopt(zmq.RCVHWM, 100_000)
            if self.keys is not None:
                s.curve_server = True
                s.curve_secretkey = self.keys.bus_secret
                s.curve_publickey = self.keys.bus_public
        try:
            if self.address.pub.endswith(":0"):
                self.address = self._bind_free_pair(self.address.pub.rpartition(":")[0])
            else:
                self.xsub.bind(self.address.pub)
                self.xpub.bind(self.address.sub)
        except (zmq.ZMQError, BusError) as e:
            self.close()
            raise BusError(f"cannot bind the bus at {address}: {e} (is another bus running there?)") from None

    def _bind_free_pair(self, host: str) -> BusAddress:
        """Bind two consecutive free ports; the binding itself is the test, so no other process
        can take a port between a probe and its use."""
        for _ in range(100):
            port = self.xsub.bind_to_random_port(host, max_port=65534)
            try:
                self.xpub.bind(f"{host}:{port + 1}")
            except zmq.ZMQError:
                self.xsub.unbind(f"{host}:{port}")
                continue
            return BusAddress.parse(f"{host}:{port}")
        raise BusError("found no two free consecutive ports")

    def run(self) -> None:
        """Forward until `stop()` (from another thread) or the context ends."""
        control = self.ctx.socket(zmq.PAIR)
        control.setsockopt(zmq.LINGER, 0)
        control.bind(self._control_address)
        try:
            zmq.proxy_steerable(self.xsub, self.xpub, None, control)
        except zmq.ContextTerminated:
            pass
        except zmq.ZMQError as e:
            if e.errno not in (zmq.ETERM, zmq.ENOTSOCK):
                raise
        finally:
            control.close(0)

    @property
    def _control_address(self) -> str:
        return f"inproc://cdz-bus-control-{id(self)}"

    def stop(self) -> None:
        """End `run()` in the thread that runs it (a signal cannot interrupt libzmq's proxy reliably)."""
        ctl = self.ctx.socket(zmq.PAIR)
        ctl.setsockopt(zmq.LINGER, 1000)
        try:
            ctl.connect(self._control_address)
            ctl.send(b"TERMINATE")
        finally:
            ctl.close()

    def close(self) -> None:
        """Close the sockets (an ipc bus also removes its socket and lock files). Safe to call twice."""
        for s in (self.xsub, self.xpub):
            if s is not None:
                s.close(0)
        if self.claim is not None:
            self.claim.release()
        if self._auth is not None:
            auth, self._auth = self._auth, None
            try:
                auth.stop()
            except zmq.ZMQError:  # the context already ended: close the authenticator's sockets anyway
                for sock in (getattr(auth, "pipe", None), getattr(getattr(auth, "thread", None), "pipe", None)):
                    if sock is not None:
                        sock.close(0)


# ---------------------------------------------------------------------- clients
class BusClient:
    """One process's connection to the bus: publish messages, receive validated ones.

    Bad messages are counted in `drops` (by reason) and logged once per reason;
    `recv` never raises on them.
    """

    def __init__(self, address: str, name: str, topics: list[bytes] | tuple[bytes, ...] = (),
                 keys: Path | str | None = None, ctx: zmq.Context | None = None, sndhwm: int = 100_000,
                 rcvhwm: int = 100_000):
        self.address = BusAddress.parse(address)
        if not self.address.loopback and keys is None:
            raise BusError(f"bus {address} is not on loopback: pass --keys DIR with the client key pair")
        self.name = name
        self.ctx = ctx or zmq.Context.instance()
        self.pub = self.ctx.socket(zmq.PUB)
        self.sub = self.ctx.socket(zmq.SUB)
        self.pub.setsockopt(zmq.SNDHWM, sndhwm)
        self.sub.setsockopt(zmq.RCVHWM, rcvhwm)
        self.drops: Counter[str] = Counter()
        self._frames: list | None = []  # the raw frames of the message recv returned last (None: one of a batch)
        self._last: Message | None = None
        self._batch: deque[Message] = deque()  # the rest of a received batch
        self._logged: set[str] = set()
        for s in (self.pub, self.sub):
            s.setsockopt(zmq.LINGER, 0)
            if keys is not None:
                k = Keys.load(keys)
                s.curve_serverkey = k.bus_public
                s.curve_publickey = k.client_public
                s.curve_secretkey = k.client_secret
        for t in topics:  # subscribe before connecting: no window without a filter
            self.sub.setsockopt(zmq.SUBSCRIBE, t)
        self.sub.setsockopt(zmq.SUBSCRIBE, b"control")
        self.pub.connect(self.address.pub)
        self.sub.connect(self.address.sub)
        self.poller = zmq.Poller()
        self.poller.register(self.sub, zmq.POLLIN)

    def subscribe(self, prefix: bytes) -> None:
        self.sub.setsockopt(zmq.SUBSCRIBE, prefix)

    def send(self, msg: Message) -> None:
        frames = encode(msg)
        self.pub.send_multipart(frames, copy=len(frames) < 3 or frames[2].nbytes < 4096)

    def send_batch(self, msgs: list[Message], source: str | None = None, gen: int | None = None) -> None:
        """Several messages of one kind and sense in one send (`agent.runtime.wire.encode_batch`), as
        from `source` in generation `gen` when given; receivers get them one by one, in order."""
        if len(msgs) == 1:
            one = msgs[0]
            self.send(one if source is None or gen is None else replace(one, source=source, gen=gen))
        elif msgs:
            for frames in encode_batches(msgs, source, gen):
                self.pub.send_multipart(frames, copy=len(frames) < 4 or len(frames[3]) < 65536)

    def recv(self, timeout_ms: int = 100) -> Message | None:
        """The next valid message, or None after `timeout_ms` (bad ones are counted and skipped)."""
        if self._batch:
            return self.recv_ready()
        deadline = time.monotonic() + timeout_ms / 1000.0
        while True:
            left = max(0, math.ceil((deadline - time.monotonic()) * 1000))  # up: rounded down, recv(1) never waited and spun
            if not self.sub.poll(left):
                return None
            msg = self.recv_ready()
            if msg is not None:
                return msg
            if time.monotonic() >= deadline:
                return None

    def recv_ready(self) -> Message | None:
        """Decode one waiting message without blocking (None if none waits or it was bad)."""
        if not self._batch:
            try:
                frames = self.sub.recv_multipart(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                return None
            try:  # a batch is all or nothing: one bad message in it drops it whole, counted once
                msgs = decode_all(frames)
            except WireError as e:
                self._drop(e)
                return None
            if not is_batch(frames):  # one message: its own frames are what a recorder writes
                self._frames, self._last = frames, msgs[0]
                return msgs[0]
            self._batch.extend(msgs)
        self._frames, self._last = None, self._batch.popleft()
        return self._last

    @property
    def last_frames(self) -> list:
        """The frames of the message `recv` returned last, as sending it alone puts them on the wire
        (for recorders: one of a batch is encoded again, on demand)."""
        if self._frames is None:
            self._frames = encode(self._last)
        return self._frames

    @property
    def waiting(self) -> bool:
        """Whether a message waits to be received (the rest of a batch, or one on the socket)."""
        return bool(self._batch) or bool(self.sub.poll(0))

    def _drop(self, e: WireError) -> None:
        reason = str(e).split(" ", 3)[:3]
        key = " ".join(reason)
        self.drops[key] += 1
        if key not in self._logged:
            self._logged.add(key)
            log.warning("%s: dropped a bad message (%s); further ones like it are only counted", self.name, e)

    @property
    def dropped(self) -> int:
        return sum(self.drops.values())

    def handshake(self, timeout_s: float = 10.0) -> None:
        """Publish hellos until one comes back: our subscriptions have then reached the bus
        and every publisher, so nothing we publish or are sent from now on is filtered away."""
        deadline = time.monotonic() + timeout_s
        nonce = f"{self.name}-{time.monotonic_ns()}"
        while time.monotonic() < deadline:
            self.send(Control(command="hello", args={"nonce": nonce}, source=self.name))
            end = time.monotonic() + 0.1
            while time.monotonic() < end:
                msg = self.recv(timeout_ms=20)
                if isinstance(msg, Control) and msg.command == "hello" and msg.args.get("nonce") == nonce:
                    return
        raise BusError(f"{self.name}: no answer from the bus at {self.address.text} within {timeout_s:.0f} s "
                       "(start it with `cdz bus`, or check the address and keys)")

    def close(self, flush_s: float = 1.0) -> None:
        """Close both sockets; what was published but not yet sent gets up to `flush_s` to leave
        (a process that publishes a burst and exits would otherwise lose its tail)."""
        self.pub.close(linger=int(flush_s * 1000))
        self.sub.close(0)

    def __enter__(self) -> "BusClient":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
