"""Settings of a run: frozen dataclasses, one per part, composed into `Config`.

Settings are apart from state (the arrays the cortex and CDZ mutate). A run folder
stores the resolved config as TOML so every figure can be traced to its knobs.

Every field is checked where settings enter, before any folder is made or data
read: pydantic dataclasses in strict mode check each field's type (an integer is
an integer, not 2.5 or true; numbers are finite) and its range from the
annotation, and `__post_init__` checks what spans fields. A bad value is one
`SettingsError` line that names the field, e.g. `--set cortex.node_lr=abc`.
"""

from __future__ import annotations

import tomllib
import typing
from dataclasses import field, fields, is_dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import pydantic
import tomli_w
from pydantic import ConfigDict, Field
from pydantic.dataclasses import dataclass as _pydantic_dataclass

_STRICT = ConfigDict(strict=True, allow_inf_nan=False)


def settings(cls: type) -> type:
    """A frozen settings dataclass whose fields are type- and range-checked on construction."""
    return _pydantic_dataclass(frozen=True, config=_STRICT)(cls)


class SettingsError(ValueError):
    """A setting of the wrong type or out of range; the message names the field."""


# Field types: the range is part of the type, so a setting documents and checks itself.
PositiveInt = Annotated[int, Field(ge=1)]
Count = Annotated[int, Field(ge=0)]
Positive = Annotated[float, Field(gt=0)]
NonNegative = Annotated[float, Field(ge=0)]
Share = Annotated[float, Field(ge=0, le=1)]  # a fraction of something, 0 to 1
Rate = Annotated[float, Field(gt=0, le=1)]  # a learning step that moves part of the way
Digit = Annotated[int, Field(ge=0, le=9)]
Name = Annotated[str, Field(min_length=1, max_length=64)]
Sense = Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]{0,31}$")]  # a modality's name, as it appears in topics and files


@settings
class AutoencoderSettings:
    """One modality's autoencoder (its architecture and training)."""

    arch: Literal["conv", "mlp", "linear", "identity"] = "conv"  # "conv" (default, chosen by measurement), "mlp" (the original design), "linear" (PCA) or "identity" (no encoder)
    code_dim: Annotated[int, Field(ge=1, le=4096)] = 64  # length of one encoding
    epochs: Annotated[int, Field(ge=0, le=10_000)] = 5  # passes over the training set (MNIST: 5; FSDD: 20 with batch_size=32)
    batch_size: Annotated[int, Field(ge=1, le=1_000_000)] = 128  # stimuli per gradient step (FSDD: 32)
    lr: Annotated[float, Field(gt=0, le=10)] = 1e-3  # Adam learning rate (cosine-decayed to 0 over training)
    noise: Annotated[float, Field(ge=0, lt=10)] = 0.05  # denoising corruption: std of gaussian noise added to the input, then clipped to [0, 1]
    channels: Annotated[int, Field(ge=1, le=1024)] = 32  # conv only: channels of the first convolution, doubled after each (capped at 4x)


IDENTITY = AutoencoderSettings(arch="identity")


@settings
class SenseSettings:
    """One sense's table, `[senses.<name>]`: how it is encoded. What the sense is (its
    stimulus shape, data reader and rate) is its declaration (`replay.data.senses`)."""

    encoder: AutoencoderSettings = IDENTITY  # "identity": the stimulus is its own encoding (no autoencoder)
    teach_steps_scale: Annotated[float, Field(gt=0, le=1000)] = 1.0  # a refinement teaches this sense for this many times refine.teach_min_steps
    agree_weight: Annotated[float, Field(ge=0, le=1000)] = 0.0  # a refinement also pulls together the encodings of two augmented copies of each stimulus, with this weight (no labels; 0 = not)
    session_window: Annotated[int, Field(ge=0, le=1_000_000)] = 0  # what is heard after training is rescaled from a session's running mean and spread of each bin (a memory of about this many stimuli) to the training ones (agent.core.session_mean); 0 = not
    session_prior: Annotated[float, Field(gt=0, le=1_000_000)] = 10.0  # the training mean and spread count as this many stimuli at a session's start


