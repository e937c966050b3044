#!/usr/bin/env bash
# Run every check CI runs: lint, format, types, layers, tests.
# usage: scripts/test.sh [extra pytest args]      (uses .venv if present, else the current python)
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || command -v python3 )}
BIN=$(dirname "$PY")
export PATH="$PWD/.tools/bin:$BIN:$PATH"
fail=0
step() { echo "== $*"; "$@" || { echo "FAILED: $*"; fail=1; }; }
step "$BIN/ruff" check src tests benchmarks
step "$BIN/ruff" format --check src tests benchmarks
step "$BIN/mypy" src
step "$BIN/lint-imports"
"$PY" -m pytest -q -p no:cacheprovider "$@"
rc=$?
# exit code 5 = no tests collected (e.g. a marker selection that matches nothing): not a failure
if [ $rc -ne 0 ] && [ $rc -ne 5 ]; then echo "FAILED: pytest (exit $rc)"; fail=1; fi
exit $fail
