"""Every third-party module the package imports is declared in pyproject.toml: a plain
`pip install .` must run the Quickstart (a missing `httpx` once crashed it for every new user,
hidden from CI by the dev extras). A module that belongs to an extra may only be imported inside
a function, where the feature that needs it is used. CI also installs the project without
extras into a fresh environment and runs it (scripts/smoke_plain_install.sh, .ci/run)."""

from __future__ import annotations

import ast
import sys
from importlib.metadata import packages_distributions
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

tomllib = pytest.importorskip("tomllib")  # Python 3.11+

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "critique_rl"
# Imported through another distribution's module path (torch.utils.tensorboard needs tensorboard):
# the AST sees only `torch`, so these are listed by the feature that needs them.
INDIRECT = {"tensorboard": "tensorboard"}


def third_party_imports() -> dict[str, list[tuple[str, bool]]]:
    """{top-level module: [(file:line, imported at module level)]} over critique_rl/."""
    found: dict[str, list[tuple[str, bool]]] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        tree = ast.parse(path.read_text(), str(path))
        module_level = {id(node) for node in tree.body}
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                if top in sys.stdlib_module_names or top == "critique_rl":
                    continue
                where = f"{path.relative_to(ROOT)}:{node.lineno}"
                found.setdefault(top, []).append((where, id(node) in module_level))
    return found


def declared() -> tuple[set[str], dict[str, set[str]]]:
    """(base dependency names, {extra: names}) from pyproject.toml, canonicalised."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    base = {canonicalize_name(Requirement(r).name) for r in project["dependencies"]}
    extras = {extra: {canonicalize_name(Requirement(r).name) for r in reqs}
              for extra, reqs in project["optional-dependencies"].items()}
    return base, extras


def test_every_imported_module_is_declared():
    base, extras = declared()
    in_extras = set().union(*extras.values())
    distributions = packages_distributions()
    problems = []
    for module, places in third_party_imports().items():
        # A module not installed here (vllm on CPU) is taken to be its own distribution's name.
        owners = {canonicalize_name(d) for d in distributions.get(module, [module])}
        if owners & base:
            continue
        elif owners & in_extras:
            eager = [where for where, top_level in places if top_level]
            if eager:
                problems.append(f"{module} belongs to an extra but is imported at module level: {', '.join(eager)}")
        else:
            problems.append(f"{module} ({places[0][0]}) comes from {sorted(owners)}, which pyproject.toml does not declare")
    assert not problems, "\n".join(problems)


def test_indirect_extras_are_declared():
    _, extras = declared()
    for extra, distribution in INDIRECT.items():
        assert distribution in extras.get(extra, set()), f"extra {extra!r} should bring {distribution}"