def default_senses() -> dict[str, SenseSettings]:
    """The two built-in senses' encoders; any other sense is identity unless its table says otherwise."""
    return {"visual": SenseSettings(AutoencoderSettings()),
            # FSDD (2,700 spectrograms): conv, with more and smaller steps than MNIST needs, half as wide
            # (3.6x cheaper a step), and taught 5x longer in each refinement: new voices are heard better
            # (docs/RESULTS.md, "Hearing new voices" and "Teaching longer").
            # A session's mean and spread are traded for the training ones (docs/RESULTS.md, "A session's mean and spread").
            "audio": SenseSettings(AutoencoderSettings(epochs=20, batch_size=32, channels=16), teach_steps_scale=5.0,
                                   session_window=100)}


@settings
class CortexSettings:
    """One modality's node/cluster layer (docs/LEARNING.md, seed values).

    Schedules are fractions of `epoch`, the number of stimuli of this modality in
    one pass (the seed's T), so the same defaults scale to any data size.
    """

    initial_nodes: Annotated[int, Field(ge=1, le=1_000_000)] = 1000  # nodes seeded at the first stimuli, each with its own cluster (seed: 250; see README "Results")
    max_nodes: Annotated[int, Field(ge=1, le=1_000_000)] = 6000  # growth never exceeds this
    node_lr: Rate = 0.04  # nearest node moves this fraction towards the encoding
    cluster_node_lr: Rate = 0.02  # cluster->node link growth (finds a cluster's mode node)
    feedback_lr: Rate = 0.05  # node->cluster link growth per CDZ feedback (times certainty bonus)
    age_factor: Positive = 25.0  # certainty ramps up over this many feedbacks
    mature_feedbacks: Count = 25  # a node is "new" (not split) until it received this many feedbacks
    split_threshold: Share = 5e-3  # a node is ambiguous when 1 - max link weight exceeds this
    split_min_samples: Count = 3  # a split child needs more than this many fed-back encodings
    split_children: Literal["new", "inherit"] = "new"  # a split child gets a "new" cluster (docs/LEARNING.md) or "inherit"s the one it was fed towards
    split_per_round_frac: Share = 1e-3  # max splits per round = max(frac * epoch, 5)
    prune_nodes_after: Positive = 1.01  # nodes unused for this * epoch stimuli are deleted
    prune_clusters_after: Positive = 0.5  # clusters unused for this * epoch stimuli are deleted
    prune_every: Positive = 0.25  # pruning period, * epoch stimuli
    grow_every: Positive = 0.3  # growth period, * epoch stimuli
    growth_stop: Share = 0.75  # no growth after this share of the stream

    def __post_init__(self) -> None:
        if self.max_nodes < self.initial_nodes:
            raise SettingsError("cortex.initial_nodes must be <= cortex.max_nodes "
                                f"(got {self.initial_nodes} > {self.max_nodes})")


@settings
class CDZSettings:
    """The convergence-divergence zone between modalities."""

    window_s: Annotated[float, Field(ge=0, le=60)] = 1.0  # B: excitations at most this far apart (event time) are correlated
    kernel: Literal["flat", "gaussian"] = "flat"  # w(dt) on [0, B]: "flat" or "gaussian" (sigma = B / 2)
    cdz_lr: Rate = 0.02  # growth of the earlier->later connection
    backward_gain: Annotated[float, Field(ge=0, le=100)] = 0.5  # later->earlier grows by this times as much (0 = strict one-way)
    age_factor: Positive = 25.0  # connection-row certainty ramps up over this many updates
    reorder_slack_s: Annotated[float, Field(ge=0, le=60)] = 0.5  # excitations may arrive this late (event time) and still pair
    max_ahead_s: Annotated[float, Field(gt=0, le=86_400)] = 10.0  # live: an excitation stamped this far ahead of the hub's clock is dropped and counted
    no_feedback_from: tuple[Sense, ...] = ("reward",)  # senses that are taught by feedback but teach none (README: a reward names no digit)


