"""agent.core.config: overrides that must name an existing field, and TOML save/load."""

from __future__ import annotations

import dataclasses
import tomllib

import pytest

from agent.core.autoencoder import AutoencoderSettings
from agent.core.config import (IDENTITY, CDZSettings, Config, CortexSettings, DataSettings, SenseSettings, SettingsError,
                               TeacherSettings, from_dict, load_toml, override, save_toml, to_dict)


def custom() -> Config:
    """A config that differs from the defaults in every section and in every kind of value."""
    return Config(
        seed=7,
        modalities=("visual", "audio", "reward", "touch"),
        data=DataSettings(digits=(1, 3, 7), per_class=5, test_per_class=2, exclude_speakers=("jackson", "o'neil")),
        senses={"visual": SenseSettings(AutoencoderSettings(arch="mlp", code_dim=16, lr=3e-4)),
                "audio": SenseSettings(AutoencoderSettings(epochs=0, noise=0.0)),
                "touch": SenseSettings(AutoencoderSettings(arch="linear", code_dim=4))},
        cortex=CortexSettings(initial_nodes=10, node_lr=0.125, split_threshold=1e-7, growth_stop=1.0),
        cdz=CDZSettings(window_s=0.0, kernel="gaussian", backward_gain=0.0, no_feedback_from=()),
        teacher=TeacherSettings(lag_s=(-0.5, 0.25), p_unpaired=0.1, epochs=2.5, rewards=(0, 1, 0, -2.5, 0, 0, 0, 3, 0, 0),
                                reward_noise=0.25, p_reward_missing=0.5),
    )


# --------------------------------------------------------------------------- override
def test_override_nested_fields():
    cfg = override(Config(), ["cortex.node_lr=0.02", "cdz.kernel=gaussian", "seed=3",
                              "teacher.lag_s=[-0.1, 0.3]", "data.per_class=5", "senses.visual.encoder.arch=\"mlp\""])
    assert cfg.cortex.node_lr == 0.02
    assert cfg.cdz.kernel == "gaussian"
    assert cfg.seed == 3
    assert cfg.teacher.lag_s == (-0.1, 0.3) and isinstance(cfg.teacher.lag_s, tuple)
    assert cfg.data.per_class == 5
    assert cfg.encoder("visual").arch == "mlp"
    # everything else untouched
    assert cfg.cortex == dataclasses.replace(CortexSettings(), node_lr=0.02)
    assert cfg.senses["audio"] == Config().senses["audio"]


def test_override_int_into_float_field_stays_float():
    cfg = override(Config(), ["cdz.window_s=2"])
    assert cfg.cdz.window_s == 2.0 and isinstance(cfg.cdz.window_s, float)


def test_override_returns_a_new_config():
    base = Config()
    cfg = override(base, ["cortex.initial_nodes=9"])
    assert base.cortex.initial_nodes == CortexSettings().initial_nodes != 9
    assert cfg.cortex.initial_nodes == 9


def test_later_override_wins():
    assert override(Config(), ["seed=1", "seed=2"]).seed == 2


@pytest.mark.parametrize("text, name", [
    ("cortex.node_rate=0.1", "node_rate"),
    ("cortx.node_lr=0.1", "cortx"),
    ("nonsense=1", "nonsense"),
    ("cortex=3", "cortex"),  # a section, not a field
    ("seed.x=1", "seed"),  # not a section
])
def test_override_unknown_field_is_a_key_error_naming_it(text, name):
    with pytest.raises(KeyError, match=name):
        override(Config(), [text])


def test_override_without_equals_is_a_value_error():
    with pytest.raises(ValueError):
        override(Config(), ["cortex.node_lr"])


def test_settings_are_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        Config().cortex.node_lr = 1.0  # type: ignore[misc]


# --------------------------------------------------------------------------- TOML
@pytest.mark.parametrize("make", [Config, custom])
def test_toml_round_trip_equals_the_original(tmp_path, make):
    cfg = make()
    path = tmp_path / "config.toml"
    save_toml(cfg, path)
    back = load_toml(path)
    assert back == cfg
    assert isinstance(back.teacher.lag_s, tuple) and isinstance(back.data.digits, tuple)
    assert isinstance(back.modalities, tuple)
    tomllib.loads(path.read_text())  # a real TOML file


