"""`critique-rl check-config`: everything about a config that can be checked without a GPU or a
download, before a long job is queued.

Types, choices and cross-field rules are checked when the config loads. Here: every template
renders with the variables it receives; the first rows of every dataset the config names
(data.train, each benchmark: pulled copy, else the hub, streamed) are read and mapped to question
and answer as a run would, so a wrong field name or a row without \\boxed{} shows now; a model
name that is not a local path has the shape of a hub id (it is not fetched); the optional
libraries the config needs are installed. A dataset on an unreachable hub is a warning, not an
error: the check may run on a login node without network.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from critique_rl.config import Config, ConfigError, load_config
from critique_rl.critics.base import CritiqueRequest, default_template
from critique_rl.datasets_io import DatasetError, HubUnreachable, RowError, looks_like_hub_id
from critique_rl.templates import TemplateError, load_template

# Rows of each dataset that are read and mapped: enough to catch a wrong mapping, fast on any source.
HEAD_ROWS = 5
# What the check renders templates with; any text does, the point is that every variable is provided.
EXAMPLE = CritiqueRequest("What is 2 + 3?", "2 + 3 = 6, so the answer is \\boxed{6}.", "5", False, None)


@dataclass(frozen=True)
class Finding:
    level: str        # "error": the run would fail; "warning": it may; "note": what was not checked
    message: str


def _local_or_hub(value: str, key: str, kind: str, findings: list[Finding]) -> None:
    path = Path(value).expanduser()
    if path.exists():
        return
    # The rule loading applies (modeling.check_model_source), so the check and the run agree.
    if looks_like_hub_id(value):
        findings.append(Finding("note", f"{key} = {value!r}: a hub {kind} id, not fetched by this check"))
    else:
        findings.append(Finding("error", f"{key} = {value!r}: no such file or directory, and not a hub {kind} id"))


def _needs(module: str, why: str, extra: str, findings: list[Finding], level: str = "error") -> None:
    if importlib.util.find_spec(module) is None:
        findings.append(Finding(level, f"{why} needs {module}: pip install 'critique-rl[{extra}]'"))


def check_templates(cfg: Config, findings: list[Finding]) -> None:
    values = dict(question=EXAMPLE.question, attempt=EXAMPLE.attempt, critique="The second step is wrong.")
    for key, name, variables in (("prompts.solve", cfg.prompts.solve, dict(question=values["question"])),
                                 ("prompts.refine", cfg.prompts.refine, values),
                                 ("prompts.system", cfg.prompts.system, {})):
        if name:
            try:
                load_template(name).render(**variables)
            except TemplateError as err:
                findings.append(Finding("error", f"{key}: {err}"))
    c = cfg.critic
    critique_templates = [("critic.template", default_template(c, cfg.task.name))] if c.backend == "rule" else [
        ("critic.fallback_template", c.fallback_template or f"{cfg.task.name}/critique_{c.fallback}.jinja")]
    for key, name in critique_templates:
        try:
            load_template(name).render(question=EXAMPLE.question, attempt=EXAMPLE.attempt, reference=EXAMPLE.reference,
                                       verdict="wrong", checked=[])
        except TemplateError as err:
            findings.append(Finding("error", f"{key}: {err}"))
    if c.backend != "rule":
        from critique_rl.critics.prompting import CriticPrompt

        try:
            CriticPrompt(c, cfg.task.name).render(EXAMPLE)
        except TemplateError as err:
            findings.append(Finding("error", f"critic.prompt_template / critic.system_template: {err}"))


def _check_rows(key: str, load: Callable[[], list], findings: list[Finding], skips: bool = False) -> None:
    """Run ``load`` (the first rows of one dataset, mapped, malformed rows raised); its failure becomes
    a finding on ``key``: a malformed row is a warning when the run would skip it (``skips``)."""
    try:
        examples = load()
    except HubUnreachable as err:
        findings.append(Finding("warning", f"{key}: not checked: {err}"))
    except RowError as err:
        findings.append(Finding("warning", f"{key}: {err} (on_bad_row = skip: the run drops such rows)") if skips
                        else Finding("error", f"{key}: {err}"))
    except DatasetError as err:
        findings.append(Finding("error", f"{key}: {err}"))
    else:
        findings.append(Finding("note", f"{key}: the first {len(examples)} rows map to a question and an answer"))


def check_resources(cfg: Config, findings: list[Finding]) -> None:
    from critique_rl.benchmark_data import benchmark_names, load_benchmark
    from critique_rl.datasets_io import load_examples

    if cfg.model.name_or_path:
        _local_or_hub(cfg.model.name_or_path, "model.name_or_path", "model", findings)
    elif cfg.task.name == "math":
        findings.append(Finding("error", "model.name_or_path is empty: task math needs a policy model"))
    if cfg.task.name == "math":
        spec = cfg.data.train
        if not spec.path:
            findings.append(Finding("error", "data.train.path is empty: task math needs a training set"))
        else:
            strict = dataclasses.replace(spec, on_bad_row="error")
            _check_rows("data.train", lambda: load_examples(strict, head=HEAD_ROWS), findings, spec.on_bad_row == "skip")
    for name in benchmark_names(cfg.benchmarks.benchmarks):  # an unknown name is a DatasetError, so an error
        _check_rows(f"benchmarks: {name}", lambda: load_benchmark(name, cfg.benchmarks.data_root, head=HEAD_ROWS), findings)


def check_backends(cfg: Config, findings: list[Finding]) -> None:
    r, c = cfg.rollout, cfg.critic
    if r.engine == "vllm":
        _needs("vllm", "rollout.engine = vllm", "vllm", findings, level="warning")
    if r.engine == "server" and not r.server_base_url:
        findings.append(Finding("error", "rollout.engine = server needs rollout.server_base_url"))
    if c.backend == "openai" and c.api_key_env and not os.environ.get(c.api_key_env):
        findings.append(Finding("warning", f"critic.api_key_env = {c.api_key_env!r} is not set in this environment"))
    if cfg.model.lora_r > 0:
        _needs("peft", "model.lora_r > 0", "lora", findings)
    from critique_rl.tracking import TrackingUnavailable, require

    try:
        require(cfg.log)
    except TrackingUnavailable as err:
        findings.append(Finding("warning", str(err)))


def check_config(source: str, overrides: list[str] | None = None) -> list[Finding]:
    """Every finding about the preset or YAML file ``source``; a config that does not load is one error."""
    try:
        cfg = load_config(source, overrides)
    except ConfigError as err:
        return [Finding("error", str(err))]
    findings: list[Finding] = []
    check_templates(cfg, findings)
    check_resources(cfg, findings)
    check_backends(cfg, findings)
    return findings
