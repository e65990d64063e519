#!/usr/bin/env bash
# Create .venv and install critique-rl into it. `--dev` adds the test and benchmark extras.
# Idempotent: a second run only checks what is installed.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
PIP=(.venv/bin/python -m pip install --quiet --disable-pip-version-check)
# torch first and pinned: an unpinned torch resolves to a multi-GB CUDA build on Linux,
# and 2.13.0 is the CPU build kept on the project's machines. GPU users install their own
# torch into .venv before running this script; a satisfied pin is left alone.
.venv/bin/python -c "import torch" 2>/dev/null || "${PIP[@]}" "torch==2.13.0"
extras=""
[ "${1:-}" = "--dev" ] && extras="[dev]"
"${PIP[@]}" -e ".${extras}"
