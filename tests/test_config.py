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


def _numeric_fields(cls=None, prefix=""):
    """(dotted key, field) of every int and float field of the config schema, data.train included."""
    import dataclasses
    import typing

    from critique_rl.config import Config

    cls = cls or Config
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if dataclasses.is_dataclass(hints[f.name]):
            yield from _numeric_fields(hints[f.name], f"{prefix}{f.name}.")
        elif hints[f.name] in (int, float):
            yield f"{prefix}{f.name}", f


def test_every_numeric_field_declares_a_range_its_default_is_in():
    from critique_rl.config import BOUNDS, value_range

    fields = dict(_numeric_fields())
    assert len(fields) > 100
    assert [key for key, f in fields.items() if not value_range(f.metadata)] == []
    for key, f in fields.items():
        assert all(ok(f.default, f.metadata[name]) for name, (_, ok) in BOUNDS.items() if name in f.metadata), key


@pytest.mark.parametrize("override, message", [
    ("critic.timeout_s=-1", "critic.timeout_s = -1.0; expected > 0"),
    ("critic.deadline_s=0", "critic.deadline_s = 0.0; expected > 0"),
    ("critic.max_retries=-1", "critic.max_retries = -1; expected >= 0"),
    ("rollout.top_p=1.5", "rollout.top_p = 1.5; expected in (0, 1]"),
    ("critic.alarm_fallback_share=1", "critic.alarm_fallback_share = 1.0; expected in [0, 1)"),
    ("loss.gppo_dual_clip=1", "loss.gppo_dual_clip = 1.0; expected > 1"),
    ("data.train.limit=-3", "data.train.limit = -3; expected >= 0"),
    ("verifier.workers=0", "verifier.workers = 0; expected >= 1"),
])
def test_a_value_out_of_its_declared_range_is_refused(override, message):
    with pytest.raises(ConfigError) as err:
        load_config("toy", [override])
    assert str(err.value) == f"override {override!r}: {message}"


def test_ranges_hold_in_yaml_files_and_dataset_specs(tmp_path):
    from critique_rl.config import load_dataset_spec

    path = tmp_path / "c.yaml"
    path.write_text("inherit: tiny\nrollout:\n  num_generations: 0\n")
    with pytest.raises(ConfigError, match=rf"^{path}: rollout.num_generations = 0; expected >= 1$"):
        load_config(str(path))
    spec = tmp_path / "spec.yaml"
    spec.write_text("path: d.jsonl\nlimit: -1\n")
    with pytest.raises(ConfigError, match=rf"^{spec}: limit = -1; expected >= 0$"):
        load_dataset_spec(str(spec))


def test_cross_field_checks_remain():
    with pytest.raises(ConfigError, match=r"rollout.num_generations must be >= 2 for GRPO"):
        load_config("toy", ["method=grpo", "rollout.num_generations=1"])
    assert load_config("toy", ["method=critique_grpo", "rollout.num_generations=1"]).rollout.num_generations == 1
    with pytest.raises(ConfigError, match=r"task.max_operand \(5\) must be >= task.min_operand \(10\)"):
        load_config("toy", ["task.max_operand=5"])


def test_check_config_judges_model_names_as_loading_does(tmp_path, monkeypatch):
    """A bare hub model id (gpt2) loads, so check-config notes it; a mistyped path is an error."""
    from critique_rl.check import Finding, check_config

    monkeypatch.chdir(tmp_path)
    notes = check_config("tiny", ["model.name_or_path=gpt2"])
    assert Finding("note", "model.name_or_path = 'gpt2': a hub model id, not fetched by this check") in notes
    errors = check_config("tiny", ["model.name_or_path=runs/typo/warmstart"])
    assert Finding("error", "model.name_or_path = 'runs/typo/warmstart': no such file or directory, "
                            "and not a hub model id") in errors
