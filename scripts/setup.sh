#!/usr/bin/env bash
# Create .venv (once) and install jointtask with its test and Ray extras into it.
# torch is pinned to its CPU wheel (2.13.0); the package itself only asks for a range, so a GPU
# machine can bring its own build.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --disable-pip-version-check "torch==2.13.0" -e ".[test]" 2>&1 \
  | grep -v "is ignored: it is neither a file nor a directory" || true
.venv/bin/python -c "import jointtask, torch, ray; print('jointtask', jointtask.__version__, 'torch', torch.__version__)"
