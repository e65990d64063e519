"""The README is tested: its config reference is what the schema generates, its YAML config
snippets load, and every shell command in it either runs here or says why it cannot.

Fence markers (the info string after the backticks; GitHub highlights by its first word and
ignores the rest, so a marked block renders as plain bash):

    ```bash runnable                          run by test_runnable_readme_blocks
    ```bash not-runnable: needs a GPU         never run; the reason after the colon is required
    ```yaml                                   a config fragment: must load with config_from_dict
    ```yaml not-config                        any other YAML
    ```text                                   diagrams, listings, example outputs

Every fence names a language, and a shell block (bash, sh, shell, console, zsh) without one of
the two markers fails, so no command enters the README untested by accident.

The runnable blocks run in README order, in one temporary directory, each with `bash -euo
pipefail`: a block may use what an earlier one wrote (runs/demo). The directory holds links to
the repository's examples/, prompts/ and scripts/, and a .venv/bin with `python` and
`critique-rl` running this interpreter, which is also first on PATH; nothing beside it: the
blocks must pass without ../shared/data, as on a fresh clone. CRITIQUE_RL_CONFIG=tiny
makes every command that is not given --config use the tiny preset, so the commands run as the
README prints them, in seconds. `./scripts/setup.sh` is replaced by a check that this
environment imports critique_rl: the tests already run in an installed environment, and CI runs
the real script on a clean clone first (.ci/run). Commands in inline code of the prose are not
run; put a command users should copy into a block.
"""

from __future__ import annotations

import difflib
import os
import re
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from critique_rl.config import ConfigError, config_from_dict
from critique_rl.config_docs import END, REGENERATE, START, current_block, expected_block, write_reference

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
SHELLS = {"bash", "sh", "shell", "console", "zsh"}
FENCE = re.compile(r"^(?P<indent> {0,3})(?P<fence>`{3,}|~{3,})(?P<info>.*)$")


@dataclass
class Block:
    line: int          # 1-based line of the opening fence
    info: str          # the whole info string, stripped
    code: str

    @property
    def lang(self) -> str:
        return self.info.split()[0] if self.info else ""

    @property
    def marker(self) -> str:
        return self.info[len(self.lang):].strip()


def fenced_blocks(text: str) -> list[Block]:
    """Fenced code blocks of Markdown ``text`` (CommonMark fences, up to 3 spaces of indent)."""
    blocks, lines, i = [], text.splitlines(), 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not m or (m["fence"][0] == "`" and "`" in m["info"]):
            i += 1
            continue
        fence, indent, start = m["fence"], len(m["indent"]), i
        body, i = [], i + 1
        while i < len(lines) and not re.match(rf"^ {{0,3}}{re.escape(fence[0])}{{{len(fence)},}}\s*$", lines[i]):
            body.append(lines[i][indent:] if lines[i][:indent].strip() == "" else lines[i].lstrip())
            i += 1
        blocks.append(Block(start + 1, m["info"].strip(), "\n".join(body) + "\n"))
        i += 1
    return blocks


def readme_blocks() -> list[Block]:
    return fenced_blocks(README.read_text())


def test_fenced_blocks_parser():
    text = "a\n```bash runnable\necho 1\n```\n  ~~~text\n  x\n  ~~~\n````md\n```\ninner\n```\n````\n"
    blocks = fenced_blocks(text)
    assert [(b.line, b.lang, b.marker, b.code) for b in blocks] == [
        (2, "bash", "runnable", "echo 1\n"), (5, "text", "", "x\n"), (8, "md", "", "```\ninner\n```\n")]


def test_config_reference_is_current():
    text = README.read_text()
    current, expected = current_block(text), expected_block()
    if current != expected:
        diff = "".join(list(difflib.unified_diff(current.splitlines(True), expected.splitlines(True),
                                                 "README.md", "generated from critique_rl/config.py"))[:60])
        pytest.fail(f"README.md's config reference (between {START} and {END}) differs from the config schema; "
                    f"regenerate it with:\n\n    {REGENERATE}\n\n{diff}", pytrace=False)


def test_config_reference_write_and_cli(tmp_path, monkeypatch, capsys):
    from critique_rl.cli import build_parser

    doc = tmp_path / "doc.md"
    doc.write_text(f"# title\n\n{START}\nstale\n{END}\n\ntail\n")
    args = build_parser().parse_args(["config", "reference", "--write", str(doc)])
    assert args.func(args) == 0
    text = doc.read_text()
    assert text.startswith("# title\n\n") and text.endswith("\n\ntail\n") and "stale" not in text
    assert current_block(text) == expected_block()
    assert "| `loss.gamma` | float > 0 | `0.1` |" in text and "| `method` | `grpo` \\| `critique_grpo` |" in text
    assert write_reference(doc) is False            # already current: the file is left alone
    doc.write_text("no markers\n")
    with pytest.raises(ConfigError, match="config-reference:start"):
        write_reference(doc)


