#!/usr/bin/env bash
# Start the real Dynamo: N mocker workers + one frontend, file discovery, TCP, ZMQ.
# usage: benchmarks/peer/run_peer.sh VENV MODEL_DIR PORT ROUTER_MODE [NUM_WORKERS BLOCK_SIZE NUM_BLOCKS SPEEDUP]
# Prints the two PIDs (mocker, frontend) on one line; stop them with kill.
set -euo pipefail
V=$1; M=$2; PORT=$3; MODE=$4; NW=${5:-4}; BS=${6:-16}; NB=${7:-8192}; SP=${8:-1}
export DYN_LOG=${DYN_LOG:-warn} DYN_FILE_KV=${DYN_FILE_KV:-$(mktemp -d)}
"$V/bin/python" -m dynamo.mocker --model-path "$M" --model-name tiny --discovery-backend file \
  --request-plane tcp --event-plane zmq --num-workers "$NW" --speedup-ratio "$SP" \
  --num-gpu-blocks-override "$NB" --block-size "$BS" >/dev/null 2>&1 &
MP=$!
"$V/bin/python" -m dynamo.frontend --http-port "$PORT" --discovery-backend file --request-plane tcp \
  --event-plane zmq --router-mode "$MODE" --kv-cache-block-size "$BS" >/dev/null 2>&1 &
echo "$MP $!"
