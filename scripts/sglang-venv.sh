#!/usr/bin/env bash
# Make (or reuse) .venv-sglang-VERSION for the SGLang contract tier: the real sglang package with
# only what `sglang.srt.server_args`, its parser and `sglang.srt.disaggregation.kv_events` need to
# import on CPU (sglang itself with --no-deps), plus pydynamo and pytest. Engine's signatures are
# read from sglang's source, so its CUDA-only imports are never needed.
# usage: scripts/sglang-venv.sh VERSION     (exit status 0 only when the imports work)
set -uo pipefail
cd "$(dirname "$0")/.."
v=${1:?usage: scripts/sglang-venv.sh VERSION}
venv=".venv-sglang-$v"
deps=(numpy tqdm pybase64 requests ipython pydantic aiohttp orjson safetensors pyzmq fastapi
  starlette packaging pillow openai partial_json_parser sentencepiece msgspec psutil)
check() { "$venv/bin/python" -c "import sglang.srt.server_args, sglang.srt.disaggregation.kv_events, dynamo, pytest"; }

if [ -x "$venv/bin/python" ] && [ "$venv/.installed" -nt pyproject.toml ] && check 2>/dev/null; then
  exit 0
fi
rm -rf "$venv" && python3 -m venv "$venv" && "$venv/bin/pip" install -q --upgrade pip || exit 1
pins="$venv/pins.txt"
case "$v" in
  0.5.4)
    # 0.5.4 imports torchvision while parsing its arguments, and torchvision needs a torch of its
    # own build: the pinned CUDA torch 2.8.0 (its CUDA libraries load but no GPU is used).
    printf 'torch==2.8.0\ntorchvision==0.23.0\ntransformers==4.57.1\n' >"$pins"
    "$venv/bin/pip" install -q --no-deps "sglang==$v" triton==3.4.0 xgrammar==0.1.25 || exit 1
    "$venv/bin/pip" install -q -c "$pins" torch torchvision transformers "${deps[@]}" || exit 1
    ;;
  *)
    # Newer releases import without torchvision: torch's CPU build (2.13.0+cpu) will do.
    printf 'torch==2.13.0\n' >"$pins"
    "$venv/bin/pip" install -q --no-deps "sglang==$v" triton || exit 1
    "$venv/bin/pip" install -q -c "$pins" torch "${deps[@]}" || exit 1
    ;;
esac
"$venv/bin/pip" install -q -c "$pins" -e . pytest pytest-asyncio pyyaml || exit 1
check && touch "$venv/.installed"
