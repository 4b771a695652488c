"""A run's learning pipeline around the rules: one implementation for `cdz train`,
the distributed runtime and every tool that reads a run.

Encoders are trained (or reloaded) and every split encoded; the brain is built
for the teaching stream; refinement phases pause the stream and retrain the
encoders; a finished run is loaded back from its folder, checked whole.
"""

from __future__ import annotations

from functools import partial
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np

from agent.core.autoencoder import Autoencoder, encode, load_autoencoder, save_autoencoder, train_autoencoder
from agent.core.brain import Brain
from agent.core.checkpoint import RunError, RunFolder, load_arrays, save_arrays
from agent.core.config import Config, SettingsError
from agent.core.session_mean import heard_as_session
from agent.core.state_check import StateError, check_arrays
from replay.data.senses import make_augmenters
from replay.data.splits import load_splits, load_splits_x
from agent.core.stream import Stream
from agent.core.threads import at_once
from replay.data.teacher import teaching_stream


@dataclass(frozen=True)
class Encodings:
    """Train/test encodings and labels per modality, as stored in encodings.npz."""

    train: dict[str, np.ndarray]
    train_y: dict[str, np.ndarray]
    test: dict[str, np.ndarray]
    test_y: dict[str, np.ndarray]

    def arrays(self) -> dict[str, np.ndarray]:
        out = {}
        for m in self.train:
            out |= {f"{m}.train.z": self.train[m], f"{m}.train.y": self.train_y[m],
                    f"{m}.test.z": self.test[m], f"{m}.test.y": self.test_y[m]}
        return out

    @classmethod
    def load(cls, run: RunFolder, modalities: tuple[str, ...]) -> "Encodings":
        a = load_arrays(run.encodings_path)
        for m in modalities:  # whole and consistent, or a clear error naming the file
            try:
                check_arrays(a, {f"{m}.train.z": ("f", ("n", "d")), f"{m}.train.y": ("i", ("n",)),
                                 f"{m}.test.z": ("f", ("k", "d")), f"{m}.test.y": ("i", ("k",))}, m)
            except StateError as e:
                raise RunError(f"damaged {run.encodings_path}: {e}") from None
        return cls(*({m: a[f"{m}.{part}"] for m in modalities} for part in ("train.z", "train.y", "test.z", "test.y")))


def build_stream(config: Config, enc: Encodings) -> Stream:
    """The teacher's stream; a SettingsError if some sense would be shown nothing before the
    first refinement (which needs nodes in every sense) or at all."""
    stream = teaching_stream(config, enc.train_y)
    first = min((int(round(a * len(stream))) for a in config.refine.at), default=len(stream))
    shown = set(np.unique(stream.modality[:first]).tolist())
    silent = [m for k, m in enumerate(stream.modalities) if k not in shown]
    if silent:
        raise SettingsError(f"teacher.epochs={config.teacher.epochs:g} makes a stream of {len(stream)} stimuli that "
                            f"shows no {silent[0]} stimulus before its first refinement: raise teacher.epochs")
    return stream


def build_brain(config: Config, enc: Encodings, stream: Stream) -> Brain:
    dims = {m: enc.train[m].shape[1] for m in config.modalities}
    epochs = {m: max(1, int(stream.count(m) / config.teacher.epochs)) for m in config.modalities}
    return Brain(config, dims, epochs)


def train_encoders(config: Config, run: RunFolder, progress: bool = True) -> Encodings:
    """Train (or, when already in the run folder, reload) each modality's autoencoder and encode."""
    train_data, test_data = load_splits(config, "train"), load_splits(config, "test")
    enc = Encodings({}, {}, {}, {})
    todo = [m for m in config.modalities if not run.encoder_path(m).exists()]
    # the senses train at the same time, one thread each (torch's heavy ops release the GIL):
    # the same bits as one after the other, in about the time of the slowest
    trained = at_once({m: partial(train_autoencoder, train_data[m].x, config.encoder(m),
                                  seed=config.seed * 1000 + config.modalities.index(m), desc=f"{m} autoencoder",
                                  progress=progress) for m in todo})
    for m in config.modalities:
        path = run.encoder_path(m)
        if m in trained:
            model, info = trained[m]
            path.parent.mkdir(parents=True, exist_ok=True)
            save_autoencoder(model, run.stage_encoder_path(m, 0))
            save_autoencoder(model, path)
            run.log(f"{m} autoencoder trained: {info}")
        else:
            model = load_autoencoder(path)
        enc.train[m], enc.test[m] = encode(model, train_data[m].x), test_encodings(config, m, model, test_data[m].x)
        enc.train_y[m], enc.test_y[m] = train_data[m].y, test_data[m].y
    save_arrays(run.encodings_path, enc.arrays())
    return enc


