"""What request ids, traces and JSONL logs cost, measured in one process (CPU time).

    python benchmarks/observability_overhead.py [--frames 200000] [--requests 50000]

Side by side, with the ratio to the plain path:
- a worker handler's stream of token frames, plain and inside the request scope (`scoped`);
- a request's scope (attach on the caller, detach + restore on the worker);
- a span with tracing off and on (the OpenTelemetry SDK, spans dropped by the exporter);
- a log record formatted as text and as a JSONL line, with a request in scope.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import logging
import time
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

from dynamo.runtime.logging_config import configure_logging
from dynamo.runtime.request_scope import attach, detach, request_scope, scoped
from dynamo.runtime.tracing import span, use_tracer_provider
from dynamo.runtime.transport.base import RequestContext

FRAME = {"token_ids": [1234], "finish_reason": None}


async def frames(request: dict[str, Any], ctx: RequestContext) -> AsyncIterator[dict[str, Any]]:
    for _ in range(request["frames"]):
        yield FRAME


async def drain(
    handler: Callable[..., AsyncIterator[dict[str, Any]]], request: dict[str, Any]
) -> None:
    async for _ in handler(request, RequestContext("bench")):
        pass


def cpu(run: Callable[[], None]) -> float:
    start = time.process_time()
    run()
    return time.process_time() - start


def row(what: str, n: int, plain_s: float, with_s: float, unit: str) -> str:
    scale = 1e9 if unit == "ns" else 1e6
    return (
        f"{what:<44} {plain_s / n * scale:>10.0f} {with_s / n * scale:>10.0f} {unit:<3}"
        f" {with_s / plain_s:>7.2f}x"
    )


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=200_000)
    parser.add_argument("--requests", type=int, default=50_000)
    args = parser.parse_args(argv)
    n, r = args.frames, args.requests
    print(f"{'':<44} {'plain':>10} {'with':>10}     {'ratio':>7}")

    with request_scope("bench-request"):
        sent = attach({"frames": n, "token_ids": [1] * 64})
    plain = cpu(lambda: asyncio.run(drain(frames, {"frames": n})))
    with_scope = cpu(lambda: asyncio.run(drain(scoped(frames), sent)))
    print(row("stream of frames, per frame (scoped)", n, plain, with_scope, "ns"))

    request = {"token_ids": [1] * 64, "max_tokens": 16}

    def bare() -> None:
        for _ in range(r):
            dict(request)

    def scoped_request() -> None:
        for _ in range(r):
            with request_scope("bench-request"):
                sent = attach(request)
            _, carrier = detach(sent)
            with request_scope(carrier["x-request-id"], carrier.get("traceparent")):
                pass

    print(row("request scope, per request (vs dict copy)", r, cpu(bare), cpu(scoped_request), "ns"))

    def spans() -> None:
        for _ in range(r):
            with span("route"):
                pass

    off = cpu(spans)
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult

    class Drop(SpanExporter):
        def export(self, spans: Any) -> SpanExportResult:
            return SpanExportResult.SUCCESS

    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(Drop()))
    use_tracer_provider(provider)
    try:
        on = cpu(spans)
    finally:
        use_tracer_provider(None)
        provider.shutdown()
    print(row("span, per span (tracing off -> on)", r, off, on, "us"))

    log = logging.getLogger("bench")

    def records() -> None:
        with request_scope("bench-request"):
            for i in range(r):
                log.info("request %s done in %d ms", "abc", i)

    configure_logging("bench", "info", env={}, stream=io.StringIO())
    text = cpu(records)
    configure_logging("bench", "info", env={"DYN_LOGGING_JSONL": "1"}, stream=io.StringIO())
    jsonl = cpu(records)
    print(row("log record (text -> JSONL)", r, text, jsonl, "us"))


if __name__ == "__main__":
    main()
