"""What Foxglove shows: the views of a recording decode with the schemas the file declares."""

from __future__ import annotations

import contextlib
import json

import jsonschema
import numpy as np
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from mcap.reader import make_reader

from agent.core.messages import Reconstruction, Stimulus
from agent.runtime.wire import encode
from replay.foxglove_views import mono8, views
from replay.recording import MESSAGE_ENCODING, RecordingWriter
from tests.test_recording import every_kind, raw


def _decoder(schema):
    """A function bytes -> decoded message, built from the schema record alone."""
    if schema.encoding == "protobuf":
        files = descriptor_pb2.FileDescriptorSet.FromString(schema.data)
        pool = descriptor_pool.DescriptorPool()
        for f in files.file:
            pool.Add(f)
        cls = message_factory.GetMessageClass(pool.FindMessageTypeByName(schema.name))
        return cls.FromString
    assert schema.encoding == "jsonschema", schema.encoding
    body = json.loads(schema.data)
    jsonschema.Draft202012Validator.check_schema(body)
    validator = jsonschema.Draft202012Validator(body)

    def decode(data: bytes) -> dict:
        doc = json.loads(data)
        validator.validate(doc)
        return doc
    return decode


def _read_views(path) -> list[tuple[str, int, object]]:
    """(topic, log time, decoded message) of every view in the file, in file order."""
    out = []
    with open(path, "rb") as f:
        reader = make_reader(f)
        decoders = {}
        for schema, channel, message in reader.iter_messages(log_time_order=False):
            if channel.message_encoding == MESSAGE_ENCODING:
                continue
            assert channel.message_encoding == ("protobuf" if schema.encoding == "protobuf" else "json")
            decode = decoders.setdefault(schema.id, _decoder(schema))
            out.append((channel.topic, message.log_time, decode(message.data)))
    return out


def _pixels(img) -> np.ndarray:
    channels = {"mono8": 1, "bgr8": 3}[img.encoding]
    assert img.step == img.width * channels and len(img.data) == img.step * img.height
    arr = np.frombuffer(img.data, np.uint8).reshape(img.height, img.width, channels)
    return arr[:, :, 0] if channels == 1 else arr


def test_every_view_decodes_with_its_declared_schema_at_its_event_time(tmp_path):
    msgs = every_kind() + [Stimulus(modality="reward", t_ns=11_000, seq=11, data=np.full((1, 1), 2.0, np.float32),
                                    source="teacher"),
                           Reconstruction(modality="audio", t_ns=12_000, seq=12, cluster_id=4, cue_modality="visual",
                                          data=np.linspace(0, 1, 64 * 64, dtype=np.float32)
                                 .reshape(64, 64))]
    path = tmp_path / "session.mcap"
    w = RecordingWriter(path)
    for i, m in enumerate(msgs):
        w.write(raw(encode(m)), 10**18 + i, m)
    w.close()
    expected = [v for m in msgs for v in views(m)]
    got = _read_views(path)
    assert [(t, lt) for t, lt, _ in got] == [(v.topic, v.t_ns) for v in expected] and w.view_messages == len(got)
    by_topic = {t: doc for t, _, doc in got}
    seen = by_topic["/visual/thought"]  # every_kind's visual stimulus is a thought
    assert (seen.width, seen.height, seen.frame_id) == (28, 28, "visual")
    assert seen.timestamp.seconds == 0 and seen.timestamp.nanos == 1_000
    assert np.array_equal(_pixels(seen), mono8(msgs[0].data))
    heard = _pixels(by_topic["/audio/stimulus"])
    assert heard.shape == (64, 64)
    assert np.array_equal(heard, mono8(msgs[1].data[::-1]))  # low mels at the bottom
    imagined = _pixels(by_topic["/audio/imagined"])
    assert imagined[-1, 0] < imagined[0, -1]  # the last recon's first row (low mels) is drawn at the bottom
    assert _pixels(by_topic["/visual/camera"]).shape == (48, 64, 3)
    assert _pixels(by_topic["/weights/visual-audio"]).shape == (2, 3)
    fires = by_topic["/visual/fires"]
    assert (fires["cluster_id"], fires["node_id"], fires["t_ns"], fires["name"]) == (-1, 12, -5, None)
    assert by_topic["/audio/recalls"]["cue_modality"] == "visual"
    assert by_topic["/visual/clusters"] == {"t_ns": 6_000, "seq": 7, "source": "", "created": [10, 11],
                                            "deleted": [3]}
    assert by_topic["/reward/stimulus"]["values"] == [2.0]
    assert by_topic["/stats/hub"]["rate"] == 12.5
    assert not any(t.startswith(("/audio/feedback", "/credit", "/control")) for t in by_topic)


