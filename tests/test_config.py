"""Config loading: presets, overrides, and errors that name the key."""

import pytest

from critique_rl.config import ConfigError, describe, load_config, preset_names


def test_presets_load_and_overrides_apply():
    assert {"toy", "tiny"} <= set(preset_names())
    cfg = load_config("toy", ["train.steps=7", "loss.gamma=0.5", "method=grpo"])
    assert (cfg.train.steps, cfg.loss.gamma, cfg.method) == (7, 0.5, "grpo")


def test_unknown_key_suggests_the_closest():
    with pytest.raises(ConfigError, match=r"unknown key 'train.setps' \(did you mean train.steps\?\)"):
        load_config("toy", ["train.setps=3"])


def test_wrong_type_and_bad_choice_name_the_key(tmp_path):
    with pytest.raises(ConfigError, match=r"train.steps = 'many'; expected an integer"):
        load_config("toy", ["train.steps=many"])
    with pytest.raises(ConfigError, match=r"refine.refine_trigger = 'never'; expected one of 'all_fail'"):
        load_config("toy", ["refine.refine_trigger=never"])
    path = tmp_path / "c.yaml"
    path.write_text("loss:\n  epsilon: [1]\n")
    with pytest.raises(ConfigError, match=r"c.yaml: loss.epsilon = \[1\]; expected a finite number"):
        load_config(str(path))


def test_malformed_yaml_and_missing_file(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("train: {steps: 3\n")
    with pytest.raises(ConfigError, match="bad.yaml: malformed YAML"):
        load_config(str(path))
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(str(tmp_path / "absent.yaml"))


def test_every_field_is_documented():
    rows = describe(load_config("toy"))
    assert len(rows) > 50 and all(help_text.strip() for *_, help_text in rows)