@settings
class RefineSettings:
    """Refinement phases between stream segments (README, "Details the rules leave open").

    At each point of `at` (shares of the stream) the stream pauses: the merge rule
    splits classes that the other sense sees as two, then each encoder is taught by
    the other sense and the nodes follow the new encodings.
    """

    at: tuple[Annotated[float, Field(gt=0, lt=1)], ...] = (0.4, 0.7)  # refinement points, shares of the stream; [] = none
    merge_conductance: Share = 0.3  # split a class whose best cross-modal cut is below this; 0 = no merge rule
    merge_min_side: Annotated[float, Field(gt=0, lt=0.5)] = 0.1  # each side of such a cut holds at least this share of the pairs
    teach_weight: Annotated[float, Field(ge=0, le=1000)] = 0.3  # weight of the cross-modal term beside reconstruction; 0 = no teaching
    teach_sharpness: Positive = 10.0  # prototype softmax temperature = mean squared distance to own prototype / this
    teach_epochs: Annotated[int, Field(ge=1, le=10_000)] = 1  # passes over the paired stimuli per refinement
    teach_min_steps: Annotated[int, Field(ge=0, le=10_000_000)] = 400  # at least this many gradient steps (small sets take more passes)
    teach_lr: Annotated[float, Field(gt=0, le=10)] = 1e-3  # Adam learning rate, cosine-decayed within a refinement
    augment: bool = True  # teach on augmented stimuli (replay.data.augment)

    def __post_init__(self) -> None:
        if list(self.at) != sorted(set(self.at)):
            raise SettingsError(f"refine.at must be increasing shares of the stream, got {list(self.at)}")


@settings
class SleepSettings:
    """Consolidation of lived experience into the encoders (`cdz sleep`; README, "Details the rules leave open").

    The encoders are taught on the buffered stimuli with the other sense's targets,
    while a replay of old stimuli, each pulled towards the cluster it excites now,
    keeps what the agent already knew.
    """

    buffer: Annotated[int, Field(ge=1, le=10_000_000)] = 10_000  # stimuli kept per sense in live mode (the experience buffer)
    replay: Literal["stimuli", "modes", "none"] = "stimuli"  # what is mixed in against forgetting: "stimuli" (old ones), "modes" (decoded nodes), "none"
    replay_size: Annotated[int, Field(ge=0, le=10_000_000)] = 5000  # old stimuli (or decoded nodes) per sense mixed in
    experience_share: Annotated[float, Field(ge=0, lt=1)] = 0.5  # lived stimuli are repeated to make about this share of what is taught
    teach_weight: Annotated[float, Field(ge=0, le=1000)] = 1.0  # weight of the cross-modal term beside reconstruction
    teach_sharpness: Positive = 10.0  # as refine.teach_sharpness
    teach_epochs: Annotated[int, Field(ge=1, le=10_000)] = 2  # passes over experience plus replay
    teach_min_steps: Annotated[int, Field(ge=0, le=10_000_000)] = 1000  # at least this many gradient steps
    teach_lr: Annotated[float, Field(gt=0, le=10)] = 1e-2  # Adam learning rate, cosine-decayed within a sleep
    augment: bool = True  # teach on augmented copies (images; sounds as spectrograms: replay.data.augment)
    novel: Share = 0.65  # a sense is taught only if this share of its lived stimuli is unlike old ones (agent.core.sleep)
    settle: bool = True  # a sense with a session is taught its lived stimuli as the settled session hears them, not as each was heard at its moment (agent.core.session_mean)
    rehearse: Share = 0.005  # share of all stimuli learned so far that are lived again after teaching (whole passes)


