"""`cdz train`: encoders first, then stream learning from the teacher, into a run folder.

Phases: load data -> train one autoencoder per modality -> encode train and test
sets -> build the teacher stream -> learn it stimulus by stimulus, with atomic
checkpoints -> save the stream log. Labels are stored beside the encodings for
the scorer; the learner never reads them.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from tqdm import tqdm

from agent.autoencoder import encode, load_autoencoder, save_autoencoder, train_autoencoder
from agent.brain import Brain, learn_stream
from agent.checkpoint import RunError, RunFolder, load_arrays, new_run, save_arrays
from agent.config import Config
from agent.state_check import StateError, check_arrays
from replay.datasets import Split, load_modality
from replay.teacher import Stream, make_stream


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


def _train_filters(config: Config, modality: str) -> dict:
    """load_modality's filters for a modality's training split."""
    d = config.data
    kw: dict = {"digits": list(d.digits), "per_class": d.per_class}
    if modality == "audio" and d.speakers:
        kw["speakers"] = list(d.speakers)
    if modality == "audio" and d.exclude_speakers:
        kw["exclude_speakers"] = list(d.exclude_speakers)
    return kw


def load_splits(config: Config, split: str) -> dict[str, Split]:
    """The data of every modality for one split, filtered as the config says."""
    d = config.data
    out = {}
    for m in config.modalities:
        if split == "train":
            out[m] = load_modality(m, split, **_train_filters(config, m))
            continue
        kw: dict = {"digits": list(d.digits), "per_class": d.test_per_class}
        if m == "audio" and d.speakers:
            kw["speakers"] = list(d.speakers)
        if m == "audio" and d.exclude_speakers:
            # held-out speakers were never heard: all of their recordings are test material
            kw["speakers"] = list(d.exclude_speakers)
            out[m] = _concat([load_modality(m, part, **kw) for part in ("train", "test")])
            continue
        out[m] = load_modality(m, split, **kw)
    return out


def make_augmenters(config: Config, x_train: dict[str, np.ndarray], from_files: bool = True) -> dict:
    """Seeded augmentation of each modality's training rows (replay.augment), for teaching.

    Sounds are augmented on their waveforms, so they need the FSDD files
    (`from_files`); without them (a recorded session) sounds are not augmented.
    """
    from replay.augment import ImageAugmenter, SoundAugmenter
    from replay.datasets import list_fsdd_files

    out: dict = {}
    for m in config.modalities:
        if m == "visual":
            images, x = ImageAugmenter(), x_train[m]

            def visual(rows: np.ndarray, seed: int, images=images, x=x) -> torch.Tensor:
                return torch.cat([images(torch.from_numpy(x[rows[i : i + 4096]]), seed + i)
                                  for i in range(0, len(rows), 4096)])

            out[m] = visual
        elif m == "audio" and from_files:
            files = list_fsdd_files("train", **_train_filters(config, m))
            if len(files) != len(x_train[m]):
                raise RuntimeError("the FSDD files do not match the audio training split")
            out[m] = SoundAugmenter(files)
    return out


def _concat(parts: list[Split]) -> Split:
    speakers = None if parts[0].speakers is None else np.concatenate([p.speakers for p in parts])
    return Split(parts[0].modality, np.concatenate([p.x for p in parts]), np.concatenate([p.y for p in parts]),
                 tuple(n for p in parts for n in p.names), speakers)


def n_events(config: Config, train: dict[str, np.ndarray]) -> int:
    """Stream length: `teacher.epochs` passes over the largest training set."""
    return max(1, int(round(config.teacher.epochs * max(len(y) for y in train.values()))))


def build_stream(config: Config, enc: Encodings) -> Stream:
    return teaching_stream(config, enc.train_y)


def teaching_stream(config: Config, train_labels: dict[str, np.ndarray]) -> Stream:
    """The run's teaching stream: a function of the config and the training labels only."""
    return make_stream(train_labels, config.teacher, n_events(config, train_labels), config.seed)