def test_config_env_var_is_the_default_preset(monkeypatch):
    from critique_rl.cli import build_parser

    monkeypatch.setenv("CRITIQUE_RL_CONFIG", "tiny")
    parser = build_parser()
    assert parser.parse_args(["train", "--out", "x"]).config == "tiny"
    assert parser.parse_args(["train", "--out", "x", "--config", "toy"]).config == "toy"
    assert parser.parse_args(["config", "show"]).preset == "tiny"
    monkeypatch.delenv("CRITIQUE_RL_CONFIG")
    assert build_parser().parse_args(["pipeline", "--out", "x"]).config == "toy"


def marker_problems(blocks: list[Block]) -> list[str]:
    """One line per fence without a language and per shell block without a valid marker."""
    problems = []
    for b in blocks:
        if not b.lang:
            problems.append(f"README.md:{b.line}: a fence without a language (```text for diagrams and listings)")
        elif b.lang in SHELLS and b.marker != "runnable" and not re.fullmatch(r"not-runnable:\s*\S.*", b.marker):
            problems.append(f"README.md:{b.line}: ```{b.info} needs a marker: '```{b.lang} runnable' (tests/test_docs.py "
                            f"runs it on the tiny preset) or '```{b.lang} not-runnable: REASON'")
    return problems


def test_marker_rules():
    text = ("```bash runnable\nx\n```\n```bash not-runnable: needs a GPU\nx\n```\n```text\nx\n```\n"
            "```bash\nx\n```\n```sh not-runnable:\nx\n```\n```console runable\nx\n```\n```\nx\n```\n")
    assert [p.split(":")[1] for p in marker_problems(fenced_blocks(text))] == ["10", "13", "16", "19"]


def test_every_fence_has_a_language_and_every_shell_block_is_marked():
    problems = marker_problems(readme_blocks())
    assert not problems, "\n".join(problems)


def test_yaml_blocks_are_valid_configs():
    blocks = [b for b in readme_blocks() if b.lang in ("yaml", "yml") and b.marker != "not-config"]
    assert blocks, "the README shows no config snippet any more; drop this test or the marker convention"
    for b in blocks:
        try:
            config_from_dict(yaml.safe_load(b.code), f"README.md:{b.line}")
        except ConfigError as err:
            pytest.fail(f"{err}\n(mark YAML that is not a critique-rl config with ```yaml not-config)", pytrace=False)


BLOCK_TIMEOUT_S = 600

SETUP_STUB = """#!/bin/sh
# tests/test_docs.py: the environment already exists; CI runs the real scripts/setup.sh (.ci/run).
exec .venv/bin/python -c "import critique_rl"
"""


def _shim(path: Path, argv: list[str]) -> None:
    path.write_text(f"#!/bin/sh\nexec {shlex.join(argv)} \"$@\"\n")
    path.chmod(0o755)


def readme_workdir(work: Path) -> dict[str, str]:
    """Lay out ``work`` as a checkout seen by README commands; return their environment."""
    bin_dir = work / ".venv" / "bin"
    bin_dir.mkdir(parents=True)
    _shim(bin_dir / "python", [sys.executable])
    _shim(bin_dir / "critique-rl", [sys.executable, "-m", "critique_rl.cli"])
    for name in ("examples", "prompts"):
        (work / name).symlink_to(ROOT / name, target_is_directory=True)
    (work / "scripts").mkdir()
    for script in (ROOT / "scripts").iterdir():
        if script.name != "setup.sh":
            (work / "scripts" / script.name).symlink_to(script)
    (work / "scripts" / "setup.sh").write_text(SETUP_STUB)
    (work / "scripts" / "setup.sh").chmod(0o755)
    env = {k: v for k, v in os.environ.items() if not k.startswith("CRITIQUE_RL_")}
    env.update(CRITIQUE_RL_CONFIG="tiny", PATH=f"{bin_dir}{os.pathsep}{env.get('PATH', '')}", MPLBACKEND="Agg",
               PYTHONPATH=os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p))
    return env


def test_runnable_readme_blocks(tmp_path):
    blocks = [b for b in readme_blocks() if b.lang in SHELLS and b.marker == "runnable"]
    assert blocks, "no ```bash runnable block in the README"
    work = tmp_path / "readme"
    work.mkdir()
    env = readme_workdir(work)
    timings = []
    for b in blocks:
        start = time.perf_counter()
        try:
            result = subprocess.run(["bash", "-euo", "pipefail", "-c", b.code], check=False, cwd=work, env=env,
                                    capture_output=True, text=True, timeout=BLOCK_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            pytest.fail(f"README.md:{b.line}: the block ran past {BLOCK_TIMEOUT_S} s on the tiny preset; a README command "
                        f"must stay quick there (no large absolute step counts):\n{b.code}", pytrace=False)
        timings.append(f"README.md:{b.line} {time.perf_counter() - start:.1f} s")
        if result.returncode != 0:
            pytest.fail(f"README.md:{b.line}: the block exited {result.returncode} (run in {work} with "
                        f"CRITIQUE_RL_CONFIG=tiny, after the blocks above it):\n{b.code}\n"
                        f"--- stdout (end)\n{result.stdout[-3000:]}\n--- stderr (end)\n{result.stderr[-3000:]}",
                        pytrace=False)
    print("\n".join(timings))