@settings
class TeacherSettings:
    """The flash-card parent that makes the paired replay stream (docs/EVALUATION.md)."""

    lag_s: tuple[Annotated[float, Field(ge=-60, le=60)], Annotated[float, Field(ge=-60, le=60)]] = (-0.2, 0.5)  # audio onset relative to the image, uniform range
    gap_s: Annotated[float, Field(gt=0, le=3600)] = 1.5  # time between two teaching events
    p_unpaired: Share = 0.0  # share of events showing only one modality
    p_mismatch: Share = 0.0  # share of events whose two stimuli are different digits
    epochs: Annotated[float, Field(ge=1e-3, le=10_000)] = 10.0  # stream length in passes over the largest training set (at least a thousandth)
    rewards: tuple[Annotated[float, Field(ge=-1e6, le=1e6)], ...] = ()  # a reward per digit 0-9; set: the "reward" sense is taught too
    reward_noise: Annotated[float, Field(ge=0, le=1e6)] = 0.0  # std of gaussian noise on each reward given
    p_reward_missing: Share = 0.0  # share of events that earn no reward stimulus

    def __post_init__(self) -> None:
        if self.lag_s[0] > self.lag_s[1]:
            raise SettingsError(f"teacher.lag_s must be [low, high] with low <= high, got {list(self.lag_s)}")
        if self.rewards and len(self.rewards) != 10:
            raise SettingsError(f"teacher.rewards must give one value per digit 0-9 (10 values), "
                                f"got {len(self.rewards)}")


@settings
class DataSettings:
    """Which data the replay uses (labels are read only by the scorer)."""

    digits: Annotated[tuple[Digit, ...], Field(min_length=1, max_length=10)] = (0, 1, 2, 3, 4, 5, 6, 7, 8, 9)
    per_class: PositiveInt | None = None  # first N per class of each training set (small runs, tests)
    test_per_class: PositiveInt | None = None  # same for the test sets
    speakers: tuple[Name, ...] = ()  # FSDD speakers used (train and test); empty: all six
    exclude_speakers: tuple[Name, ...] = ()  # FSDD speakers held out of training (and the only ones tested)

    def __post_init__(self) -> None:
        if len(set(self.digits)) != len(self.digits):
            raise SettingsError(f"data.digits must not repeat a digit, got {list(self.digits)}")


@settings
class RuntimeSettings:
    """How the rules are computed, not what they compute (agent.core.kernels)."""

    kernels: Literal["numba", "numpy"] = "numba"  # per-stimulus steps compiled with numba, or numpy (the slower reference); results agree up to the last bits


@settings
class Config:
    seed: Annotated[int, Field(ge=0, lt=2**32)] = 0
    modalities: Annotated[tuple[Sense, ...], Field(min_length=1, max_length=16)] = ("visual", "audio")
    data: DataSettings = field(default_factory=DataSettings)
    senses: dict[Sense, SenseSettings] = field(default_factory=default_senses)  # [senses.<name>]; a sense not named here is identity
    cortex: CortexSettings = field(default_factory=CortexSettings)
    cdz: CDZSettings = field(default_factory=CDZSettings)
    teacher: TeacherSettings = field(default_factory=TeacherSettings)
    refine: RefineSettings = field(default_factory=RefineSettings)
    sleep: SleepSettings = field(default_factory=SleepSettings)
    runtime: RuntimeSettings = field(default_factory=RuntimeSettings)

    def __post_init__(self) -> None:
        if len(set(self.modalities)) != len(self.modalities):
            raise SettingsError(f"modalities must not repeat, got {list(self.modalities)}")
        if self.teacher.rewards and REWARD not in self.modalities:  # rewards given: the reward sense learns too
            object.__setattr__(self, "modalities", (*self.modalities, REWARD))
        if REWARD in self.modalities and not self.teacher.rewards:
            raise SettingsError(f"the {REWARD!r} sense needs teacher.rewards (a reward per digit 0-9)")

    def sense(self, modality: str) -> SenseSettings:
        """A sense's table; a sense without its own has the defaults (no encoder)."""
        return self.senses.get(modality) or SenseSettings()

    def encoder(self, modality: str) -> AutoencoderSettings:
        """A sense's autoencoder settings; a sense without its own table has none ("identity")."""
        return self.sense(modality).encoder