def test_views_name_clusters_when_names_are_known():
    from agent.core.messages import Excitation

    msg = Excitation(modality="audio", t_ns=5, seq=1, cluster_id=17, node_id=3)
    (view,) = views(msg, {"audio": {17: 7}})
    assert json.loads(view.data)["name"] == 7


def test_mono8_keeps_stimuli_in_range_and_scales_raw_samples():
    assert mono8(np.array([[0.0, 0.5, 1.0, 2.0, -1.0, np.nan]], np.float32)).tolist() == [[0, 128, 255, 255, 0, 255]]
    assert mono8(np.array([[-300, 0, 300]], np.int16)).tolist() == [[0, 128, 255]]
    frame = np.arange(12, dtype=np.uint8).reshape(3, 4)
    assert mono8(frame) is not None and np.array_equal(mono8(frame), frame)


# --------------------------------------------------------------------------- the live view, on a real bus
def _start_viewer(bus: str):
    import re
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    proc = subprocess.Popen([sys.executable, "-m", "tools.cli", "viewer", "--bus", bus, "--foxglove", "0", "--quiet"],
                            cwd=repo, stderr=subprocess.PIPE, text=True)
    line = proc.stderr.readline()
    found = re.search(r"ws://127\.0\.0\.1:(\d+)", line)
    assert found, f"the viewer did not say where it serves: {line!r}"
    return proc, int(found.group(1))


class _Client:
    """A Foxglove WebSocket client (the `websockets` package) that reads in a thread."""

    def __init__(self, stack, port: int, read: bool = True):
        import threading

        from websockets.sync.client import connect

        self.ws = stack.enter_context(connect(f"ws://127.0.0.1:{port}",
                                              subprotocols=["foxglove.sdk.v1", "foxglove.websocket.v1"],
                                              max_queue=64 if read else 1, close_timeout=1))
        self.channels: dict[str, int] = {}
        self.got: list[tuple[int, bytes]] = []  # (subscription id, payload)
        if read:
            threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        import struct

        try:
            for frame in self.ws:
                if isinstance(frame, str):
                    doc = json.loads(frame)
                    if doc["op"] == "advertise":
                        self.channels.update({c["topic"]: c["id"] for c in doc["channels"]})
                elif frame[0] == 1:  # message data: opcode, subscription id, log time, payload
                    sub, = struct.unpack_from("<I", frame, 1)
                    self.got.append((sub, frame[13:]))
        except Exception:  # closed
            pass

    def subscribe(self, channels: dict[str, int]) -> None:
        self.ws.send(json.dumps({"op": "subscribe",
                                 "subscriptions": [{"id": cid, "channelId": cid} for cid in channels.values()]}))


def test_a_foxglove_client_sees_images_and_excitations_and_a_stalled_one_slows_nothing(thread_bus):
    import time

    from agent.runtime.bus import BusClient
    from agent.core.messages import Control, Excitation, Frame
    from tests.processes import stop_process, wait_for

    proc, port = _start_viewer(thread_bus)
    feeder = BusClient(thread_bus, "feeder", [b"stats"])
    stack = contextlib.ExitStack()
    try:
        feeder.handshake(timeout_s=20)
        live, stalled = _Client(stack, port), _Client(stack, port, read=False)
        image = np.zeros((28, 28), np.float32)
        image[4:24, 12:16] = 1.0  # a "1"

        def send_pair(seq: int) -> None:
            feeder.send(Stimulus(modality="visual", t_ns=time.time_ns(), seq=seq, data=image, source="camera",
                                 mseq=seq))
            feeder.send(Excitation(modality="visual", t_ns=time.time_ns(), seq=seq, cluster_id=40 + seq % 3,
                                   node_id=seq, source="worker"))

        big = np.random.default_rng(0).integers(0, 255, (240, 320, 3), dtype=np.uint8)
        wanted = ("/visual/stimulus", "/visual/fires", "/visual/camera")
        sent_at = [0.0]

        def advertised() -> bool:  # sent again now and then: the viewer's subscription may still be on its way
            if time.monotonic() - sent_at[0] >= 0.5:
                sent_at[0] = time.monotonic()
                send_pair(0)
                feeder.send(Frame(modality="visual", t_ns=time.time_ns(), seq=0, data=big, source="camera"))
            return set(wanted) <= set(live.channels)

        wait_for(advertised, 20, "channels advertised")
        time.sleep(0.3)  # a last resend still on its way lands before anyone subscribes
        channels = {t: live.channels[t] for t in wanted}
        live.subscribe({t: channels[t] for t in wanted[:2]})
        stalled.subscribe(channels)  # 69 MB of camera frames that it never reads
        time.sleep(0.3)
        for seq in range(1, 301):  # 300 camera frames and pairs: more than a stalled client's buffers hold
            feeder.send(Frame(modality="visual", t_ns=time.time_ns(), seq=seq, data=big, source="camera"))
            send_pair(seq)
            if seq % 20 == 0:
                time.sleep(0.02)
        wait_for(lambda: sum(sub == channels["/visual/fires"] for sub, _ in live.got) >= 300, 20,
                 "every excitation sent after subscribing to reach the live client")
        fires = [json.loads(p) for sub, p in live.got if sub == channels["/visual/fires"]]
        images = [p for sub, p in live.got if sub == channels["/visual/stimulus"]]
        assert [f["node_id"] for f in fires] == list(range(1, 301))
        assert len(images) == 300
        decode = _decoder(image_schema_record())
        first = decode(images[0])
        assert (first.width, first.height) == (28, 28) and _pixels(first)[10, 13] == 255
        assert proc.poll() is None  # the stalled client did not stop the viewer
    finally:
        stack.close()
        feeder.send(Control(command="stop", source="feeder"))
        stop_process(proc, 10)
        feeder.close()


