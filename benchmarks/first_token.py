"""The first-token path, request by request: ours against the real Dynamo, and where ours spends it.

    python benchmarks/first_token.py [--requests 300] [--speedup 1] [--rounds 2] [--no-peer]
        [--no-spans] [--time-scale S] [--max-tokens 8] [--bench-dir benchmarks/clients]

The prompts of the routing profile (the first REQUESTS of the conversation trace, 64 tokens a
hash id, as `replay.py` builds them), sent one at a time (no queueing: the TTFT is the path,
plus the mocker's prefill at `--speedup`) to a `kv` frontend over four mocker workers,
streaming `/v1/completions` as `replay.py` does. With `--time-scale S` they are sent at the
trace's timestamps times S instead (the routing profile is S = 0.1: bursts of up to 17
requests at once), so every phase is measured under the load that makes the tail. Each round
measures ours, then the peer, on fresh stacks, and prints our frontend's event-loop lag.
Then, unless `--no-spans`, ours once more with tracing on (`OTEL_EXPORT_ENABLED`,
spans sent to a receiver in this process): per request, the time from the client's send to
the frontend's `http` span, HTTP parse and checks (to `tokenize`), `tokenize`, building the
engine request (to `route`), `route`, the request plane (to the worker's `engine` span), and
from there to the first SSE chunk at the client (engine prefill, response plane, SSE write).
Tracing adds about 40 us a span, so the traced run is not the timed one.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Awaitable
from pathlib import Path

import aiohttp
from _procs import (
    MODEL_NAME,
    BenchError,
    add_common_arguments,
    bench_dir,
    find_peer,
    free_port,
    start_stack,
    tiny_model_dir,
)
from aiohttp import web
from routing_quality import check_vocab, environment
from routing_sim import trace_rows

SHAPE = {"workers": 4, "block_size": 16, "blocks": 8192}
# The encoder-thread parts of `tokenize` exist for long prompts only (the others are encoded
# on the loop); a request's phases add up to its TTFT.
PHASE_ORDER = (
    "client_to_http", "http_to_tokenize", "tokenize", "  wait_for_thread", "  encode",
    "  back_to_loop", "to_route", "route", "to_engine", "engine_to_first_chunk", "ttft",
)  # fmt: skip


def prompts(model_dir: str, args: argparse.Namespace) -> list[str]:
    """The trace's prompts as replay.py writes them: a fixed block of words per hash id."""
    vocab = json.loads((Path(model_dir) / "tokenizer.json").read_text())["model"]["vocab"]
    words = sorted(
        w[1:] for w in vocab if w.startswith("\u0120") and w[1:].isalpha() and len(w) > 2
    )
    blocks: dict[int, list[str]] = {}
    out = []
    args.rows = trace_rows("conversation", args.requests, args.bench_dir)
    for row in args.rows:
        toks: list[str] = []
        for h in row["hash_ids"]:
            if h not in blocks:
                rng = random.Random(h * 7919 + 17)
                blocks[h] = [rng.choice(words) for _ in range(args.block)]
            toks += blocks[h]
        n = max(1, min(len(toks), row["input_length"] * args.block // 512))
        out.append(" " + " ".join(toks[:n]))
    return out


async def one(
    session: aiohttp.ClientSession,
    url: str,
    prompt: str,
    trace_id: str | None = None,
    max_tokens: int = 8,
) -> tuple[int, float]:
    """(client send time in ns since the epoch, TTFT in s) of one streamed completion;
    `trace_id` (32 hex digits) is sent as the W3C traceparent the frontend's spans join."""
    body = {
        "model": MODEL_NAME, "prompt": prompt, "max_tokens": max_tokens, "min_tokens": max_tokens,
        "ignore_eos": True, "stream": True, "stream_options": {"include_usage": True},
    }  # fmt: skip
    headers = {"traceparent": f"00-{trace_id}-{'1' * 16}-01"} if trace_id else {}
    sent_ns, start = time.time_ns(), time.perf_counter()
    first = None
    async with session.post(url + "/v1/completions", json=body, headers=headers) as r:
        if r.status != 200:
            raise BenchError(f"HTTP {r.status}: {(await r.text())[:300]}")
        async for line in r.content:
            if first is None and line.startswith(b"data: {"):
                choices = json.loads(line[6:]).get("choices")
                if choices and choices[0].get("text"):
                    first = time.perf_counter()
    if first is None:
        raise BenchError("a stream ended without a token")
    return sent_ns, first - start


async def send_all(
    url: str, texts: list[str], args: argparse.Namespace, traced: bool = False
) -> list[tuple[int, float]]:
    """One request at a time, or at the trace's times with `--time-scale`; with `traced`,
    request i carries trace id `trace_id(i)`."""
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:
        await one(session, url, " hello")  # warm: connection, tokenizer

        def send(i: int) -> Awaitable[tuple[int, float]]:
            return one(session, url, texts[i], trace_id(i) if traced else None, args.max_tokens)

        if args.time_scale is None:
            out = []
            for i in range(len(texts)):
                out.append(await send(i))
                await asyncio.sleep(args.gap_s)
            return out
        t0 = time.perf_counter()

        async def at(i: int, offset_s: float) -> tuple[int, float]:
            await asyncio.sleep(max(0.0, t0 + offset_s - time.perf_counter()))
            return await send(i)

        offsets = [row["timestamp"] / 1000 * args.time_scale for row in args.rows]
        return list(await asyncio.gather(*(at(i, o) for i, o in enumerate(offsets))))


def trace_id(i: int) -> str:
    return f"{0xF1257 << 64 | (i + 1):032x}"


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(p / 100 * len(xs)))]