def build_brain(config: Config, enc: Encodings, stream: Stream) -> Brain:
    dims = {m: enc.train[m].shape[1] for m in config.modalities}
    epochs = {m: max(1, int(stream.count(m) / config.teacher.epochs)) for m in config.modalities}
    return Brain(config, dims, epochs)


def train_encoders(config: Config, run: RunFolder, progress: bool = True) -> Encodings:
    """Train (or, when already in the run folder, reload) each modality's autoencoder and encode."""
    train_data, test_data = load_splits(config, "train"), load_splits(config, "test")
    enc = Encodings({}, {}, {}, {})
    for k, m in enumerate(config.modalities):
        path = run.encoder_path(m)
        if path.exists():
            model = load_autoencoder(path)
        else:
            model, info = train_autoencoder(train_data[m].x, config.encoder(m), seed=config.seed * 1000 + k,
                                            desc=f"{m} autoencoder", progress=progress)
            path.parent.mkdir(parents=True, exist_ok=True)
            save_autoencoder(model, run.stage_encoder_path(m, 0))
            save_autoencoder(model, path)
            run.log(f"{m} autoencoder trained: {info}")
        enc.train[m], enc.test[m] = encode(model, train_data[m].x), encode(model, test_data[m].x)
        enc.train_y[m], enc.test_y[m] = train_data[m].y, test_data[m].y
    save_arrays(run.encodings_path, enc.arrays())
    return enc