REWARD = "reward"  # the sense the teacher's rewards arrive on
def check_senses(config: Config) -> Config:
    """A senses table must be for a sense of `modalities` or a built-in one: a misspelt name
    (`senses.audoi`) would otherwise be a table nobody reads. Checked once every setting is in
    (`override`, a loaded config), so `--set` may name a table before the sense joins `modalities`."""
    stray = sorted(set(config.senses) - set(config.modalities) - set(default_senses()))
    if stray:
        raise SettingsError(f"senses.{stray[0]}: no sense {stray[0]!r} in modalities {list(config.modalities)}")
    return config


def to_dict(obj: Any) -> dict[str, Any]:
    """Plain nested dict of a settings dataclass (tuples become lists, for TOML/JSON)."""

    def plain(v: Any) -> Any:
        if is_dataclass(v):
            return {f.name: plain(getattr(v, f.name)) for f in fields(v)}
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        if isinstance(v, (tuple, list)):
            return [plain(x) for x in v]
        return v

    return plain(obj)


def _built(cls: type, kwargs: dict[str, Any], where: str) -> Any:
    """`cls(**kwargs)`, with a validation failure turned into one line naming the field."""
    try:
        return cls(**kwargs)
    except pydantic.ValidationError as e:
        err = e.errors(include_url=False)[0]
        loc = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in (where, *err["loc"]) if p != "").lstrip(".")
        if err["type"] == "value_error":  # raised by __post_init__: its message already names the fields
            raise SettingsError(str(err["ctx"]["error"])) from None
        got = err.get("input")
        msg = "input should be a list such as [0, 1, 2]" if err["type"] == "tuple_type" else err["msg"].lower()
        raise SettingsError(f"{loc}: {msg}, got {got!r}"[:300]) from None


def from_dict(cls: type, data: dict[str, Any], where: str = "", base: Any = None) -> Any:
    """Rebuild a settings dataclass from `to_dict` output; unknown keys are an error.
    Fields not given keep `base`'s values (default: the class's defaults)."""
    if not isinstance(data, dict):
        raise SettingsError(f"{where or cls.__name__} must be a table of settings, got {data!r}"[:300])
    if cls is Config:
        return check_senses(_from_dict(cls, data, where, base))
    return _from_dict(cls, data, where, base)


def _from_dict(cls: type, data: dict[str, Any], where: str, base: Any) -> Any:
    known = {f.name: f for f in fields(cls)}
    unknown = set(data) - set(known)
    if unknown:
        raise KeyError(f"unknown {cls.__name__} setting(s): {sorted(unknown)}; known: {sorted(known)}")
    defaults = cls() if base is None else base
    kwargs = {f.name: getattr(defaults, f.name) for f in fields(cls)}
    for name, value in data.items():
        current = getattr(defaults, name)
        at = f"{where}.{name}" if where else name
        if is_dataclass(current):
            kwargs[name] = from_dict(type(current), value, at, current)
        elif isinstance(current, dict):
            kwargs[name] = _table(cls, name, current, value, at)
        else:
            kwargs[name] = tuple(value) if isinstance(value, list) else value
    return _built(cls, kwargs, where)


def _table(cls: type, name: str, current: dict, data: Any, where: str) -> dict:
    """A table of named sections (`[senses.<name>]`): entries given are read over the
    current ones (or a new entry's defaults); entries not given are kept."""
    if not isinstance(data, dict):
        raise SettingsError(f"{where} must be a table of named tables, got {data!r}"[:300])
    entry = _entry_type(cls, name)
    return current | {key: from_dict(entry, value, f"{where}.{key}", current.get(key)) for key, value in data.items()}


