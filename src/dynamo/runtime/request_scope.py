"""What a request carries through every process it visits: its id and its trace context.

The frontend opens a scope per HTTP request (`x-request-id`, accepted or generated); the
request plane copies the scope into each worker request under `CARRIER_KEY` (`attach`) and
the serving side restores it around the handler (`restore`). Logs read the scope
(`dynamo.runtime.logging_config`), so one id follows a request through frontend, router and
worker logs.
"""

from __future__ import annotations

import contextlib
import re
import uuid
from collections.abc import AsyncIterator, Iterator, Mapping
from contextvars import ContextVar, Token
from typing import Any

from dynamo.runtime.transport.base import RequestContext, RequestHandler

CARRIER_KEY = "_dynamo_ctx"
"""The key of a worker request dict that holds the caller's scope (removed before handlers)."""

REQUEST_ID_HEADER = "x-request-id"
TRACEPARENT = "traceparent"
_MAX_ID_CHARS = 128
_ID_CHARS = re.compile(r"^[\x21-\x7e]+$")  # visible ASCII: safe in logs and headers
_TRACEPARENT = re.compile(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-[0-9a-f]{2}$")

_request_id: ContextVar[str | None] = ContextVar("dynamo_request_id", default=None)
_traceparent: ContextVar[str | None] = ContextVar("dynamo_traceparent", default=None)


def new_request_id() -> str:
    return uuid.uuid4().hex


def accepted_request_id(header: str | None) -> str:
    """A client's `x-request-id` if it is usable (visible ASCII, at most 128 chars), else a
    new one: a hostile header must not forge log lines or grow without bound."""
    if header and len(header) <= _MAX_ID_CHARS and _ID_CHARS.match(header):
        return header
    return new_request_id()


def current_request_id() -> str | None:
    return _request_id.get()


def current_traceparent() -> str | None:
    """The W3C `traceparent` of the current scope (set by the tracer, or received)."""
    return _traceparent.get()


def trace_id_of(traceparent: str | None) -> str | None:
    """The 32-hex trace id of a W3C `traceparent`, None when absent or malformed."""
    if not traceparent:
        return None
    match = _TRACEPARENT.match(traceparent)
    return match.group(1) if match else None


@contextlib.contextmanager
def traceparent_scope(traceparent: str) -> Iterator[None]:
    """Make `traceparent` current for this block (the tracer does this for each span)."""
    token = _traceparent.set(traceparent)
    try:
        yield
    finally:
        _reset(_traceparent, token)


@contextlib.contextmanager
def request_scope(request_id: str, traceparent: str | None = None) -> Iterator[None]:
    """Make `request_id` (and a received `traceparent`) current for this block."""
    rid = _request_id.set(request_id)
    tp = _traceparent.set(traceparent if trace_id_of(traceparent) else None)
    try:
        yield
    finally:
        _reset(_traceparent, tp)
        _reset(_request_id, rid)


def _reset(var: ContextVar[Any], token: Token[Any]) -> None:
    # A generator closed from another task ends its scope in another Context: that task's
    # own values are untouched, so there is nothing to undo.
    with contextlib.suppress(ValueError):
        var.reset(token)


def attach(request: dict[str, Any]) -> dict[str, Any]:
    """`request` with the current scope under `CARRIER_KEY` (unchanged when there is none)."""
    request_id, traceparent = _request_id.get(), _traceparent.get()
    if request_id is None and traceparent is None:
        return request
    carrier: dict[str, str] = {}
    if request_id is not None:
        carrier[REQUEST_ID_HEADER] = request_id
    if traceparent is not None:
        carrier[TRACEPARENT] = traceparent
    return {**request, CARRIER_KEY: carrier}


def detach(request: dict[str, Any]) -> tuple[dict[str, Any], Mapping[str, str]]:
    """Split a received request into (the handler's request, the caller's carrier)."""
    carrier = request.get(CARRIER_KEY)
    if carrier is None:
        return request, {}
    body = {k: v for k, v in request.items() if k != CARRIER_KEY}
    if not isinstance(carrier, dict):
        return body, {}
    return body, {str(k): str(v) for k, v in carrier.items() if isinstance(v, str)}


def scoped(handler: RequestHandler) -> RequestHandler:
    """`handler` run inside the caller's scope (the request id and traceparent it attached;
    the request plane's own id when the caller attached none)."""

    async def run(request: dict[str, Any], ctx: RequestContext) -> AsyncIterator[dict[str, Any]]:
        body, carrier = detach(request)
        request_id = carrier.get(REQUEST_ID_HEADER) or ctx.request_id
        with request_scope(request_id, carrier.get(TRACEPARENT)):
            stream = handler(body, ctx)
            try:
                async for item in stream:
                    yield item
            finally:
                aclose = getattr(stream, "aclose", None)
                if aclose is not None:
                    await aclose()

    return run
