#!/usr/bin/env bash
# Everything CI checks, in the .venv that scripts/setup.sh made: lint, format, types, the tests.
set -uo pipefail
cd "$(dirname "$0")/.."
.venv/bin/ruff check src tests benchmarks scripts || exit 1
.venv/bin/ruff format --check src tests benchmarks scripts || exit 1
.venv/bin/pyright || exit 1
.venv/bin/python -m pytest -q --durations=12 "$@"
rc=$?
if [ "$rc" -eq 5 ]; then
  echo "pytest collected no tests: failing" >&2
  exit 1
fi
exit "$rc"