def recorded_stream(path: Path | str, config: Config,
                    run: RunFolder) -> tuple[Stream, dict[str, np.ndarray], dict[str, np.ndarray]]:
    """The stimuli of a recorded session (`cdz record`) as a stream, their encodings and the stimuli.

    Stimuli are taken once each (a lossless player's re-sends and the replays after a
    rewind repeat a source's per-modality sequence number), thoughts are left out, and
    the order is by event time, ties in recording order. Labels are unknown (-1).
    """
    from agent.autoencoder import load_autoencoder
    from agent.wire import Stimulus
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
    """When and how a run pauses its stream to refine (agent.refine), and how it resumes.

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
        return Encodings(train_z, enc.train_y, {m: encode(models[m], x_test[m]) for m in models}, enc.test_y)

    def apply(self, brain: Brain, codes: dict[str, np.ndarray], enc: Encodings,
              step: int) -> tuple[dict[str, np.ndarray], Encodings]:
        """Refinement number `brain.refinements` at `step`; saves the new encoders and encodings."""
        from agent.refine import refine

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


def load_splits_x(config: Config, split: str) -> dict[str, np.ndarray]:
    return {m: s.x for m, s in load_splits(config, split).items()}


def train(config: Config | None, out: Path | str, progress: bool = True, checkpoint_every: int = 100_000,
          resume: bool = False, overwrite: bool = False, recording: Path | str | None = None) -> RunFolder:
    """Run both phases into `out`; with `resume`, continue from the last checkpoint there
    (the config then comes from the run folder and `config` must be None). With `recording`,
    the stream is a recorded session (`cdz record`) instead of the teacher."""
    if resume and recording is not None:
        raise ValueError("a run learned from a recording cannot be resumed; start it again")
    if resume:
        if config is not None:
            raise ValueError("a resumed run keeps the config saved in its folder; do not pass another")
        run = RunFolder(out)
        config = run.config()
    elif config is None:
        raise ValueError("train needs a config (or resume=True with an existing run folder)")
    torch.manual_seed(config.seed)
    t0 = time.perf_counter()
    x_learn: dict[str, np.ndarray] | None = None  # raw stimuli of the stream's rows, for refinement
    if resume:
        enc = Encodings.load(run, config.modalities) if run.encodings_path.exists() else train_encoders(config, run, progress)
        stream, learn_codes = build_stream(config, enc), enc.train
    else:
        with new_run(config, out, overwrite) as run:  # an old run there is deleted once this has started
            enc = train_encoders(config, run, progress)
            if recording is not None:
                stream, learn_codes, x_learn = recorded_stream(recording, config, run)
                run.log(f"learning from the recording {recording}: {len(stream)} stimuli")
            else:
                stream, learn_codes = build_stream(config, enc), enc.train
    t_enc = time.perf_counter() - t0
    brain = build_brain(config, enc, stream)
    start = 0
    if resume and run.latest_checkpoint() is not None:
        start, state = run.load_checkpoint()
        brain.load_state_dict(state)
        run.log(f"resumed at stimulus {start} of {len(stream)}")
    logs = []
    if resume and run.stream_path.exists() and start > 0:
        old = load_arrays(run.stream_path)
        pad = np.full(max(0, start - len(old["cluster"])), -1, np.int64)  # a crash between checkpoint and log
        logs.append((np.concatenate([old["cluster"][:start], pad]), np.concatenate([old["recalled"][:start], pad])))
    phases = Refinements(config, run, stream, recording is None, x_learn)
    if brain.refinements:  # resumed after a refinement: its encoders and encodings
        learn_codes, enc = phases.resume(brain.refinements, enc)
    t1 = time.perf_counter()
    t_refine = 0.0
    bar = tqdm(total=len(stream) - start, desc="stream learning", unit="stim", disable=not progress, mininterval=0.5)
    stops = sorted(set(range(start + checkpoint_every, len(stream), checkpoint_every)) | {len(stream)}
                   | {p for p in phases.points if p > start})
    lo = start
    for hi in stops:
        log = learn_stream(brain, stream, learn_codes, lo, hi, bar=bar)
        logs.append((log.cluster, log.recalled))
        lo = hi
        if phases.due(brain, hi):
            bar.set_description("refining")
            t0r = time.perf_counter()
            learn_codes, enc = phases.apply(brain, learn_codes, enc, hi)
            t_refine += time.perf_counter() - t0r
            bar.set_description("stream learning")
        run.save_checkpoint(hi, brain.state_dict())
        save_stream_log(run, stream, logs)
        bar.set_postfix_str(" ".join(f"{m}:{c.n_nodes}n/{c.n_clusters}c" for m, c in brain.cortices.items()))
    bar.close()
    t_stream = time.perf_counter() - t1
    if start >= len(stream):  # nothing left to learn: keep the existing log
        save_stream_log(run, stream, logs)
    run.update_metrics(train={
        "timing_s": {"encoders": t_enc, "stream": t_stream - t_refine, "refine": t_refine},
        "stimuli": len(stream) - start,
        "stream_stimuli_per_s": (len(stream) - start) / (t_stream - t_refine) if t_stream > t_refine else None,
        "rejected": brain.rejected,
        "nodes": {m: c.n_nodes for m, c in brain.cortices.items()},
        "clusters": {m: c.n_clusters for m, c in brain.cortices.items()},
        "counters": {m: vars(c.counters) for m, c in brain.cortices.items()},
    })
    run.log(f"trained: {len(stream)} stimuli, encoders {t_enc:.1f}s, stream {t_stream - t_refine:.1f}s, "
            f"refinement {t_refine:.1f}s")
    return run


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
    (or `checkpoint`, a (step, state) the caller already read)."""
    config = run.config()
    enc = Encodings.load(run, config.modalities)
    with run.restoring(checkpoint) as (step, state):
        if all(f"cortex.{m}.epoch" in state for m in config.modalities):  # the checkpoint brings each epoch
            brain = Brain(config, {m: enc.train[m].shape[1] for m in config.modalities},
                          {m: 1 for m in config.modalities})
        else:  # older checkpoints: the epoch follows from the teaching stream
            brain = build_brain(config, enc, build_stream(config, enc))
        brain.load_state_dict(state)
    if run.stream_path.exists():  # the stream it learned (the teacher's, or a recording's)
        length = len(load_arrays(run.stream_path)["t"])
    else:
        length = len(build_stream(config, enc))
    return LoadedRun(config, enc, brain, step, length)
