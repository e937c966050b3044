"""What one HTTP worker process of `--num-http-workers N` shares with the others.

The supervisor (`http_workers`) gives each process its slot through the environment
(`HttpWorkerRole`). Each process then serves, on a unix socket in the run directory:

- `GET /metrics`: its own metrics only (`/metrics` on the HTTP port merges every process's,
  see `metrics_merge`);
- `POST /busy_threshold`: thresholds another process accepted, applied here too, so a
  `POST /busy_threshold` holds whichever process took it.

The socket appears once the process serves HTTP: the supervisor reads it as "ready".
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import orjson
from aiohttp import web

from dynamo.frontend.metrics import CONTENT_TYPE, FrontendMetrics
from dynamo.frontend.metrics_merge import merge_expositions
from dynamo.frontend.model_manager import ModelManager
from dynamo.runtime.errors import DynamoError

log = logging.getLogger(__name__)

RUN_DIR_ENV = "DYN_HTTP_WORKER_DIR"  # set by the supervisor only (not a user setting)
INDEX_ENV = "DYN_HTTP_WORKER_INDEX"
COUNT_ENV = "DYN_HTTP_WORKER_COUNT"
STARTED_ENV = "DYN_HTTP_WORKER_STARTED"
SIBLING_TIMEOUT_S = 5.0


def socket_path(run_dir: Path, index: int) -> Path:
    return run_dir / f"http-worker-{index}.sock"


@dataclass(frozen=True, slots=True)
class HttpWorkerRole:
    """This process is HTTP worker `index` of `count`, sharing `run_dir` with the others;
    `started`: the supervisor's start (Unix seconds), what every process's /v1/models says."""

    run_dir: Path
    index: int
    count: int
    started: int

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> HttpWorkerRole | None:
        env = os.environ if environ is None else environ
        run_dir = env.get(RUN_DIR_ENV)
        if not run_dir:
            return None
        return cls(Path(run_dir), int(env[INDEX_ENV]), int(env[COUNT_ENV]), int(env[STARTED_ENV]))

    def env(self) -> dict[str, str]:
        return {
            RUN_DIR_ENV: str(self.run_dir),
            INDEX_ENV: str(self.index),
            COUNT_ENV: str(self.count),
            STARTED_ENV: str(self.started),
        }

    @property
    def socket(self) -> Path:
        return socket_path(self.run_dir, self.index)

    def others(self) -> list[Path]:
        return [socket_path(self.run_dir, i) for i in range(self.count) if i != self.index]


class Siblings:
    """This process's socket for the others, and its requests to theirs."""

    def __init__(
        self, role: HttpWorkerRole, metrics: FrontendMetrics, models: ModelManager
    ) -> None:
        self.role = role
        self._metrics = metrics
        self._models = models
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/metrics", self._own_metrics)
        app.router.add_post("/busy_threshold", self._apply_thresholds)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        with contextlib.suppress(FileNotFoundError):  # left by this slot's previous process
            self.role.socket.unlink()
        await web.UnixSite(runner, str(self.role.socket)).start()
        self._runner = runner

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        with contextlib.suppress(FileNotFoundError):
            self.role.socket.unlink()

    # --- what the HTTP port's routes ask ---------------------------------------------------
    async def render_metrics(self) -> bytes:
        """Every process's metrics merged (a process that does not answer is left out)."""
        others = await asyncio.gather(*(self._get(path, "/metrics") for path in self.role.others()))
        texts = [self._metrics.render().decode(), *(t for t in others if t is not None)]
        return merge_expositions(texts, self._metrics.prefix)

    async def broadcast_thresholds(self, body: dict[str, object]) -> None:
        data = orjson.dumps(body)
        await asyncio.gather(
            *(self._post(path, "/busy_threshold", data) for path in self.role.others())
        )

    # --- what the other processes ask ------------------------------------------------------
    async def _own_metrics(self, request: web.Request) -> web.StreamResponse:
        return web.Response(body=self._metrics.render(), headers={"Content-Type": CONTENT_TYPE})

    async def _apply_thresholds(self, request: web.Request) -> web.StreamResponse:
        body = orjson.loads(await request.read())  # validated by the process that took it
        try:
            self._models.set_busy_thresholds(
                body["model"],
                body.get("active_decode_blocks_threshold"),
                body.get("active_prefill_tokens_threshold"),
            )
        except DynamoError as exc:  # the model is not (yet) known here
            return web.Response(status=404, text=str(exc))
        return web.Response(status=204)

    async def _get(self, path: Path, route: str) -> str | None:
        try:
            async with (
                _session(path) as session,
                session.get(f"http://worker{route}") as response,
            ):
                response.raise_for_status()
                return await response.text()
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            log.warning("HTTP worker at %s did not answer %s: %s", path.name, route, exc)
            return None

    async def _post(self, path: Path, route: str, data: bytes) -> None:
        try:
            async with (
                _session(path) as session,
                session.post(f"http://worker{route}", data=data) as response,
            ):
                if response.status >= 300:
                    log.warning(
                        "HTTP worker at %s refused %s: %s",
                        path.name,
                        route,
                        await response.text(),
                    )
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            log.warning("HTTP worker at %s did not answer %s: %s", path.name, route, exc)


def _session(path: Path) -> aiohttp.ClientSession:
    return aiohttp.ClientSession(
        connector=aiohttp.UnixConnector(path=str(path)),
        timeout=aiohttp.ClientTimeout(total=SIBLING_TIMEOUT_S),
    )
