"""Disaggregated vs aggregated serving: one open-loop trace, TTFT / ITL percentiles and goodput.

    python benchmarks/disagg.py [--requests 200 --rate 8 --isl 3072 --osl 64]
        [--configs agg2 disagg disagg-cond] [--peer] [--ttft-sla-ms 500 --itl-sla-ms 25]
        [--kv-bytes-per-token 114688 --kv-transfer-bandwidth 25] [--json-out r.json]

Each configuration runs in a fresh file-discovery directory with a `--router-mode kv` frontend:
`agg2` two aggregated mocker workers; `disagg` one prefill + one decode worker; `disagg-cond`
the same with `--router-conditional-disagg`. The client sends the same trace to each: requests
at fixed intervals (1/rate), distinct random prompts of `isl` token ids (no shared prefix),
`osl` output tokens each (ignore_eos), streamed. TTFT is the time to the first text chunk, ITL
the gaps between the later chunks of every request (`chunks/req` shows that every token came
as its own chunk: a chunk carrying two tokens would count their two steps as one gap);
goodput counts requests per second whose TTFT and mean ITL both meet the SLA. `--peer` runs
the same configurations on the real Dynamo 1.6.1 (its mocker's `--disaggregation-mode
prefill|decode`, `--kv-transfer-bandwidth` and `--kv-bytes-per-token`; its frontend's
`--router-conditional-disagg` with its default config) and prints ours / peer per config.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import random
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
from _procs import (
    MODEL_NAME,
    BenchError,
    Stack,
    add_common_arguments,
    find_peer,
    free_port,
    tiny_model_dir,
)

CONFIGS = ("agg2", "disagg", "disagg-cond")
VOCAB_LOW, VOCAB_HIGH = 10, 2000  # tinymodel ids that are plain tokens


def pct(xs: list[float], p: float) -> float | None:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(p / 100 * len(xs)))] if xs else None


def trace(args: argparse.Namespace) -> list[list[int]]:
    rng = random.Random(args.seed)
    return [
        [rng.randrange(VOCAB_LOW, VOCAB_HIGH) for _ in range(args.isl)]
        for _ in range(args.requests)
    ]


async def one(
    session: aiohttp.ClientSession, url: str, prompt: list[int], osl: int
) -> dict[str, Any]:
    body = {
        "model": MODEL_NAME, "prompt": prompt, "max_tokens": osl, "min_tokens": osl,
        "ignore_eos": True, "stream": True,
    }  # fmt: skip
    start = time.perf_counter()
    stamps: list[float] = []
    async with session.post(url + "/v1/completions", json=body) as resp:
        if resp.status != 200:
            return {"error": f"HTTP {resp.status}: {(await resp.text())[:200]}"}
        async for line in resp.content:
            if line.startswith(b"data:") and b"[DONE]" not in line and b'"text"' in line:
                stamps.append(time.perf_counter())
    if not stamps:
        return {"error": "no chunk"}
    gaps = [b - a for a, b in itertools.pairwise(stamps)]
    return {"ttft_s": stamps[0] - start, "gaps_s": gaps, "chunks": len(stamps)}


async def replay(url: str, prompts: list[list[int]], args: argparse.Namespace) -> dict[str, Any]:
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:
        t0 = time.perf_counter()
        tasks = []
        for i, prompt in enumerate(prompts):
            delay = t0 + i / args.rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(session, url, prompt, args.osl)))
        results = await asyncio.gather(*tasks, return_exceptions=True)
        wall = time.perf_counter() - t0
    ok = [r for r in results if isinstance(r, dict) and "ttft_s" in r]
    errors = [r if isinstance(r, dict) else {"error": repr(r)} for r in results if r not in ok]
    ttft = [r["ttft_s"] for r in ok]
    gaps = [g for r in ok for g in r["gaps_s"]]
    sla_ttft, sla_itl = args.ttft_sla_ms / 1000, args.itl_sla_ms / 1000
    good = sum(
        1
        for r in ok
        if r["ttft_s"] <= sla_ttft
        and (not r["gaps_s"] or sum(r["gaps_s"]) / len(r["gaps_s"]) <= sla_itl)
    )
    return {
        "ok": len(ok), "errors": len(errors), "first_errors": [e["error"] for e in errors[:3]],
        "wall_s": wall,
        "ttft_p50_ms": 1000 * (pct(ttft, 50) or 0), "ttft_p90_ms": 1000 * (pct(ttft, 90) or 0),
        "itl_p50_ms": 1000 * (pct(gaps, 50) or 0), "itl_p90_ms": 1000 * (pct(gaps, 90) or 0),
        "goodput_rps": good / wall, "good": good,
        "chunks_per_request": sum(r["chunks"] for r in ok) / len(ok) if ok else 0.0,
    }  # fmt: skip


def worker_flags(args: argparse.Namespace) -> list[str]:
    return [
        "--model-path", args.model_dir, "--model-name", MODEL_NAME,
        "--block-size", str(args.block_size), "--num-gpu-blocks-override", str(args.blocks),
        "--speedup-ratio", f"{args.speedup:g}",
    ]  # fmt: skip


def start(config: str, args: argparse.Namespace, peer: Path | None) -> tuple[Stack, str]:
    system = "peer" if peer else "ours"
    stack = Stack(f"{system}-{config}")
    if peer:  # a PYTHONPATH to our sources (a snapshot under test) would shadow ai-dynamo
        stack.env.pop("PYTHONPATH", None)
    py = str(peer or sys.executable)
    port = free_port()
    plane = ["--discovery-backend", "file", "--request-plane", "tcp", "--event-plane", "zmq"]
    extra = plane if peer else []
    transfer = [
        "--kv-bytes-per-token", str(args.kv_bytes_per_token),
        "--kv-transfer-bandwidth", f"{args.kv_transfer_bandwidth:g}",
    ]  # fmt: skip
    mocker = [py, "-m", "dynamo.mocker", *worker_flags(args), *extra]
    try:
        if config == "agg2":
            stack.spawn("mocker", [*mocker, "--num-workers", "2"])
        else:
            stack.spawn("prefill", [*mocker, "--disaggregation-mode", "prefill", *transfer])
            stack.spawn("decode", [*mocker, "--disaggregation-mode", "decode", *transfer])
        frontend = [
            py, "-m", "dynamo.frontend", "--http-host", "127.0.0.1", "--http-port", str(port),
            "--router-mode", "kv", "--kv-cache-block-size", str(args.block_size), *extra,
        ]  # fmt: skip
        if config == "disagg-cond":
            frontend.append("--router-conditional-disagg")
        stack.spawn("frontend", frontend)
        url = f"http://127.0.0.1:{port}"
        stack.wait_ready(url)
        if config != "agg2":
            time.sleep(2.0)  # both workers registered (wait_ready needs only the decode one)
    except BaseException:
        stack.close()
        raise
    return stack, url


def table(results: list[dict[str, Any]]) -> str:
    rows = [
        "| system | config | ok | chunks/req | TTFT p50 | TTFT p90 | ITL p50 | ITL p90 | "
        "goodput req/s |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        rows.append(
            f"| {r['system']} | {r['config']} | {r['ok']} | {r['chunks_per_request']:.1f} | "
            f"{r['ttft_p50_ms']:.0f} ms | {r['ttft_p90_ms']:.0f} ms | {r['itl_p50_ms']:.1f} ms | "
            f"{r['itl_p90_ms']:.1f} ms | {r['goodput_rps']:.2f} |"
        )
    return "\n".join(rows)


RATIO_KEYS = ("ttft_p50_ms", "ttft_p90_ms", "itl_p50_ms", "itl_p90_ms", "goodput_rps")


def ratios(results: list[dict[str, Any]]) -> str:
    """Ours / peer for each configuration both ran (the target: TTFT and ITL p90 <= 1.15)."""
    by = {(r["system"], r["config"]): r for r in results}
    rows = [
        "| config | TTFT p50 | TTFT p90 | ITL p50 | ITL p90 | goodput |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for (system, config), ours in by.items():
        peer = by.get(("peer", config))
        if system != "ours" or peer is None:
            continue
        cells = [f"{ours[k] / peer[k]:.2f}x" if peer[k] else "-" for k in RATIO_KEYS]
        rows.append(f"| {config} | " + " | ".join(cells) + " |")
    return "\n".join(rows) if len(rows) > 2 else ""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_common_arguments(parser, speedup=1.0)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--rate", type=float, default=8.0, help="requests per second")
    parser.add_argument("--isl", type=int, default=3072, help="prompt tokens")
    parser.add_argument("--osl", type=int, default=64, help="output tokens")
    parser.add_argument("--block-size", type=int, default=64)
    parser.add_argument("--blocks", type=int, default=16384)
    parser.add_argument("--kv-bytes-per-token", type=int, default=114_688)
    parser.add_argument("--kv-transfer-bandwidth", type=float, default=25.0, help="GB/s")
    parser.add_argument("--ttft-sla-ms", type=float, default=500.0)
    parser.add_argument("--itl-sla-ms", type=float, default=25.0)
    parser.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=CONFIGS)
    parser.add_argument("--peer", action="store_true", help="also run the real Dynamo 1.6.1")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    args.model_dir = args.model_dir or tiny_model_dir()
    prompts = trace(args)
    systems: list[Path | None] = [None]
    peer = find_peer(args.peer_venv, wanted=args.peer)
    if peer is not None:
        systems.append(peer)
    results = []
    for system in systems:
        for config in args.configs:
            stack, url = start(config, args, system)
            with stack:
                result = asyncio.run(replay(url, prompts, args))
                stack.check_alive()
            result.update(system="peer" if system else "ours", config=config)
            print(json.dumps(result), flush=True)
            results.append(result)
    print(table(results))
    if ratio_table := ratios(results):
        print("\nours / peer, same configuration:\n" + ratio_table)
    if args.json_out:
        Path(args.json_out).write_text(
            json.dumps(
                {"args": vars(args) | {"peer_venv": str(args.peer_venv)}, "results": results},
                indent=1,
            )
        )


if __name__ == "__main__":
    try:
        main()
    except BenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(1)
