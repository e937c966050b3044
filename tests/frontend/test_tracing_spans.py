"""Spans of one request, exported by the OpenTelemetry SDK's in-memory exporter: a frontend and
mocker workers in one process, talking over the real TCP request plane (the W3C traceparent
rides in the worker request, as it does between processes)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import openai
import pytest
import pytest_asyncio
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from dynamo.engines.mocker.config import MockerConfig
from dynamo.frontend.config import FrontendConfig
from dynamo.frontend.main import policy_factory
from dynamo.frontend.preprocess import INLINE_ENCODE_CHARS
from dynamo.frontend.server import Frontend
from dynamo.mocker.main import build_workers, tokenizer_dir
from dynamo.router.config import RouterConfig
from dynamo.runtime.config import RuntimeConfig
from dynamo.runtime.distributed import DistributedRuntime
from dynamo.runtime.tracing import use_tracer_provider
from dynamo.testing.processes import wait_for_instances
from dynamo.worker.core import Worker
from dynamo.worker.model_card import read_tokenizer_facts

MODEL = "tinymodel"
CLIENT_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CLIENT_SPAN = "00f067aa0ba902b7"


@pytest.fixture
def exporter() -> Iterator[InMemorySpanExporter]:
    memory = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    use_tracer_provider(provider)
    yield memory
    use_tracer_provider(None)
    provider.shutdown()


@dataclass
class Stack:
    url: str
    workers: list[Worker]


async def start_stack(*, disagg: bool) -> AsyncIterator[Stack]:
    runtime = await DistributedRuntime.create(
        RuntimeConfig(namespace=f"ns{uuid.uuid4().hex[:8]}", discovery_backend="mem")
    )
    facts = read_tokenizer_facts(tokenizer_dir("dynamo:tinymodel"))
    modes = ["prefill", "decode"] if disagg else [None]
    workers: list[Worker] = []
    for mode in modes:
        config = MockerConfig(
            model_path="dynamo:tinymodel",
            model_name=MODEL,
            block_size=16,
            speedup_ratio=50,
            disaggregation_mode=mode,
        )
        workers += build_workers(runtime, runtime.config, config, facts)
    frontend = Frontend(
        runtime,
        FrontendConfig(http_host="127.0.0.1", http_port=0, enforce_disagg=disagg),
        policy_factory(RouterConfig(router_mode="kv"), None),
        namespace=runtime.config.namespace,
    )
    try:
        await frontend.start()
        for worker in workers:
            await worker.start()
        await wait_for_instances(frontend.url, len(workers))
        yield Stack(frontend.url, workers)
    finally:
        await frontend.stop()
        for worker in workers:
            await worker.stop()
        await runtime.shutdown()


@pytest_asyncio.fixture
async def agg() -> AsyncIterator[Stack]:
    async for stack in start_stack(disagg=False):
        yield stack


@pytest_asyncio.fixture
async def disagg() -> AsyncIterator[Stack]:
    async for stack in start_stack(disagg=True):
        yield stack


def by_name(spans: tuple[ReadableSpan, ...]) -> dict[str, list[ReadableSpan]]:
    named: dict[str, list[ReadableSpan]] = {}
    for span in spans:
        named.setdefault(span.name, []).append(span)
    return named


def parent_of(span: ReadableSpan) -> int | None:
    return span.parent.span_id if span.parent is not None else None


async def chat(url: str, headers: dict[str, str]) -> None:
    async with openai.AsyncOpenAI(base_url=url + "/v1", api_key="unused", max_retries=0) as client:
        stream = await client.chat.completions.create(
            model=MODEL,
            messages=[{"role": "user", "content": "hello " * 20}],
            max_tokens=3,
            stream=True,
            extra_headers=headers,
        )
        async for _ in stream:
            pass


async def test_an_aggregated_request_is_one_trace(
    exporter: InMemorySpanExporter, agg: Stack
) -> None:
    exporter.clear()  # /health polls made spans of their own
    await chat(agg.url, {"traceparent": f"00-{CLIENT_TRACE}-{CLIENT_SPAN}-01"})
    spans = by_name(exporter.get_finished_spans())
    assert sorted(spans) == ["engine", "http", "route", "tokenize"]
    assert {len(v) for v in spans.values()} == {1}
    http, tokenize, route, engine = (spans[n][0] for n in ("http", "tokenize", "route", "engine"))
    trace_ids = {s.context.trace_id for s in (http, tokenize, route, engine)}
    assert trace_ids == {int(CLIENT_TRACE, 16)}  # the client's trace, joined
    assert parent_of(http) == int(CLIENT_SPAN, 16)
    assert parent_of(tokenize) == parent_of(route) == http.context.span_id
    assert parent_of(engine) == http.context.span_id  # across the request plane
    assert http.attributes is not None and http.attributes["http.method"] == "POST"
    assert engine.attributes is not None and engine.attributes["component"] == "backend"


async def test_a_disaggregated_request_has_prefill_and_decode_legs(
    exporter: InMemorySpanExporter, disagg: Stack
) -> None:
    exporter.clear()
    await chat(disagg.url, {})
    spans = by_name(exporter.get_finished_spans())
    assert sorted(spans) == ["decode", "engine", "http", "prefill", "route", "tokenize"]
    (http,) = spans["http"]
    (prefill,) = spans["prefill"]
    (decode,) = spans["decode"]
    assert http.parent is None  # no traceparent from the client: a new trace
    assert len({s.context.trace_id for v in spans.values() for s in v}) == 1
    assert parent_of(prefill) == parent_of(decode) == http.context.span_id
    routes = {parent_of(s) for s in spans["route"]}
    assert routes == {prefill.context.span_id, decode.context.span_id}
    engines = {s.attributes["component"]: parent_of(s) for s in spans["engine"]}  # type: ignore[index]
    assert engines == {"prefill": prefill.context.span_id, "backend": decode.context.span_id}
    assert prefill.end_time is not None and decode.start_time is not None
    assert prefill.end_time <= decode.start_time


async def test_a_long_prompt_shows_its_encoder_thread_part(
    exporter: InMemorySpanExporter, agg: Stack
) -> None:
    """A prompt encoded in an encoder thread gets an `encode` span inside `tokenize`: before it
    the request waited for a free thread, after it for the loop to take the result."""
    exporter.clear()
    async with openai.AsyncOpenAI(
        base_url=agg.url + "/v1", api_key="unused", max_retries=0
    ) as client:
        await client.completions.create(
            model=MODEL, prompt="hello " * INLINE_ENCODE_CHARS, max_tokens=2
        )
        await client.completions.create(model=MODEL, prompt="hello " * 20, max_tokens=2)
    spans = by_name(exporter.get_finished_spans())
    (encode,) = spans["encode"]  # the short prompt was encoded on the loop: no span
    tokenize = next(t for t in spans["tokenize"] if t.context.span_id == parent_of(encode))
    assert encode.context.trace_id == tokenize.context.trace_id
    assert tokenize.start_time is not None and tokenize.end_time is not None
    assert encode.start_time is not None and encode.end_time is not None
    assert tokenize.start_time <= encode.start_time <= encode.end_time <= tokenize.end_time
    assert encode.attributes is not None
    assert encode.attributes["tokens"] >= INLINE_ENCODE_CHARS  # type: ignore[operator]