LAG_METRIC = "dynamo_frontend_event_loop_lag_seconds_bucket"


async def lag_buckets(url: str) -> dict[float, float]:
    """Our frontend's cumulative event-loop lag histogram: upper bound (s) -> count."""
    async with aiohttp.ClientSession() as session, session.get(url + "/metrics") as r:
        text = await r.text()
    out = {}
    for line in text.splitlines():
        if line.startswith(LAG_METRIC + "{"):
            le = line.split('le="', 1)[1].split('"', 1)[0]
            out[float(le)] = float(line.rsplit(" ", 1)[1])
    return out


def lag_quantile(before: dict[float, float], after: dict[float, float], q: float) -> float:
    """The bucket bound at quantile `q` of the lags observed between two scrapes."""
    counts = {le: after[le] - before.get(le, 0.0) for le in sorted(after)}
    total = counts[float("inf")] if counts else 0.0
    for le, n in counts.items():
        if n >= q / 100 * total:
            return le
    return float("nan")


def measure(
    name: str, args: argparse.Namespace, texts: list[str], peer: Path | None
) -> list[float]:
    bench = bench_dir(args.bench_dir) if peer else None
    stack, url = start_stack(
        name, args.model_dir, "kv", peer=peer, bench=bench, speedup=args.speedup, **SHAPE
    )
    with stack:
        before = asyncio.run(lag_buckets(url)) if peer is None else {}
        timed = asyncio.run(send_all(url, texts, args))
        if peer is None:
            after = asyncio.run(lag_buckets(url))
            lags = ", ".join(
                f"p{q} <= {1000 * lag_quantile(before, after, q):g} ms" for q in (50, 90, 99)
            )
            print(f"  {name}: event-loop lag (10 ms timer) {lags}", flush=True)
    return [t for _, t in timed]


class SpanSink:
    """An OTLP/HTTP receiver: keeps every span's (name, start, end) per trace id."""

    def __init__(self) -> None:
        self.spans: dict[bytes, dict[str, tuple[int, int]]] = defaultdict(dict)

    async def handle(self, request: web.Request) -> web.Response:
        from opentelemetry.proto.collector.trace.v1 import trace_service_pb2

        msg = trace_service_pb2.ExportTraceServiceRequest()
        msg.ParseFromString(await request.read())
        for rs in msg.resource_spans:
            for ss in rs.scope_spans:
                for s in ss.spans:
                    times = (s.start_time_unix_nano, s.end_time_unix_nano)
                    self.spans[bytes(s.trace_id)].setdefault(s.name, times)
        return web.Response(
            body=trace_service_pb2.ExportTraceServiceResponse().SerializeToString(),
            content_type="application/x-protobuf",
        )


async def traced(url: str, texts: list[str], args: argparse.Namespace) -> list[tuple[int, float]]:
    timed = await send_all(url, texts, args, traced=True)
    await asyncio.sleep(8)  # the batch span processors export every 5 s
    return timed


def serve_in_thread(sink: SpanSink, port: int) -> threading.Event:
    """Run the span receiver on its own loop in a daemon thread; set the event to stop it."""
    stop, ready = threading.Event(), threading.Event()

    async def serve() -> None:
        app = web.Application(client_max_size=64 * 2**20)
        app.router.add_post("/v1/traces", sink.handle)
        runner = web.AppRunner(app)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        ready.set()
        await asyncio.to_thread(stop.wait)
        await runner.cleanup()

    threading.Thread(target=asyncio.run, args=(serve(),), daemon=True).start()
    ready.wait(10)
    return stop