def test_encodings(config: Config, modality: str, model: Autoencoder, x: np.ndarray,
                   before: np.ndarray | None = None) -> np.ndarray:
    """Encodings of a test set, heard as one session after training (agent.core.session_mean), after
    `before` if the session heard that first."""
    return encode(model, heard_as_session(x, model, config.sense(modality), config.seed, before))


def recorded_stream(path: Path | str, config: Config,
                    run: RunFolder) -> tuple[Stream, dict[str, np.ndarray], dict[str, np.ndarray]]:
    """The stimuli of a recorded session (`cdz record`) as a stream, their encodings and the stimuli.

    Stimuli are taken once each (a lossless player's re-sends and the replays after a
    rewind repeat a source's per-modality sequence number), thoughts are left out, and
    the order is by event time, ties in recording order. Labels are unknown (-1).
    """
    from agent.core.autoencoder import load_autoencoder
    from agent.core.messages import Stimulus
    from replay.recording import decode_recording

    seen: set[tuple] = set()
    rows: dict[str, list[np.ndarray]] = {m: [] for m in config.modalities}
    t_ns, mod, index = [], [], []
    for msg in decode_recording(path, topics=["stimulus."]):
        if not isinstance(msg, Stimulus) or msg.internal or msg.modality not in rows:
            continue
        key = (msg.source, msg.modality, msg.mseq)
        if key in seen:
            continue
        seen.add(key)
        t_ns.append(msg.t_ns)
        mod.append(config.modalities.index(msg.modality))
        index.append(len(rows[msg.modality]))
        rows[msg.modality].append(np.array(msg.data, np.float32))
    missing = [m for m, r in rows.items() if not r]
    if missing:
        raise RunError(f"{path} holds no {' or '.join(missing)} stimuli to learn from")
    order = np.argsort(np.array(t_ns, np.int64), kind="stable")
    t = np.array(t_ns, np.int64)[order] / 1e9
    stream = Stream(tuple(config.modalities), t, np.array(mod, np.int64)[order], np.array(index, np.int64)[order],
                    np.arange(len(t), dtype=np.int64), np.full(len(t), -1, np.int64))
    x = {m: np.stack(r) for m, r in rows.items()}
    codes = {m: encode(load_autoencoder(run.encoder_path(m)), x[m]) for m in x}
    return stream, codes, x


