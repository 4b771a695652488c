"""Settings of a run: frozen dataclasses, one per part, composed into `Config`.

Settings are apart from state (the arrays the cortex and CDZ mutate). A run folder
stores the resolved config as TOML so every figure can be traced to its knobs.
Command-line overrides (`--set cortex.node_lr=0.02`) must name an existing field.
"""

from __future__ import annotations

import dataclasses
import tomllib
from dataclasses import dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any



@dataclass(frozen=True)
class AutoencoderSettings:
    """One modality's autoencoder (its architecture and training)."""

    arch: str = "conv"  # "conv" (default, chosen by measurement), "mlp" (the original design) or "linear" (PCA)
    code_dim: int = 64  # length of one encoding
    epochs: int = 5  # passes over the training set (MNIST: 5; FSDD: 20 with batch_size=32)
    batch_size: int = 128  # stimuli per gradient step (FSDD: 32)
    lr: float = 1e-3  # Adam learning rate (cosine-decayed to 0 over training)
    noise: float = 0.05  # denoising corruption: std of gaussian noise added to the input, then clipped to [0, 1]
    channels: int = 32  # conv only: channels of the first convolution, doubled after each (capped at 4x)

    def __post_init__(self) -> None:
        if self.arch not in ("conv", "mlp", "linear"):
            raise ValueError(f"arch must be 'conv', 'mlp' or 'linear', got {self.arch!r}")
        if self.code_dim < 1 or self.epochs < 0 or self.batch_size < 1 or self.channels < 1:
            raise ValueError(f"code_dim, batch_size and channels must be >= 1 and epochs >= 0: {self}")
        if not (self.lr > 0 and 0 <= self.noise < 10):
            raise ValueError(f"need lr > 0 and 0 <= noise < 10: {self}")


@dataclass(frozen=True)
class CortexSettings:
    """One modality's node/cluster layer (ALGORITHM.md, seed values).

    Schedules are fractions of `epoch`, the number of stimuli of this modality in
    one pass (the seed's T), so the same defaults scale to any data size.
    """

    initial_nodes: int = 1000  # nodes seeded at the first stimuli, each with its own cluster (seed: 250; see README "Results")
    max_nodes: int = 6000  # growth never exceeds this
    node_lr: float = 0.04  # nearest node moves this fraction towards the encoding
    cluster_node_lr: float = 0.02  # cluster->node link growth (finds a cluster's mode node)
    feedback_lr: float = 0.05  # node->cluster link growth per CDZ feedback (times certainty bonus)
    age_factor: float = 25.0  # certainty ramps up over this many feedbacks
    mature_feedbacks: int = 25  # a node is "new" (not split) until it received this many feedbacks
    split_threshold: float = 5e-3  # a node is ambiguous when 1 - max link weight exceeds this
    split_min_samples: int = 3  # a split child needs more than this many fed-back encodings
    split_children: str = "new"  # a split child gets a "new" cluster (ALGORITHM.md) or "inherit"s the one it was fed towards
    split_per_round_frac: float = 1e-3  # max splits per round = max(frac * epoch, 5)
    prune_nodes_after: float = 1.01  # nodes unused for this * epoch stimuli are deleted
    prune_clusters_after: float = 0.5  # clusters unused for this * epoch stimuli are deleted
    prune_every: float = 0.25  # pruning period, * epoch stimuli
    grow_every: float = 0.3  # growth period, * epoch stimuli
    growth_stop: float = 0.75  # no growth after this share of the stream

    def __post_init__(self) -> None:
        if self.split_children not in ("new", "inherit"):
            raise ValueError(f"cortex.split_children must be 'new' or 'inherit', not {self.split_children!r}")
        if self.initial_nodes < 1 or self.max_nodes < self.initial_nodes:
            raise ValueError("cortex.initial_nodes must be >= 1 and <= cortex.max_nodes")


@dataclass(frozen=True)
class CDZSettings:
    """The convergence-divergence zone between modalities."""

    window_s: float = 1.0  # B: excitations at most this far apart (event time) are correlated
    kernel: str = "flat"  # w(dt) on [0, B]: "flat" or "gaussian" (sigma = B / 2)
    cdz_lr: float = 0.02  # growth of the earlier->later connection
    backward_gain: float = 0.5  # later->earlier grows by this times as much (0 = strict one-way)
    age_factor: float = 25.0  # connection-row certainty ramps up over this many updates
    reorder_slack_s: float = 0.5  # excitations may arrive this late (event time) and still pair


    def __post_init__(self) -> None:
        if self.window_s < 0 or self.cdz_lr <= 0 or self.backward_gain < 0 or self.age_factor <= 0:
            raise ValueError("cdz: window_s and backward_gain must be >= 0, cdz_lr and age_factor > 0")
        if self.kernel not in ("flat", "gaussian"):
            raise ValueError(f"cdz.kernel must be 'flat' or 'gaussian', not {self.kernel!r}")