def breakdown(args: argparse.Namespace, texts: list[str]) -> dict[str, list[float]]:
    """Ours with spans on: ms per phase of every request whose spans all arrived."""
    sink = SpanSink()
    port = free_port()
    stop = serve_in_thread(sink, port)
    env = {
        "OTEL_EXPORT_ENABLED": "1",
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": f"http://127.0.0.1:{port}/v1/traces",
    }
    try:
        with environment(env):
            stack, url = start_stack(
                "first-token-spans", args.model_dir, "kv", speedup=args.speedup, **SHAPE
            )
        with stack:
            timed = asyncio.run(traced(url, texts, args))
    finally:
        stop.set()
    phases: dict[str, list[float]] = defaultdict(list)
    wanted = {"http", "tokenize", "route", "engine"}
    for i, (sent_ns, ttft) in enumerate(timed):
        s = sink.spans.get(bytes.fromhex(trace_id(i)), {})
        if not wanted <= s.keys():
            continue
        first_ns = sent_ns + int(ttft * 1e9)
        parts = {
            "client_to_http": s["http"][0] - sent_ns,
            "http_to_tokenize": s["tokenize"][0] - s["http"][0],
            "tokenize": s["tokenize"][1] - s["tokenize"][0],
        }
        if "encode" in s:  # encoded in an encoder thread (long prompts)
            parts |= {
                "  wait_for_thread": s["encode"][0] - s["tokenize"][0],
                "  encode": s["encode"][1] - s["encode"][0],
                "  back_to_loop": s["tokenize"][1] - s["encode"][1],
            }
        parts |= {
            "to_route": s["route"][0] - s["tokenize"][1],
            "route": s["route"][1] - s["route"][0],
            "to_engine": s["engine"][0] - s["route"][1],
            "engine_to_first_chunk": first_ns - s["engine"][0],
            "ttft": first_ns - sent_ns,
        }
        for k, v in parts.items():
            phases[k].append(v / 1e6)
    return phases


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--block", type=int, default=64, help="prompt tokens per trace hash id")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--gap-s", type=float, default=0.02, help="pause between requests")
    parser.add_argument(
        "--time-scale", type=float, help="send at the trace's timestamps x this (0.1: routing)"
    )
    parser.add_argument("--max-tokens", type=int, default=8, help="tokens a request generates")
    parser.add_argument("--no-peer", action="store_true", help="measure ours only")
    parser.add_argument("--no-spans", action="store_true", help="skip the traced breakdown")
    add_common_arguments(parser, speedup=1.0)
    args = parser.parse_args()

    try:
        args.model_dir = args.model_dir or tiny_model_dir()
        check_vocab(Path(args.model_dir) / "tokenizer.json")
        texts = prompts(args.model_dir, args)
        python = find_peer(args.peer_venv, wanted=not args.no_peer)
        print(
            f"first token: {len(texts)} routing-profile prompts "
            + ("one at a time" if args.time_scale is None else f"at time scale {args.time_scale:g}")
            + ", kv frontend, "
            f"4 mocker workers at speedup {args.speedup:g}, {args.rounds} rounds",
            flush=True,
        )
        results: dict[str, list[list[float]]] = defaultdict(list)
        for r in range(args.rounds):
            results["ours"].append(measure(f"first-token-ours-{r}", args, texts, None))
            if python is not None:
                results["peer"].append(measure(f"first-token-peer-{r}", args, texts, python))
            for system, runs in results.items():
                t = runs[-1]
                print(
                    f"  round {r} {system}: TTFT p50 {1000 * pct(t, 50):.2f} ms, "
                    f"p90 {1000 * pct(t, 90):.2f} ms, mean {1000 * statistics.mean(t):.2f} ms",
                    flush=True,
                )
        phases = {} if args.no_spans else breakdown(args, texts)
    except BenchError as e:
        sys.exit(f"error: {e}")
    print("system  TTFT p50 (ms)   p90  mean   (per round)")
    for system, runs in results.items():
        cells = "; ".join(
            f"{1000 * pct(t, 50):.1f} {1000 * pct(t, 90):.1f} {1000 * statistics.mean(t):.1f}"
            for t in runs
        )
        print(f"{system:<7} {cells}")
    if "peer" in results:
        for q in (50, 90):
            ratios = [
                pct(o, q) / pct(p, q) for o, p in zip(results["ours"], results["peer"], strict=True)
            ]
            print(f"ours / peer TTFT p{q}: " + ", ".join(f"x{x:.3f}" for x in ratios))
    if phases:
        print(f"ours, traced ({len(phases['ttft'])} requests): phase  p50  p90  mean (ms)  n")
        for k in PHASE_ORDER:
            v = phases.get(k)
            if v:
                print(
                    f"  {k:<22} {pct(v, 50):7.3f} {pct(v, 90):7.3f} {statistics.mean(v):7.3f}"
                    f"  {len(v)}"
                )
    if args.json_out:
        Path(args.json_out).write_text(json.dumps({"ttft_s": results, "phases_ms": phases}))


if __name__ == "__main__":
    main()