def image_schema_record():
    """The RawImage schema as an MCAP schema record would carry it."""
    from types import SimpleNamespace

    from replay.foxglove_views import image_schema

    s = image_schema()
    return SimpleNamespace(name=s.name, encoding=s.encoding, data=s.data)


def test_the_shipped_layout_is_the_generated_one_and_shows_topics_that_exist():
    import re
    from pathlib import Path

    from agent.core.messages import Excitation, Frame, Recall
    from tools.foxglove_layout import layout_json

    shipped = (Path(__file__).resolve().parents[1] / "docs" / "foxglove-layout.json").read_text()
    assert shipped == layout_json(), "run: python -m tools.foxglove_layout docs/foxglove-layout.json"
    img, spec = np.zeros((28, 28), np.float32), np.zeros((64, 64), np.float32)
    made = {v.topic for m in [Stimulus(modality="visual", t_ns=0, seq=0, data=img),
                              Stimulus(modality="audio", t_ns=0, seq=0, data=spec),
                              Frame(modality="visual", t_ns=0, seq=0, data=np.zeros((4, 4, 3), np.uint8)),
                              Reconstruction(modality="visual", t_ns=0, seq=0, cluster_id=1, cue_modality="audio",
                                             data=img),
                              Reconstruction(modality="audio", t_ns=0, seq=0, cluster_id=1, cue_modality="visual",
                                             data=spec),
                              Excitation(modality="visual", t_ns=0, seq=0, cluster_id=1, node_id=1),
                              Excitation(modality="audio", t_ns=0, seq=0, cluster_id=1, node_id=1),
                              Recall(modality="audio", t_ns=0, seq=0, cluster_id=1, cue_modality="visual",
                                     cue_cluster=1), every_kind()[-2]]
            for v in views(m)}
    named = set(re.findall(r'"(/[a-z]+/[a-z_]+)', shipped))
    assert named and named <= made, named - made


def test_bench_record_measures_both_ways_on_the_same_messages():
    from tools.bench.record import bench_record

    msgs = every_kind()
    r = bench_record([m for m in msgs if m.KIND not in ("credit", "control")] * 20, repeats=1)
    assert r["messages"] == 220 and r["file_mb"]["with_views"] > r["file_mb"]["wire_only"] > 0
    assert r["us_per_message"]["with_views"] > 0 and r["ratio"] > 0


def test_bench_record_reads_a_recording(tmp_path, capsys):
    from replay.recording import RecordingWriter
    from tools.cli import main

    msgs = [m for m in every_kind() if m.KIND not in ("credit", "control")]
    writer = RecordingWriter(tmp_path / "session.mcap")
    for i, m in enumerate(msgs):
        writer.write(encode(m), 1_000 + i, m)
    writer.close()
    assert main(["bench", "record", "--recording", str(tmp_path / "session.mcap"), "--repeats", "1", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["messages"] == len(msgs) and "with_views" in out["us_per_message"]
