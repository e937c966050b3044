"""The aiohttp application: thin routes over `OpenAIServing`, health, metrics, thresholds.

Routes read the body, call a serving method and write what it returns; SSE chunks are written
as they come. Every error leaves as an OpenAI error body (unknown paths and methods too).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import orjson
from aiohttp import web

from dynamo.frontend import adapters
from dynamo.frontend.embeddings import embed
from dynamo.frontend.errors import HttpError, bad_request
from dynamo.frontend.inflight import InflightRequest, InflightRequests
from dynamo.frontend.metrics import CONTENT_TYPE, FrontendMetrics
from dynamo.frontend.model_manager import ModelManager
from dynamo.frontend.openapi import openapi_document
from dynamo.frontend.preprocessor_cache import PreprocessorCache
from dynamo.frontend.protocol import EmbeddingRequest, parse_body
from dynamo.frontend.serving import JsonReply, OpenAIServing, StreamReply
from dynamo.frontend.sse import ClientTooSlowError, write_sse
from dynamo.runtime.errors import DynamoError
from dynamo.runtime.request_scope import (
    REQUEST_ID_HEADER,
    TRACEPARENT,
    accepted_request_id,
    request_scope,
)
from dynamo.runtime.tracing import span

log = logging.getLogger(__name__)

_SSE_HEADERS = {
    "Content-Type": "text/event-stream",
    "Cache-Control": "no-cache",
    "Connection": "keep-alive",
    "X-Accel-Buffering": "no",
}
_JSON = "application/json"
_LIVE = orjson.dumps({"status": "live", "message": "Service is live"})

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Siblings(Protocol):
    """The other HTTP worker processes on the same port (`dynamo.frontend.siblings`)."""

    async def render_metrics(self) -> bytes: ...

    async def broadcast_thresholds(self, body: dict[str, object]) -> None: ...


class _BodyTimeout(Exception):
    def __init__(self, timeout_s: float) -> None:
        super().__init__(f"request body not received within {timeout_s:g} s")
        self.timeout_s = timeout_s


def _json(status: int, body: bytes) -> web.Response:
    return web.Response(status=status, body=body, content_type=_JSON)


def _error(err: HttpError) -> web.Response:
    return _json(err.status, err.body())


@web.middleware
async def _openai_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Unknown paths, wrong methods, oversized or slow bodies and bugs answer in OpenAI's
    shape."""
    try:
        return await handler(request)
    except _BodyTimeout as exc:
        resp = _error(
            HttpError(
                408,
                f"The request body did not arrive within {exc.timeout_s:g} s",
                "invalid_request_error",
                None,
                "request_timeout",
                "validation",
            )
        )
        # send it and close at once, rather than read the rest of a slow body (lingering)
        resp.force_close()
        await resp.prepare(request)
        await resp.write_eof()
        if request.protocol is not None:
            request.protocol.force_close()  # flushes the response, then closes
        return resp
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        kind = "not_found" if exc.status == 404 else "invalid_request"
        if exc.status == 404:
            message = f"Not found: {request.method} {request.path}"
        elif exc.status == 413:  # aiohttp's text says the limit
            message = exc.text or exc.reason
        else:
            message = exc.reason
        return _error(HttpError(exc.status, message, "invalid_request_error", None, kind))
    except (ConnectionResetError, web.RequestPayloadError):
        raise
    except Exception:
        log.exception("unhandled error on %s %s", request.method, request.path)
        return _error(HttpError(500, "Internal server error", "internal_error"))


_REQUEST_ID = web.RequestKey("dynamo_request_id", str)


