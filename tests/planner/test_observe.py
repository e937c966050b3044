"""Observe: the frontends' real /metrics found through discovery, and a Prometheus HTTP API."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from dynamo.frontend.metrics import FrontendMetrics
from dynamo.planner.observe import FrontendScrape, PrometheusQuery, parse_totals
from dynamo.runtime.discovery.base import FRONTENDS_ROOT
from dynamo.runtime.discovery.mem import MemoryDiscovery, MemoryStore
from dynamo.runtime.errors import TransportError


def serve_requests(metrics: FrontendMetrics, model: str, n: int, isl: int, osl: int) -> None:
    m = metrics.for_model(model)
    for _ in range(n):
        m.tokens_done(isl, osl, 0)
        m.ttft.observe(0.2)
        m.itl.observe(0.02)
        m.duration.observe(1.5)
        m.request_done("chat_completions", True, None)


async def _server(app: web.Application) -> tuple[web.AppRunner, str]:
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    return runner, f"http://127.0.0.1:{port}"


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


def test_parse_totals_of_a_real_frontend_registry() -> None:
    metrics = FrontendMetrics()
    serve_requests(metrics, "Qwen/Qwen3-0.6B", 3, isl=100, osl=10)
    serve_requests(metrics, "other", 2, isl=50, osl=5)
    totals = parse_totals(metrics.render().decode())
    assert totals.requests == 5
    assert totals.counts["input_sequence_tokens"] == 5
    assert totals.sums["input_sequence_tokens"] == 400
    # a model filter compares case-insensitively (their PR #3821)
    only = parse_totals(metrics.render().decode(), model="qwen/qwen3-0.6b")
    assert only.requests == 3 and only.sums["output_sequence_tokens"] == 30


async def test_scrapes_the_frontends_found_in_discovery(session: aiohttp.ClientSession) -> None:
    store = MemoryStore()
    metrics = [FrontendMetrics(), FrontendMetrics()]
    runners = []
    frontend_discovery = MemoryDiscovery(store)
    await frontend_discovery.start()
    for i, m in enumerate(metrics):
        app = web.Application()

        async def handler(request: web.Request, m: FrontendMetrics = m) -> web.Response:
            return web.Response(body=m.render(), content_type="text/plain")

        app.router.add_get("/metrics", handler)
        runner, url = await _server(app)
        runners.append(runner)
        await frontend_discovery.put(
            f"{FRONTENDS_ROOT}/ns/{i:x}", {"metrics_url": url + "/metrics"}
        )
    planner_discovery = MemoryDiscovery(store)
    await planner_discovery.start()
    try:
        serve_requests(metrics[0], "m", 4, isl=100, osl=10)  # before the baseline: not counted
        scrape = FrontendScrape(planner_discovery, "ns", session)
        await scrape.start()
        serve_requests(metrics[0], "m", 2, isl=300, osl=30)
        serve_requests(metrics[1], "m", 2, isl=100, osl=10)
        traffic = await scrape.traffic(10.0)
        assert traffic.num_requests == 4
        assert traffic.isl == 200.0 and traffic.osl == 20.0
        assert traffic.ttft_ms == pytest.approx(200.0) and traffic.itl_ms == pytest.approx(20.0)
        assert traffic.request_duration_s == pytest.approx(1.5)
        idle = await scrape.traffic(10.0)
        assert idle.num_requests == 0 and idle.isl is None
    finally:
        for runner in runners:
            await runner.cleanup()
        await frontend_discovery.close()
        await planner_discovery.close()


async def test_arrivals_are_finished_plus_in_flight_requests(
    session: aiohttp.ClientSession,
) -> None:
    store = MemoryStore()
    metrics = FrontendMetrics()
    app = web.Application()

    async def handler(request: web.Request) -> web.Response:
        return web.Response(body=metrics.render(), content_type="text/plain")

    app.router.add_get("/metrics", handler)
    runner, url = await _server(app)
    metrics2 = FrontendMetrics()
    app2 = web.Application()

    async def handler2(request: web.Request) -> web.Response:
        return web.Response(body=metrics2.render(), content_type="text/plain")

    app2.router.add_get("/metrics", handler2)
    runner2, url2 = await _server(app2)
    discovery = MemoryDiscovery(store)
    await discovery.start()
    try:
        scrape = FrontendScrape(discovery, "ns", session)
        assert await scrape.arrived() is None  # no frontend yet: no count (and no error)
        serve_requests(metrics, "m", 4, isl=100, osl=10)  # before the frontend is seen
        await discovery.put(f"{FRONTENDS_ROOT}/ns/1", {"metrics_url": url + "/metrics"})
        assert await scrape.arrived() == 0  # a frontend's earlier traffic is no burst
        serve_requests(metrics, "m", 3, isl=100, osl=10)
        metrics.inflight.labels("m").inc(2)  # two more are being served
        assert await scrape.arrived() == 5
        assert parse_totals(metrics.render().decode()).arrived == 9
        # a second frontend joins with a long history: it adds only what arrives after
        await discovery.put(f"{FRONTENDS_ROOT}/ns/2", {"metrics_url": url2 + "/metrics"})
        serve_requests(metrics2, "m", 50, isl=100, osl=10)
        assert await scrape.arrived() == 5
        serve_requests(metrics2, "m", 1, isl=100, osl=10)
        assert await scrape.arrived() == 6
    finally:
        await runner.cleanup()
        await runner2.cleanup()
        await discovery.close()
    # Prometheus scrapes less often than a load check: it gives no arrival count
    assert await PrometheusQuery("http://127.0.0.1:9", session).arrived() is None


async def test_no_frontend_is_a_transport_error(session: aiohttp.ClientSession) -> None:
    discovery = MemoryDiscovery(MemoryStore())
    await discovery.start()
    with pytest.raises(TransportError, match="no frontend registered under v1/frontends/ns/"):
        await FrontendScrape(discovery, "ns", session).traffic(10.0)
    await discovery.close()


async def test_prometheus_http_api(session: aiohttp.ClientSession) -> None:
    queries: list[str] = []
    answers = {
        "requests_total": 20.0,
        "input_sequence_tokens_sum": 20_000.0,
        "input_sequence_tokens_count": 20.0,
        "time_to_first_token_seconds_sum": 4.0,
        "time_to_first_token_seconds_count": 20.0,
    }

    async def query(request: web.Request) -> web.Response:
        q = request.query["query"]
        queries.append(q)
        result: list[dict[str, Any]] = [
            {"metric": {}, "value": [0, str(v)]} for k, v in answers.items() if f"_{k}{{" in q
        ]
        return web.json_response(
            {"status": "success", "data": {"resultType": "vector", "result": result}}
        )

    app = web.Application()
    app.router.add_get("/api/v1/query", query)
    runner, url = await _server(app)
    try:
        traffic = await PrometheusQuery(url, session, model="Qwen/Qwen3-0.6B").traffic(60.0)
    finally:
        await runner.cleanup()
    assert traffic.num_requests == 20 and traffic.isl == 1000.0
    assert traffic.ttft_ms == pytest.approx(200.0)
    assert traffic.osl is None  # Prometheus had no series
    assert queries[0] == (
        'sum(increase(dynamo_frontend_requests_total{model=~"(?i)Qwen/Qwen3-0.6B"}[60s]))'
    )


async def test_unreachable_prometheus(session: aiohttp.ClientSession) -> None:
    source = PrometheusQuery("http://127.0.0.1:9", session)
    with pytest.raises(TransportError) as info:
        await source.traffic(60.0)
    assert str(info.value).startswith("Prometheus at http://127.0.0.1:9/api/v1/query: ")
