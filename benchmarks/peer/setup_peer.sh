#!/usr/bin/env bash
# Install the real NVIDIA Dynamo (PyPI ai-dynamo, the peer we measure against) into
# a venv of its own, CPU only, for side-by-side benchmarks with its mocker engine.
# usage: benchmarks/peer/setup_peer.sh VENV_DIR   (about a minute; reuses a working venv)
set -euo pipefail
V=${1:?venv dir}
if [ -x "$V/bin/python" ] && "$V/bin/python" -c "import dynamo.frontend" 2>/dev/null; then echo "$V"; exit 0; fi
python3 -m venv "$V"
"$V/bin/pip" install -q --upgrade pip
# --no-deps: one dependency (aisimulate) is a stub that downloads from a host these machines cannot reach
"$V/bin/pip" install -q --no-deps ai-dynamo==1.6.1 ai-dynamo-runtime==1.6.1
"$V/bin/pip" install -q "aiohttp>=3.14.3,<4" "kubernetes>=32.0.1,<33" msgspec "prometheus-client>=0.23.1,<1" \
  pyzmq "redis>=6.2,<9" tqdm "transformers>=4.56" typing-extensions "zstandard>=0.23,<1" uvloop \
  "pydantic>=2.10.6,<=2.13.5"
echo "$V"