class Refinements:
    """When and how a run pauses its stream to refine (agent.core.refine), and how it resumes.

    The encoders after refinement k are kept as `encoders/<m>.stage<k>.pt`; the
    checkpoint's `refinements` count says which stage its nodes belong to, so a run
    resumed from any checkpoint continues with the encoders that fit it.
    """

    def __init__(self, config: Config, run: RunFolder, stream: Stream, from_files: bool,
                 x_learn: dict[str, np.ndarray] | None = None):
        self.config, self.run, self.stream = config, run, stream
        self.points = [int(round(a * len(stream))) for a in config.refine.at]
        self.from_files = from_files
        self._x_learn = x_learn
        self._x_test: dict[str, np.ndarray] | None = None

    def due(self, brain: Brain, step: int) -> bool:
        return step in self.points and brain.refinements == self.points.index(step)

    def _data(self) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        if self._x_learn is None:
            self._x_learn = {m: s.x for m, s in load_splits(self.config, "train").items()}
        if self._x_test is None:
            self._x_test = {m: s.x for m, s in load_splits(self.config, "test").items()}
        return self._x_learn, self._x_test

    def _encodings(self, models: dict, codes: dict[str, np.ndarray], enc: Encodings) -> Encodings:
        _, x_test = self._data()
        train_z = codes if self.from_files else {m: encode(models[m], x) for m, x in
                                                 load_splits_x(self.config, "train").items()}
        return Encodings(train_z, enc.train_y, {m: test_encodings(self.config, m, models[m], x_test[m]) for m in models},
                         enc.test_y)

    def apply(self, brain: Brain, codes: dict[str, np.ndarray], enc: Encodings,
              step: int) -> tuple[dict[str, np.ndarray], Encodings]:
        """Refinement number `brain.refinements` at `step`; saves the new encoders and encodings."""
        from agent.core.refine import refine

        x_learn, _ = self._data()
        models = {m: load_autoencoder(self.run.encoder_path(m)) for m in self.config.modalities}
        augmenters = make_augmenters(self.config, x_learn, self.from_files) if self.config.refine.augment else None
        codes, report = refine(brain, models, x_learn, codes, self.stream, step, self.config.refine,
                               self.config.seed * 100 + brain.refinements, augmenters)
        brain.refinements += 1
        for m, model in models.items():
            save_autoencoder(model, self.run.stage_encoder_path(m, brain.refinements))
            save_autoencoder(model, self.run.encoder_path(m))
        enc = self._encodings(models, codes, enc)
        save_arrays(self.run.encodings_path, enc.arrays())
        self.run.log(f"refinement {brain.refinements} at stimulus {step}: {report.summary()}")
        return codes, enc

    def resume(self, refinements: int, enc: Encodings) -> tuple[dict[str, np.ndarray], Encodings]:
        """Encoders and encodings of stage `refinements`, for a run resumed after it."""
        x_learn, _ = self._data()
        models = {m: load_autoencoder(self.run.stage_encoder_path(m, refinements)) for m in self.config.modalities}
        for m, model in models.items():
            save_autoencoder(model, self.run.encoder_path(m))
        codes = {m: encode(models[m], x_learn[m]) for m in models}
        enc = self._encodings(models, codes, enc)
        save_arrays(self.run.encodings_path, enc.arrays())
        return codes, enc


def save_stream_log(run: RunFolder, stream: Stream, logs: list[tuple[np.ndarray, np.ndarray]]) -> None:
    """stream.npz: the teaching stream and what the brain did at each stimulus (for learning curves)."""
    cluster = np.concatenate([c for c, _ in logs]) if logs else np.zeros(0, np.int64)
    recalled = np.concatenate([r for _, r in logs]) if logs else np.zeros(0, np.int64)
    save_arrays(run.stream_path, {
        "t": stream.t, "modality": stream.modality, "index": stream.index, "event": stream.event,
        "label": stream.label, "cluster": cluster, "recalled": recalled,
        "modalities": np.array(stream.modalities),
    })


class LoadedRun(NamedTuple):
    """A trained run rebuilt from its folder."""

    config: Config
    enc: Encodings
    brain: Brain
    learned: int  # stimuli learned at the checkpoint
    stream_length: int  # stimuli in the whole teaching stream


def load_brain(run: RunFolder, checkpoint: tuple[int, dict[str, np.ndarray]] | None = None) -> LoadedRun:
    """Rebuild the trained brain of a run from its config, encodings and last checkpoint
    (or `checkpoint`, a (step, state) the caller already read). A run unpacked from a pack
    has its data encoded by its own encoders on first use."""
    config = run.config()
    if run.encodings_path.exists() or not all(run.encoder_path(m).exists() for m in config.modalities):
        enc = Encodings.load(run, config.modalities)
    else:  # a pack's run folder holds no encodings: encode the data with its encoders, once
        enc = train_encoders(config, run, progress=False)
    with run.restoring(checkpoint) as (step, state):
        # the checkpoint brings each cortex's epoch: the 1 here is a placeholder
        brain = Brain(config, {m: enc.train[m].shape[1] for m in config.modalities}, {m: 1 for m in config.modalities})
        brain.load_state_dict(state)
    if run.stream_path.exists():  # the stream it learned (the teacher's, or a recording's)
        length = len(load_arrays(run.stream_path)["t"])
    else:
        length = len(build_stream(config, enc))
    return LoadedRun(config, enc, brain, step, length)