@web.middleware
async def _scoped(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Each request runs in its scope: `x-request-id` accepted or generated (echoed in the
    response), a received W3C `traceparent` joined, an `http` span around it all."""
    request_id = accepted_request_id(request.headers.get(REQUEST_ID_HEADER))
    request[_REQUEST_ID] = request_id
    with (
        request_scope(request_id, request.headers.get(TRACEPARENT)),
        span("http", **{"http.method": request.method, "url.path": request.path}),
    ):
        log.debug("%s %s", request.method, request.path)
        return await handler(request)


async def _echo_request_id(request: web.Request, response: web.StreamResponse) -> None:
    request_id = request.get(_REQUEST_ID)
    if request_id is not None:
        response.headers[REQUEST_ID_HEADER] = request_id


class FrontendApp:
    """Route handlers; the state they use is built by `dynamo.frontend.server`."""

    def __init__(
        self,
        serving: OpenAIServing,
        models: ModelManager,
        preprocessors: PreprocessorCache,
        metrics: FrontendMetrics,
        *,
        max_body_bytes: int,
        body_timeout_s: float | None = None,
        write_timeout_s: float | None = None,
        version: str = "0",
        anthropic_api: bool = False,
    ) -> None:
        self._anthropic = anthropic_api
        self.serving = serving
        self.models = models
        self.preprocessors = preprocessors
        self.metrics = metrics
        self._max_body = max_body_bytes
        self._body_timeout_s = body_timeout_s
        self._write_timeout_s = write_timeout_s
        self._openapi = orjson.dumps(openapi_document(version, anthropic_api=anthropic_api))
        self.started = int(time.time())  # `created` of /v1/models
        self.inflight = InflightRequests()  # listed on SIGUSR1 (see dynamo.frontend.main)
        self.siblings: Siblings | None = None  # set in each of `--num-http-workers` processes

    def build(self) -> web.Application:
        app = web.Application(middlewares=[_scoped, _openai_errors], client_max_size=self._max_body)
        app.on_response_prepare.append(_echo_request_id)
        r = app.router
        r.add_post("/v1/chat/completions", self.chat)
        r.add_post("/v1/completions", self.completions)
        r.add_post("/v1/responses", self.responses)
        if self._anthropic:
            r.add_post("/v1/messages", self.messages)
        r.add_post("/v1/embeddings", self.embeddings)
        r.add_get("/v1/models", self.list_models)
        r.add_get("/health", self.health)
        r.add_get("/live", self.live)
        r.add_get("/metrics", self.prometheus)
        r.add_get("/busy_threshold", self.busy_threshold)
        r.add_post("/busy_threshold", self.busy_threshold)
        r.add_get("/openapi.json", self.openapi)
        return app

    # --- OpenAI --------------------------------------------------------------------------
    async def chat(self, request: web.Request) -> web.StreamResponse:
        return await self._openai(request, self.serving.chat)

    async def completions(self, request: web.Request) -> web.StreamResponse:
        return await self._openai(request, self.serving.completions)

    async def _openai(
        self, request: web.Request, serve: Callable[[bytes], Awaitable[JsonReply | StreamReply]]
    ) -> web.StreamResponse:
        """Read the body, serve it, send the reply; tracked in `inflight` all along."""
        with self.inflight.track(request.get(_REQUEST_ID, ""), request.path) as entry:
            body = await self._body(request)
            entry.state = "preparing"
            return await self._reply(request, await serve(body), entry)

    async def _body(self, request: web.Request) -> bytes:
        """The request body, read within `--http-body-timeout-s` (slow bodies get 408)."""
        if self._body_timeout_s is None or request.content.is_eof():
            return await request.read()  # all there already: no timer needed
        try:
            async with asyncio.timeout(self._body_timeout_s):
                return await request.read()
        except TimeoutError:
            raise _BodyTimeout(self._body_timeout_s) from None

    async def messages(self, request: web.Request) -> web.StreamResponse:
        return await self._openai(request, lambda body: adapters.messages(self.serving, body))

    async def responses(self, request: web.Request) -> web.StreamResponse:
        return await self._openai(request, lambda body: adapters.responses(self.serving, body))

    async def _reply(
        self, request: web.Request, reply: JsonReply | StreamReply, entry: InflightRequest
    ) -> web.StreamResponse:
        if isinstance(reply, JsonReply):
            entry.state = "answering"
            return _json(reply.status, reply.body)
        resp = web.StreamResponse(status=200, headers=_SSE_HEADERS)
        try:
            await resp.prepare(request)
            await write_sse(
                request,
                resp,
                reply.first,
                reply.rest,
                write_timeout_s=self._write_timeout_s,
                progress=entry,
            )
        except ClientTooSlowError as exc:
            log.info("dropped a streaming client: %s", exc)
        except ConnectionResetError:
            log.debug("client went away mid-stream")
        finally:
            await reply.rest.aclose()
        return resp

    async def embeddings(self, request: web.Request) -> web.StreamResponse:
        try:
            req = parse_body(EmbeddingRequest, await self._body(request))
            return _json(200, await embed(req, self.models, self.preprocessors))
        except DynamoError as exc:
            return _error(self.serving.error(exc))

    async def list_models(self, request: web.Request) -> web.StreamResponse:
        data = [
            {"id": e.name, "object": "model", "created": self.started, "owned_by": "nvidia"}
            for e in self.models.models()
        ]
        return _json(200, orjson.dumps({"object": "list", "data": data}))

    # --- operations ----------------------------------------------------------------------
    async def health(self, request: web.Request) -> web.StreamResponse:
        instances: list[dict[str, Any]] = []
        endpoints: set[str] = set()
        for entry in self.models.models():
            ready = set(self.models.ready_workers_of(entry.name))
            for w in entry.workers.values():
                if w.instance_id in ready:
                    endpoints.add(str(w.address))
                    instances.append(
                        {
                            "model": entry.name,
                            "endpoint": str(w.address),
                            "instance_id": w.instance_id,
                        }
                    )
        if instances:
            # sorted: the same answer from every process of --num-http-workers
            instances.sort(key=lambda i: (i["model"], i["instance_id"]))
            body = {"status": "healthy", "endpoints": sorted(endpoints), "instances": instances}
            return _json(200, orjson.dumps(body))
        body = {
            "status": "unhealthy",
            "message": "No endpoints available",
            "endpoints": [],
            "instances": [],
        }
        return _json(503, orjson.dumps(body))

    async def live(self, request: web.Request) -> web.StreamResponse:
        return _json(200, _LIVE)

    async def prometheus(self, request: web.Request) -> web.StreamResponse:
        if self.siblings is None:
            body = self.metrics.render()
        else:  # one view over every process on the port
            body = await self.siblings.render_metrics()
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE})

    async def openapi(self, request: web.Request) -> web.StreamResponse:
        return _json(200, self._openapi)

    async def busy_threshold(self, request: web.Request) -> web.StreamResponse:
        """GET: every model's thresholds. POST {"model", thresholds?}: set (or read) one."""
        if request.method == "GET":
            rows = [self.models.busy_thresholds(e.name) for e in self.models.models()]
            return _json(200, orjson.dumps({"thresholds": rows}))
        try:
            body = orjson.loads(await self._body(request))
        except orjson.JSONDecodeError as exc:
            return _error(bad_request(f"Invalid JSON body: {exc}"))
        if not isinstance(body, dict) or not isinstance(body.get("model"), str):
            return _error(bad_request('expected {"model": str, ...}', param="model"))
        decode = body.get("active_decode_blocks_threshold")
        prefill = body.get("active_prefill_tokens_threshold")
        bad = _threshold_error(decode, prefill)
        if bad is not None:
            return _error(bad)
        try:
            if (
                "active_decode_blocks_threshold" in body
                or "active_prefill_tokens_threshold" in body
            ):
                row = self.models.set_busy_thresholds(body["model"], decode, prefill)
                if self.siblings is not None:  # every process on the port routes with them
                    await self.siblings.broadcast_thresholds(row)
            else:
                row = self.models.busy_thresholds(body["model"])
        except DynamoError as exc:
            return _error(self.serving.error(exc))
        return _json(200, orjson.dumps(row))


def _threshold_error(decode: Any, prefill: Any) -> HttpError | None:
    if decode is not None and (
        isinstance(decode, bool) or not isinstance(decode, int | float) or not 0 <= decode <= 1
    ):
        return bad_request(
            "active_decode_blocks_threshold must be a number in [0, 1] or null",
            param="active_decode_blocks_threshold",
        )
    if prefill is not None and (
        isinstance(prefill, bool) or not isinstance(prefill, int) or prefill < 0
    ):
        return bad_request(
            "active_prefill_tokens_threshold must be an integer >= 0 or null",
            param="active_prefill_tokens_threshold",
        )
    return None
