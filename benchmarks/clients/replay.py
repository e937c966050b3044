#!/usr/bin/env python3
"""Replay a Mooncake-format trace against any OpenAI-compatible server, streaming.

    python benchmarks/clients/replay.py URL MODEL TRACE --vocab tokenizer.json
        [--limit 400] [--time-scale 0.1] [--block 512] [--max-output 64] [--out results.json]

Every request of the first LIMIT rows is sent to `/v1/completions` at its timestamp times
SCALE; each hash id becomes a fixed block of BLOCK single-token words of the `--vocab`
tokenizer (`mooncake.py`), so prompts that share hash-id prefixes share token prefixes. Prints
one JSON object: TTFT, ITL, wall time and the prefix-cache hit rate the server reports in
`usage.prompt_tokens_details.cached_tokens`; `--out` also keeps every request's record.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from typing import Any

import aiohttp
from mooncake import PromptBuilder, read_rows, words_of_tokenizer


def percentile(xs: list[float], p: float) -> float | None:
    """Nearest-rank percentile (the rule every benchmark here uses)."""
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(p / 100 * len(xs)))] if xs else None


def request_body(model: str, prompt: str, max_tokens: int) -> dict[str, Any]:
    return {
        "model": model, "prompt": prompt, "max_tokens": max_tokens, "stream": True,
        "ignore_eos": True, "min_tokens": max_tokens, "stream_options": {"include_usage": True},
    }  # fmt: skip


async def one_request(
    session: aiohttp.ClientSession, url: str, body: dict[str, Any], delay_s: float, t0: float
) -> dict[str, Any]:
    """Send `body` `delay_s` after `t0` and time its stream; every failure is recorded."""
    await asyncio.sleep(max(0.0, delay_s - (time.perf_counter() - t0)))
    start = time.perf_counter()
    first = last = None
    gaps: list[float] = []
    usage = None
    chunks = 0
    error = None
    try:
        async with session.post(url + "/v1/completions", json=body) as response:
            if response.status != 200:
                error = f"http {response.status}: {(await response.text())[:200]}"
            else:
                async for raw in response.content:
                    line = raw.decode().strip()
                    if not line.startswith("data:"):
                        continue
                    data = line[5:].strip()
                    if data == "[DONE]":
                        break
                    event = json.loads(data)
                    usage = event.get("usage") or usage
                    if event.get("choices") and event["choices"][0].get("text"):
                        now = time.perf_counter()
                        if first is None:
                            first = now
                        elif last is not None:
                            gaps.append(now - last)
                        last = now
                        chunks += 1
    except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
        error = repr(exc)
    return {
        "ttft": first - start if first is not None else None,
        "e2e": time.perf_counter() - start,
        "itl": statistics.mean(gaps) if gaps else None,
        "chunks": chunks, "usage": usage, "error": error,
    }  # fmt: skip


def summarize(results: list[dict[str, Any]], wall_s: float) -> dict[str, Any]:
    ok = [r for r in results if not r["error"]]
    ttft = [r["ttft"] for r in ok if r["ttft"] is not None]
    itl = [r["itl"] for r in ok if r["itl"] is not None]
    usages = [r["usage"] or {} for r in ok]
    prompt_tokens = sum(u.get("prompt_tokens", 0) for u in usages)
    cached = sum((u.get("prompt_tokens_details") or {}).get("cached_tokens") or 0 for u in usages)
    return {
        "requests": len(results), "errors": len(results) - len(ok), "wall_s": wall_s,
        "ttft_mean": statistics.mean(ttft) if ttft else None,
        "ttft_p50": percentile(ttft, 50), "ttft_p90": percentile(ttft, 90),
        "itl_mean": statistics.mean(itl) if itl else None,
        "prompt_tokens": prompt_tokens, "cached_tokens": cached,
        "hit_rate": cached / prompt_tokens if prompt_tokens else None,
        "first_errors": [r["error"] for r in results if r["error"]][:3],
    }  # fmt: skip


async def replay(args: argparse.Namespace) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    rows = read_rows(args.trace, args.limit)
    builder = PromptBuilder(words_of_tokenizer(args.vocab), args.block)
    bodies = [
        request_body(
            args.model, builder.prompt(row), min(args.max_output, max(1, row["output_length"]))
        )
        for row in rows
    ]
    timeout = aiohttp.ClientTimeout(total=600)
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        t0 = time.perf_counter()
        results = await asyncio.gather(
            *(
                one_request(session, args.url, body, row["timestamp"] / 1000 * args.time_scale, t0)
                for row, body in zip(rows, bodies, strict=True)
            )
        )
        wall_s = time.perf_counter() - t0
    return summarize(list(results), wall_s), list(results)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url", help="server base URL, e.g. http://127.0.0.1:8000")
    parser.add_argument("model")
    parser.add_argument("trace", help="Mooncake-format .jsonl (or .jsonl.gz / .jsonl.xz)")
    parser.add_argument("--limit", type=int, default=400, help="first LIMIT requests")
    parser.add_argument("--time-scale", type=float, default=0.1, help="x the timestamps")
    parser.add_argument("--block", type=int, default=512, help="prompt tokens a hash id")
    parser.add_argument("--max-output", type=int, default=64, help="cap on output tokens")
    parser.add_argument("--vocab", required=True, help="the served model's tokenizer.json")
    parser.add_argument("--out", help="write the summary and every request's record here")
    args = parser.parse_args()
    summary, results = asyncio.run(replay(args))
    print(json.dumps(summary, indent=1))
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"summary": summary, "requests": results}, f)


if __name__ == "__main__":
    main()