@dataclass(frozen=True)
class RefineSettings:
    """Refinement phases between stream segments (README, "Details the rules leave open").

    At each point of `at` (shares of the stream) the stream pauses: the merge rule
    splits classes that the other sense sees as two, then each encoder is taught by
    the other sense and the nodes follow the new encodings.
    """

    at: tuple[float, ...] = (0.4, 0.7)  # refinement points, shares of the stream; [] = none
    merge_conductance: float = 0.3  # split a class whose best cross-modal cut is below this; 0 = no merge rule
    merge_min_side: float = 0.1  # each side of such a cut holds at least this share of the pairs
    teach_weight: float = 0.3  # weight of the cross-modal term beside reconstruction; 0 = no teaching
    teach_sharpness: float = 10.0  # prototype softmax temperature = mean squared distance to own prototype / this
    teach_epochs: int = 1  # passes over the paired stimuli per refinement
    teach_min_steps: int = 400  # at least this many gradient steps (small sets take more passes)
    teach_lr: float = 1e-3  # Adam learning rate, cosine-decayed within a refinement
    augment: bool = True  # teach on augmented stimuli (replay.augment)

    def __post_init__(self) -> None:
        if any(not 0.0 < a < 1.0 for a in self.at) or list(self.at) != sorted(set(self.at)):
            raise ValueError(f"refine.at must be increasing shares of the stream in (0, 1), got {list(self.at)}")
        if not (0.0 <= self.merge_conductance <= 1.0 and 0.0 < self.merge_min_side < 0.5):
            raise ValueError("refine: need 0 <= merge_conductance <= 1 and 0 < merge_min_side < 0.5")
        if not (self.teach_weight >= 0 and self.teach_epochs >= 1 and self.teach_min_steps >= 0
                and self.teach_lr > 0 and self.teach_sharpness > 0):
            raise ValueError("refine: need teach_weight >= 0, teach_epochs >= 1, teach_min_steps >= 0, "
                             "teach_lr > 0, teach_sharpness > 0")


@dataclass(frozen=True)
class SleepSettings:
    """Consolidation of lived experience into the encoders (`cdz sleep`; README, "Details the rules leave open").

    The encoders are taught on the buffered stimuli with the other sense's targets,
    while a replay of old stimuli, each pulled towards the cluster it excites now,
    keeps what the agent already knew.
    """

    buffer: int = 10_000  # stimuli kept per sense in live mode (the experience buffer)
    replay: str = "stimuli"  # what is mixed in against forgetting: "stimuli" (old ones), "modes" (decoded nodes), "none"
    replay_size: int = 5000  # old stimuli (or decoded nodes) per sense mixed in
    experience_share: float = 0.5  # lived stimuli are repeated to make about this share of what is taught
    teach_weight: float = 1.0  # weight of the cross-modal term beside reconstruction
    teach_sharpness: float = 10.0  # as refine.teach_sharpness
    teach_epochs: int = 2  # passes over experience plus replay
    teach_min_steps: int = 1000  # at least this many gradient steps
    teach_lr: float = 1e-2  # Adam learning rate, cosine-decayed within a sleep
    augment: bool = True  # teach on augmented copies (images; sounds as spectrograms: replay.augment)
    novel: float = 0.65  # a sense is taught only if this share of its lived stimuli is unlike old ones (agent.sleep)
    rehearse: float = 0.005  # share of all stimuli learned so far that are lived again after teaching (whole passes)

    def __post_init__(self) -> None:
        if self.replay not in ("stimuli", "modes", "none"):
            raise ValueError(f"sleep.replay must be 'stimuli', 'modes' or 'none', not {self.replay!r}")
        if not 0.0 <= self.experience_share < 1.0:
            raise ValueError(f"sleep.experience_share must be in [0, 1), got {self.experience_share}")
        if not 0.0 <= self.novel <= 1.0:
            raise ValueError(f"sleep.novel must be in [0, 1], got {self.novel}")
        if not (0 <= self.rehearse <= 1 and self.buffer >= 1 and self.replay_size >= 0 and self.teach_weight >= 0 and self.teach_epochs >= 1
                and self.teach_min_steps >= 0 and self.teach_lr > 0 and self.teach_sharpness > 0):
            raise ValueError("sleep: need buffer >= 1, replay_size >= 0, teach_weight >= 0, teach_epochs >= 1, "
                             "teach_min_steps >= 0, teach_lr > 0, teach_sharpness > 0")


@dataclass(frozen=True)
class TeacherSettings:
    """The flash-card parent that makes the paired replay stream (EVALUATION.md)."""

    lag_s: tuple[float, float] = (-0.2, 0.5)  # audio onset relative to the image, uniform range
    gap_s: float = 1.5  # time between two teaching events
    p_unpaired: float = 0.0  # share of events showing only one modality
    p_mismatch: float = 0.0  # share of events whose two stimuli are different digits
    epochs: float = 10.0  # stream length in passes over the largest training set

    def __post_init__(self) -> None:
        if not self.epochs > 0:
            raise ValueError(f"teacher.epochs must be positive, got {self.epochs}")