def _entry_type(cls: type, name: str) -> type:
    """The section class of a `dict[str, Section]` field."""
    hint = typing.get_type_hints(cls)[name]
    return typing.get_args(hint)[1]


def override(config: Config, assignments: list[str]) -> Config:
    """Apply `section.field=value` strings; the field must exist, the value is parsed as TOML."""
    for text in assignments:
        if "=" not in text:
            raise SettingsError(f"override {text!r} must look like section.field=value")
        key, raw = text.split("=", 1)
        path = key.strip().split(".")
        try:
            value = tomllib.loads(f"v = {raw.strip()}")["v"]
        except tomllib.TOMLDecodeError:
            value = raw.strip()  # bare words such as kernel=gaussian
        config = _replace_path(config, path, value, key.strip(), [])
    return check_senses(config)


def sleep_override(config: Config, assignments: list[str]) -> Config:
    """`config` with `sleep.FIELD=VALUE` assignments applied (`cdz sleep --set`, `cdz live
    --sleep-set`); any other setting is refused, since a sleep changes the encoders and the
    brain, not how the run was made."""
    bad = [a for a in assignments if not a.strip().startswith("sleep.")]
    if bad:
        raise SettingsError(f"a sleep takes only sleep.* settings, not {bad}")
    return override(config, assignments) if assignments else config


def _replace_path(obj: Any, path: list[str], value: Any, key: str, done: list[str]) -> Any:
    names = {f.name for f in fields(obj)}
    if path[0] not in names:
        raise KeyError(f"--set {key}: {type(obj).__name__} has no field {path[0]!r}; fields: {sorted(names)}")
    current = getattr(obj, path[0])
    if len(path) == 1:
        if is_dataclass(current):
            raise KeyError(f"--set {key}: {path[0]!r} is a section, name one of its fields")
        if isinstance(value, list):
            value = tuple(value)
        elif isinstance(current, float) and type(value) is int:
            value = float(value)
        elif isinstance(value, dict):
            raise SettingsError(f"--set {key}: a single value is wanted, not a table")
        kwargs = {f.name: getattr(obj, f.name) for f in fields(obj)} | {path[0]: value}
        return _built(type(obj), kwargs, ".".join(done))
    if isinstance(current, dict):  # a table of named sections: senses.<name>.<field>
        if len(path) < 3:
            raise KeyError(f"--set {key}: name a field of one of its tables, e.g. {path[0]}.<name>.<field>")
        entry = current.get(path[1]) or _entry_type(type(obj), path[0])()
        inner = current | {path[1]: _replace_path(entry, path[2:], value, key, done + path[:2])}
        kwargs = {f.name: getattr(obj, f.name) for f in fields(obj)} | {path[0]: inner}
        return _built(type(obj), kwargs, ".".join(done))
    if not is_dataclass(current):
        raise KeyError(f"--set {key}: {path[0]!r} is not a section")
    inner = _replace_path(current, path[1:], value, key, done + [path[0]])
    kwargs = {f.name: getattr(obj, f.name) for f in fields(obj)} | {path[0]: inner}
    return _built(type(obj), kwargs, ".".join(done))


def toml_text(config: Config) -> str:
    """The resolved config as TOML (None, an unset optional, is left out)."""

    def present(d: dict[str, Any]) -> dict[str, Any]:
        return {k: present(v) if isinstance(v, dict) else v for k, v in d.items() if v is not None}

    return tomli_w.dumps(present(to_dict(config)))


def save_toml(config: Config, path: Path) -> None:
    path.write_text(toml_text(config))


def load_toml(path: Path) -> Config:
    return from_dict(Config, tomllib.loads(path.read_text()))