def test_toml_is_readable_by_section(tmp_path):
    path = tmp_path / "config.toml"
    save_toml(custom(), path)
    raw = tomllib.loads(path.read_text())
    assert raw["seed"] == 7
    assert raw["cortex"]["node_lr"] == 0.125
    assert raw["cdz"]["kernel"] == "gaussian"
    assert raw["data"]["exclude_speakers"] == ["jackson", "o'neil"]


def test_dict_round_trip():
    cfg = custom()
    assert from_dict(Config, to_dict(cfg)) == cfg


def test_unknown_key_in_saved_config_is_a_key_error(tmp_path):
    path = tmp_path / "config.toml"
    save_toml(Config(), path)
    path.write_text(path.read_text() + "bogus_knob = 1\n")  # lands in the last section
    with pytest.raises(KeyError, match="bogus_knob"):
        load_toml(path)


def test_override_then_save_then_load(tmp_path):
    cfg = override(custom(), ["cortex.max_nodes=77", "teacher.gap_s=0.75"])
    path = tmp_path / "c.toml"
    save_toml(cfg, path)
    back = load_toml(path)
    assert back.cortex.max_nodes == 77 and back.teacher.gap_s == 0.75
    assert back == cfg


# --------------------------------------------------------------------------- the senses table
def test_a_sense_table_is_set_field_by_field_and_a_new_sense_gets_one_from_defaults():
    cfg = override(Config(modalities=("visual", "audio", "touch")),
                   ["senses.audio.encoder.code_dim=16", "senses.touch.encoder.arch=linear"])
    audio = cfg.encoder("audio")
    assert audio.code_dim == 16 and (audio.arch, audio.epochs, audio.batch_size, audio.channels) == ("conv", 20, 32, 16)  # the rest kept
    assert cfg.encoder("touch") == AutoencoderSettings(arch="linear")
    assert cfg.encoder("smell") == IDENTITY  # a sense with no table has no encoder
    assert cfg.senses["visual"] == Config().senses["visual"]


def test_a_sense_table_is_read_over_the_defaults_of_that_sense():
    cfg = from_dict(Config, {"senses": {"audio": {"encoder": {"epochs": 3}}}})
    assert cfg.encoder("audio") == AutoencoderSettings(epochs=3, batch_size=32, channels=16)  # audio's defaults, not the class's
    assert cfg.senses["visual"] == Config().senses["visual"]  # a sense not given keeps its table


def test_a_table_may_be_named_before_its_sense_joins_modalities():
    cfg = override(Config(), ["senses.touch.encoder.arch=linear", "modalities=['visual', 'touch']"])
    assert cfg.encoder("touch").arch == "linear"


@pytest.mark.parametrize("data", [
    {"senses": 5},  # not a table
    {"senses": {"visual": 5}},  # a sense's entry not a table
    {"senses": {"audoi": {"encoder": {"epochs": 3}}}},  # a table for no sense of modalities
])
def test_odd_sense_tables_in_a_file_are_one_settings_error(data):
    with pytest.raises(SettingsError, match="senses"):
        from_dict(Config, data)


def test_the_spelling_before_the_senses_table_is_an_unknown_setting():
    with pytest.raises(KeyError, match="visual_encoder"):
        from_dict(Config, {"visual_encoder": {"epochs": 3}})


@pytest.mark.parametrize("assignment, error", [
    ("senses.Touch.encoder.arch=linear", SettingsError),  # not a sense name
    ("senses.audoi.encoder.epochs=20", SettingsError),  # misspelt: no such sense in modalities
    ("visual_encoder.epochs=20", KeyError),  # the spelling before the senses table
    ("senses.visual=3", KeyError),  # a table, not a value
    ("senses.visual.encoder.epochs=-1", SettingsError),
    ("senses.visual.encoder.bogus=1", KeyError),
])
def test_a_bad_sense_setting_is_one_clear_error(assignment, error):
    with pytest.raises(error, match="senses"):
        override(Config(), [assignment])
