"""The operator's own Prometheus metrics and the small HTTP server that exposes them."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from dynamo.runtime.errors import ConfigError

RESULTS = ("success", "invalid", "retry")


class OperatorMetrics:
    """Reconciles by resource kind and result, and how long they took."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.reconciles = Counter(
            "dynamo_operator_reconciles",
            "Reconciles by kind and result (success; invalid: the spec is wrong, not retried; "
            "retry: the API failed, retried later)",
            ("kind", "result"),
            registry=self.registry,
        )
        self.reconcile_seconds = Histogram(
            "dynamo_operator_reconcile_duration_seconds",
            "Time one reconcile took",
            ("kind",),
            registry=self.registry,
        )
        for result in RESULTS:  # every series exists from the start
            self.reconciles.labels("DynamoGraphDeployment", result)

    @contextmanager
    def reconcile(self, kind: str) -> Iterator[dict[str, str]]:
        """Time a reconcile of `kind`; the caller sets `outcome["result"]` (default success)."""
        outcome = {"result": "success"}
        started = time.perf_counter()
        try:
            yield outcome
        finally:
            self.reconcile_seconds.labels(kind).observe(time.perf_counter() - started)
            self.reconciles.labels(kind, outcome["result"]).inc()


async def serve_metrics(metrics: OperatorMetrics, port: int) -> web.AppRunner:
    """Serve `GET /metrics` on `port` (all interfaces); `await runner.cleanup()` stops it."""

    async def scrape(_: web.Request) -> web.Response:
        return web.Response(
            body=generate_latest(metrics.registry), headers={"Content-Type": CONTENT_TYPE_LATEST}
        )

    app = web.Application()
    app.router.add_get("/metrics", scrape)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, "0.0.0.0", port).start()
    except OSError as exc:
        await runner.cleanup()
        raise ConfigError(f"cannot serve operator metrics on port {port}: {exc}") from exc
    return runner
