"""The request scope: ids accepted from clients, carried in worker requests, restored."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from dynamo.runtime.request_scope import (
    CARRIER_KEY,
    accepted_request_id,
    attach,
    current_request_id,
    current_traceparent,
    detach,
    request_scope,
    scoped,
    trace_id_of,
)
from dynamo.runtime.transport.base import RequestContext

TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


def test_accepted_request_ids() -> None:
    assert accepted_request_id("my-id_1.2") == "my-id_1.2"
    for hostile in (None, "", "a b", "line\nbreak", "x" * 129, "caf\u00e9"):
        generated = accepted_request_id(hostile)
        assert len(generated) == 32 and int(generated, 16) >= 0


def test_trace_id_of() -> None:
    assert trace_id_of(TRACEPARENT) == "0af7651916cd43dd8448eb211c80319c"
    assert trace_id_of("00-xyz-abc-01") is None
    assert trace_id_of(None) is None


def test_attach_and_detach() -> None:
    request = {"token_ids": [1, 2]}
    assert attach(request) is request  # no scope: nothing added
    with request_scope("r1", TRACEPARENT):
        sent = attach(request)
    assert request == {"token_ids": [1, 2]}
    assert sent[CARRIER_KEY] == {"x-request-id": "r1", "traceparent": TRACEPARENT}
    body, carrier = detach(sent)
    assert body == request and dict(carrier) == sent[CARRIER_KEY]
    assert detach(request) == (request, {})
    assert detach({"a": 1, CARRIER_KEY: "junk"}) == ({"a": 1}, {})


def test_a_malformed_traceparent_is_dropped() -> None:
    with request_scope("r1", "not-a-traceparent"):
        assert current_traceparent() is None
    assert current_request_id() is None


async def test_scoped_handler_sees_the_callers_scope() -> None:
    seen: list[tuple[Any, str | None, str | None]] = []

    async def handler(
        request: dict[str, Any], ctx: RequestContext
    ) -> AsyncIterator[dict[str, Any]]:
        seen.append((request, current_request_id(), current_traceparent()))
        yield {"n": 1}

    with request_scope("r9", TRACEPARENT):
        sent = attach({"token_ids": [3]})
    items = [item async for item in scoped(handler)(sent, RequestContext("wire-id"))]
    assert items == [{"n": 1}]
    assert seen == [({"token_ids": [3]}, "r9", TRACEPARENT)]

    # a caller without a scope: the request plane's own id names the request
    seen.clear()
    _ = [item async for item in scoped(handler)({"token_ids": [4]}, RequestContext("wire-id"))]
    assert seen == [({"token_ids": [4]}, "wire-id", None)]
    assert current_request_id() is None


async def test_scopes_of_concurrent_requests_stay_apart() -> None:
    async def one(rid: str) -> str | None:
        with request_scope(rid):
            await asyncio.sleep(0.01)
            return current_request_id()

    assert await asyncio.gather(one("a"), one("b")) == ["a", "b"]
