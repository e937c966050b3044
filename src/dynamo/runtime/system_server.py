"""The worker's status server: `/live`, `/health` (ready once endpoints serve and every health
check passes), `/metrics`, and the files the process hosts for its peers
(`/v1/model-files/{sha256}`)."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest

from dynamo.runtime.errors import TransportError
from dynamo.runtime.health import Unhealthy
from dynamo.runtime.hosted_files import FILES_ROUTE, HostedFiles, is_sha256_hex


class SystemServer:
    """aiohttp app on `port` (0 = any free port); `endpoints()` lists what serves now."""

    def __init__(
        self,
        port: int,
        endpoints: Callable[[], list[str]],
        *,
        registry: CollectorRegistry = REGISTRY,
        host: str = "0.0.0.0",
        files: HostedFiles | None = None,
        health: Callable[[], Awaitable[Unhealthy | None]] | None = None,
    ) -> None:
        self._host, self._port = host, port
        self._files = files if files is not None else HostedFiles()
        self._endpoints = endpoints
        self._health_check = health
        self._registry = registry
        self._started = time.monotonic()
        self._runner: web.AppRunner | None = None
        self.port: int | None = None

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/live", self._live)
        app.router.add_get("/health", self._health)
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get(FILES_ROUTE, self._file)
        return app

    async def start(self) -> int:
        runner = web.AppRunner(self.app(), access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, self._host, self._port)
        try:
            await site.start()
        except OSError as exc:
            await runner.cleanup()
            raise TransportError(
                f"cannot serve status on {self._host}:{self._port}: {exc}"
            ) from exc
        self._runner = runner
        addresses = runner.addresses
        self.port = int(addresses[0][1]) if addresses else self._port
        return self.port

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _live(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "live"})

    async def _health(self, request: web.Request) -> web.Response:
        endpoints = self._endpoints()
        uptime_s = round(time.monotonic() - self._started, 3)
        failure = await self._health_check() if self._health_check is not None else None
        if failure is not None:
            return web.json_response(
                {
                    "status": "unhealthy",
                    "check": failure.check,
                    "reason": failure.reason,
                    "endpoints": endpoints,
                    "uptime_s": uptime_s,
                },
                status=503,
            )
        if endpoints:
            return web.json_response(
                {"status": "ready", "endpoints": endpoints, "uptime_s": uptime_s}
            )
        return web.json_response(
            {"status": "notready", "endpoints": [], "uptime_s": uptime_s}, status=503
        )

    async def _metrics(self, request: web.Request) -> web.Response:
        return web.Response(
            body=generate_latest(self._registry), headers={"Content-Type": CONTENT_TYPE_LATEST}
        )

    async def _file(self, request: web.Request) -> web.Response:
        sha256 = request.match_info["sha256"].lower()
        data = self._files.get(sha256) if is_sha256_hex(sha256) else None
        if data is None:
            return web.json_response(
                {"error": {"message": f"no file with sha256 {sha256!r} here", "code": 404}},
                status=404,
            )
        return web.Response(
            body=data,
            content_type="application/octet-stream",
            headers={"ETag": f'"{sha256}"', "Cache-Control": "public, max-age=31536000, immutable"},
        )
