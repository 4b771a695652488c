"""What Foxglove shows of each wire message: images and plain JSON on topics of their own.

The wire frames (`agent.runtime.wire`) are exact but opaque to other tools. Each message
also becomes zero or more *views*, encoded with the Foxglove SDK's own schemas
(`foxglove.messages.RawImage`, protobuf) or as JSON with a JSON schema that
describes it, so Foxglove's image, plot, state-transition and raw-message panels
show them without any plugin:

* `/<sense>/camera`     camera preview frames (`frame.`): RawImage bgr8 or mono8
* `/<sense>/stimulus`   what a sense sees or hears (`stimulus.`): RawImage mono8; a
                        spectrogram has time along x and low mels at the bottom.
                        A stimulus of at most 16 numbers (a reward) is JSON `values`.
* `/<sense>/thought`    internal stimuli of a stream of thought, as `/stimulus`
* `/<sense>/imagined`   the reconstruction a recall decodes (`recon.`), as `/stimulus`
* `/<sense>/fires`      JSON: the cluster an excitation fired (plot `.cluster_id`)
* `/<sense>/recalls`    JSON: the cluster a cue recalled in this sense
* `/<sense>/clusters`   JSON: clusters created and deleted
* `/weights/<a>-<b>`    the CDZ matrix a->b as a mono8 heat map (scaled to its max)
* `/stats/<source>`     JSON: every process's rates, queues, drops and latencies

Every view is stamped with the message's event time (`t_ns`, clamped to 0 .. 2**32 s): the
recording's timeline (`replay.recording`) and the live server (`tools.foxglove_live`)
use it as log time. Feedback and control messages have no view.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache

import numpy as np
from foxglove import Schema
from foxglove.messages import RawImage, Timestamp

from agent.core.messages import ClusterChange, Excitation, Frame, Message, Recall, Reconstruction, Stats, Stimulus, Weights

VALUE_SIZE = 16  # a stimulus of at most this many numbers (a reward) is shown as numbers, not as an image (here,
# in the viewer and in `cdz recall`)
JSON = "json"
PROTOBUF = "protobuf"


@dataclass(frozen=True)
class View:
    """One message as Foxglove shows it: topic, schema, encoded bytes and event time."""

    topic: str
    schema: Schema
    encoding: str  # the message encoding: "protobuf" (Foxglove schemas) or "json"
    data: bytes
    t_ns: int


# ---------------------------------------------------------------------- schemas
_INT, _NUM, _STR, _BOOL = {"type": "integer"}, {"type": "number"}, {"type": "string"}, {"type": "boolean"}
_IDS = {"type": "array", "items": _INT}
_COMMON = {"t_ns": {**_INT, "description": "event time of the stimulus, ns"}, "seq": _INT,
           "source": {**_STR, "description": "the process that sent it"}}
_JSON_SCHEMAS: dict[str, dict] = {
    "fires": {"description": "A stimulus of this sense excited a node; the node's cluster fired.",
              "properties": {**_COMMON, "cluster_id": _INT, "node_id": _INT, "strength": _NUM,
                             "name": {"type": ["integer", "null"],
                                      "description": "the digit (or reward class) the cluster stands for, when known"},
                             "learn": _BOOL, "internal": {**_BOOL, "description": "the stimulus was a thought"}}},
    "recalls": {"description": "A cue in another sense recalled this cluster of this sense (CDZ, rule 7).",
                "properties": {**_COMMON, "cluster_id": _INT, "name": {"type": ["integer", "null"]},
                               "cue_modality": _STR, "cue_cluster": _INT, "internal": _BOOL, "depth": _INT}},
    "clusters": {"description": "Clusters of this sense created and deleted by seeding, growth or pruning.",
                 "properties": {**_COMMON, "created": _IDS, "deleted": _IDS}},
    "values": {"description": "A stimulus or reconstruction of a few numbers (a reward), written out.",
               "properties": {**_COMMON, "values": {"type": "array", "items": _NUM}}},
    "stats": {"description": "A process's stats, about once a second: rates, queue depths, drops, latencies.",
              "properties": {"source": _STR},
              "additionalProperties": {"type": ["boolean", "integer", "number", "string"]}},
}


@cache
def json_schema(kind: str) -> Schema:
    """The JSON schema of one JSON view kind (fires, recalls, clusters, values, stats)."""
    body = {"$schema": "https://json-schema.org/draft/2020-12/schema", "title": f"cdz.view.{kind}",
            "type": "object", **_JSON_SCHEMAS[kind]}
    return Schema(name=f"cdz.view.{kind}", encoding="jsonschema", data=json.dumps(body).encode())


@cache
def image_schema() -> Schema:
    return RawImage.get_schema()


# ---------------------------------------------------------------------- conversion
MAX_T_NS = (2**32 - 1) * 1_000_000_000  # a Foxglove timestamp's seconds are 32-bit


def log_time(t_ns: int) -> int:
    """An event time as a recording's log time: clamped to 0 .. 2**32 s."""
    return min(max(0, int(t_ns)), MAX_T_NS)