@dataclass(frozen=True)
class DataSettings:
    """Which data the replay uses (labels are read only by the scorer)."""

    digits: tuple[int, ...] = (0, 1, 2, 3, 4, 5, 6, 7, 8, 9)
    per_class: int | None = None  # first N per class of each training set (small runs, tests)
    test_per_class: int | None = None  # same for the test sets
    speakers: tuple[str, ...] = ()  # FSDD speakers used (train and test); empty: all six
    exclude_speakers: tuple[str, ...] = ()  # FSDD speakers held out of training (and the only ones tested)


@dataclass(frozen=True)
class Config:
    seed: int = 0
    modalities: tuple[str, ...] = ("visual", "audio")
    data: DataSettings = field(default_factory=DataSettings)
    visual_encoder: AutoencoderSettings = field(default_factory=AutoencoderSettings)
    # FSDD (2,700 spectrograms, six speakers): the linear autoencoder (PCA) gave purer nodes than the
    # conv one (k-means purity at 1,000 centroids 0.92 vs 0.89) and 10 classes instead of 8-9.
    audio_encoder: AutoencoderSettings = field(default_factory=lambda: AutoencoderSettings(arch="linear"))
    cortex: CortexSettings = field(default_factory=CortexSettings)
    cdz: CDZSettings = field(default_factory=CDZSettings)
    teacher: TeacherSettings = field(default_factory=TeacherSettings)
    refine: RefineSettings = field(default_factory=RefineSettings)
    sleep: SleepSettings = field(default_factory=SleepSettings)

    def encoder(self, modality: str) -> AutoencoderSettings:
        return getattr(self, f"{modality}_encoder")


def to_dict(obj: Any) -> dict[str, Any]:
    """Plain nested dict of a settings dataclass (tuples become lists, for TOML/JSON)."""

    def plain(v: Any) -> Any:
        if is_dataclass(v):
            return {f.name: plain(getattr(v, f.name)) for f in fields(v)}
        if isinstance(v, (tuple, list)):
            return [plain(x) for x in v]
        return v

    return plain(obj)


def from_dict(cls: type, data: dict[str, Any]) -> Any:
    """Rebuild a settings dataclass from `to_dict` output; unknown keys are an error."""
    known = {f.name: f for f in fields(cls)}
    unknown = set(data) - set(known)
    if unknown:
        raise KeyError(f"unknown {cls.__name__} setting(s): {sorted(unknown)}; known: {sorted(known)}")
    kwargs = {}
    defaults = cls()
    for name, value in data.items():
        current = getattr(defaults, name)
        if is_dataclass(current):
            kwargs[name] = from_dict(type(current), value)
        elif isinstance(current, tuple) or (name in ("digits", "lag_s", "modalities", "speakers", "exclude_speakers")):
            kwargs[name] = tuple(value) if value is not None else None
        else:
            kwargs[name] = value
    return cls(**kwargs)


def override(config: Config, assignments: list[str]) -> Config:
    """Apply `section.field=value` strings; the field must exist, the value is parsed as TOML."""
    for text in assignments:
        if "=" not in text:
            raise ValueError(f"override {text!r} must look like section.field=value")
        key, raw = text.split("=", 1)
        path = key.strip().split(".")
        try:
            value = tomllib.loads(f"v = {raw.strip()}")["v"]
        except tomllib.TOMLDecodeError:
            value = raw.strip()  # bare words such as kernel=gaussian
        config = _replace_path(config, path, value, key)
    return config


def _replace_path(obj: Any, path: list[str], value: Any, key: str) -> Any:
    names = {f.name for f in fields(obj)}
    if path[0] not in names:
        raise KeyError(f"--set {key}: {type(obj).__name__} has no field {path[0]!r}; fields: {sorted(names)}")
    current = getattr(obj, path[0])
    if len(path) == 1:
        if is_dataclass(current):
            raise KeyError(f"--set {key}: {path[0]!r} is a section, name one of its fields")
        if isinstance(current, tuple) and isinstance(value, list):
            value = tuple(value)
        elif isinstance(current, float) and isinstance(value, int):
            value = float(value)
        return dataclasses.replace(obj, **{path[0]: value})
    if not is_dataclass(current):
        raise KeyError(f"--set {key}: {path[0]!r} is not a section")
    return dataclasses.replace(obj, **{path[0]: _replace_path(current, path[1:], value, key)})


def save_toml(config: Config, path: Path) -> None:
    """Write the resolved config as TOML (a tiny writer: the config is flat sections of scalars/lists)."""
    lines: list[str] = []
    top = to_dict(config)
    for key, value in top.items():
        if not isinstance(value, dict):
            lines.append(f"{key} = {_toml_value(value)}")
    for key, value in top.items():
        if isinstance(value, dict):
            lines.append(f"\n[{key}]")
            lines.extend(f"{k} = {_toml_value(v)}" for k, v in value.items() if v is not None)
    path.write_text("\n".join(lines) + "\n")


def load_toml(path: Path) -> Config:
    return from_dict(Config, tomllib.loads(path.read_text()))


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    raise TypeError(f"cannot write {v!r} to TOML")
