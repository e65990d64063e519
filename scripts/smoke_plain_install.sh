#!/usr/bin/env bash
# The plain install, as a user without extras gets it: a fresh virtual environment, `pip install .`
# (no extras, not editable, so packaged data is what ships), then import every module of
# critique_rl, `critique-rl --help`, and a short pipeline on the tiny preset.
# A module imported at run time but not declared in pyproject.toml fails here.
# Usage: scripts/smoke_plain_install.sh [VENV_DIR]   (default: a temporary directory, removed after)
set -euo pipefail
cd "$(dirname "$0")/.."
REPO="$PWD"
PYTHON="${PYTHON:-python3}"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
VENV="${1:-$WORK/venv}"
"$PYTHON" -m venv "$VENV"
PIP=("$VENV/bin/python" -m pip install --quiet --disable-pip-version-check)
"${PIP[@]}" "torch==2.13.0"   # the CPU build, as scripts/setup.sh pins it
"${PIP[@]}" "$REPO"
cd "$WORK"                     # away from the checkout: the installed package, not the source tree
"$VENV/bin/python" - <<'PY'
import importlib, pkgutil
import critique_rl
names = [m.name for m in pkgutil.walk_packages(critique_rl.__path__, "critique_rl.")]
for name in names:
    importlib.import_module(name)
print(f"imported {len(names)} modules of critique_rl")
PY
"$VENV/bin/critique-rl" --help > /dev/null
OMP_NUM_THREADS=1 "$VENV/bin/critique-rl" pipeline --config tiny --out "$WORK/run" > "$WORK/pipeline.log" 2>&1 \
  || { tail -40 "$WORK/pipeline.log"; exit 1; }
test -s "$WORK/run/report.md" && test -s "$WORK/run/summary.json"
echo "plain install smoke: ok (imports, --help, tiny pipeline)"