def _stamp(t_ns: int) -> tuple[int, Timestamp]:
    t = log_time(t_ns)
    return t, Timestamp(sec=t // 1_000_000_000, nsec=t % 1_000_000_000)


def mono8(arr: np.ndarray) -> np.ndarray:
    """A 2-D array as uint8 grey: floats are stimuli in [0, 1] (clipped there; NaN is white),
    integers (raw samples) are scaled from their min to their max."""
    if arr.dtype == np.uint8:
        return np.ascontiguousarray(arr)
    if arr.dtype.kind == "f":
        grey = arr * np.float32(255.0)
        grey += np.float32(0.5)
        np.fmin(grey, np.float32(255.0), out=grey)  # fmin and fmax take the number over a NaN
        np.fmax(grey, np.float32(0.0), out=grey)
        return grey.astype(np.uint8)
    lo, hi = (float(arr.min()), float(arr.max())) if arr.size else (0.0, 1.0)
    return ((arr.astype(np.float32) - lo) * np.float32(255.0 / max(hi - lo, 1e-12)) + 0.5).astype(np.uint8)


def _image(topic: str, t_ns: int, frame_id: str, arr: np.ndarray) -> View:
    t, stamp = _stamp(t_ns)
    if arr.ndim == 3 and arr.shape[2] == 3:
        pixels, encoding = np.ascontiguousarray(arr.astype(np.uint8, copy=False)), "bgr8"
    else:
        pixels, encoding = mono8(arr.reshape(arr.shape[0], -1)), "mono8"
    h, w = pixels.shape[:2]
    msg = RawImage(timestamp=stamp, frame_id=frame_id, width=w, height=h, encoding=encoding,
                   step=pixels.strides[0], data=pixels.tobytes())
    return View(topic, image_schema(), PROTOBUF, msg.encode(), t)


_JSON_ENCODER = json.JSONEncoder(separators=(",", ":"))


def _json(topic: str, kind: str, t_ns: int, body: dict) -> View:
    return View(topic, json_schema(kind), JSON, _JSON_ENCODER.encode(body).encode(), log_time(t_ns))


def _picture(topic: str, msg: Stimulus | Reconstruction) -> View:
    """A stimulus-like array: an image (a spectrogram with low mels at the bottom), or its numbers."""
    data = msg.data
    if data.size <= VALUE_SIZE:
        return _json(topic, "values", msg.t_ns, {"t_ns": msg.t_ns, "seq": msg.seq, "source": msg.source,
                                                  "values": [float(v) for v in data.ravel()]})
    return _image(topic, msg.t_ns, msg.modality, data[::-1] if msg.modality == "audio" else data)


def views(msg: Message, names: dict[str, dict[int, int]] | None = None) -> list[View]:
    """The Foxglove views of one wire message (`names`: per sense, cluster id -> scoring name)."""
    names = names or {}
    if isinstance(msg, Stimulus):
        return [_picture(f"/{msg.modality}/{'thought' if msg.internal else 'stimulus'}", msg)]
    if isinstance(msg, Reconstruction):
        return [_picture(f"/{msg.modality}/imagined", msg)]
    if isinstance(msg, Frame):
        return [_image(f"/{msg.modality}/camera", msg.t_ns, msg.modality, msg.data)]
    common = {"t_ns": msg.t_ns, "seq": msg.seq, "source": msg.source}
    if isinstance(msg, Excitation):
        return [_json(f"/{msg.modality}/fires", "fires", msg.t_ns, {
            **common, "cluster_id": msg.cluster_id, "node_id": msg.node_id, "strength": msg.strength,
            "name": names.get(msg.modality, {}).get(msg.cluster_id), "learn": msg.learn, "internal": msg.internal})]
    if isinstance(msg, Recall):
        return [_json(f"/{msg.modality}/recalls", "recalls", msg.t_ns, {
            **common, "cluster_id": msg.cluster_id, "name": names.get(msg.modality, {}).get(msg.cluster_id),
            "cue_modality": msg.cue_modality, "cue_cluster": msg.cue_cluster, "internal": msg.internal,
            "depth": msg.depth})]
    if isinstance(msg, ClusterChange):
        return [_json(f"/{msg.modality}/clusters", "clusters", msg.t_ns,
                      {**common, "created": list(msg.created), "deleted": list(msg.deleted)})]
    if isinstance(msg, Weights):
        return [_image(f"/weights/{msg.modality}-{msg.target}", msg.t_ns, msg.modality,
                       msg.data / max(float(msg.data.max(initial=0.0)), 1e-12))]
    if isinstance(msg, Stats):
        return [_json(f"/stats/{msg.source or 'unknown'}", "stats", msg.t_ns, {**msg.values, "source": msg.source})]
    return []
