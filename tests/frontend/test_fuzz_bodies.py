"""Random request bodies never get a 5xx, and every error is OpenAI-shaped.

Bodies are built from the field names of the frontend's own OpenAPI document, with values of
every JSON type (valid ones included), plus raw byte strings.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp
import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dynamo.frontend.openapi import openapi_document
from dynamo.testing.fake_worker import FakeRuntime, FakeWorker
from dynamo.testing.frontend_harness import MODEL, Harness, start_frontend, tiny_card

_SCHEMAS = openapi_document("test")["components"]["schemas"]
_PATHS = {
    "/v1/chat/completions": sorted(_SCHEMAS["ChatCompletionRequest"]["properties"]),
    "/v1/completions": sorted(_SCHEMAS["CompletionRequest"]["properties"]),
    "/v1/embeddings": sorted(_SCHEMAS["EmbeddingRequest"]["properties"]),
    "/v1/responses": sorted(_SCHEMAS["ResponsesRequest"]["properties"]),
}

_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False)
    | st.text(max_size=20)
    | st.sampled_from([MODEL, "user", "assistant", "text", "nope", "", 0, 1, 2.0, -1])
)
_json = st.recursive(
    _scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
_message = st.fixed_dictionaries(
    {"role": st.sampled_from(["user", "system", "assistant", "bob"])},
    optional={"content": st.text(max_size=30) | _json, "name": _json},
)


def _valid(prop: dict[str, Any]) -> st.SearchStrategy[Any]:
    """Values the schema of one property allows (roughly: ranges, types)."""
    strategies: list[st.SearchStrategy[Any]] = []
    for option in prop.get("anyOf", [prop]):
        kind = option.get("type")
        if kind == "number":
            lo = option.get("minimum", option.get("exclusiveMinimum", -10.0))
            hi = option.get("maximum", option.get("exclusiveMaximum", 10.0))
            strategies.append(
                st.floats(
                    lo,
                    hi,
                    exclude_min="exclusiveMinimum" in option,
                    exclude_max="exclusiveMaximum" in option,
                )
            )
        elif kind == "integer":
            lo = max(option.get("minimum", -10), -10)
            strategies.append(st.integers(lo, min(option.get("maximum", 40), 40)))
        elif kind == "boolean":
            strategies.append(st.booleans())
        elif kind == "string":
            strategies.append(st.text(max_size=10))
        elif kind == "null":
            strategies.append(st.none())
    return st.one_of(strategies) if strategies else _json


_VALID = {
    path: {name: _valid(prop) for name, prop in _SCHEMAS[schema]["properties"].items()}
    for path, schema in (
        ("/v1/chat/completions", "ChatCompletionRequest"),
        ("/v1/completions", "CompletionRequest"),
        ("/v1/embeddings", "EmbeddingRequest"),
        ("/v1/responses", "ResponsesRequest"),
    )
}


@st.composite
def bodies(draw: st.DrawFn) -> tuple[str, bytes]:
    path = draw(st.sampled_from(sorted(_PATHS)))
    if draw(st.integers(0, 9)) == 0:
        return path, draw(st.binary(max_size=40))
    good_model = "embedder" if path == "/v1/embeddings" else MODEL
    model = draw(st.sampled_from([good_model] * 8 + [MODEL, "other"]))
    body: dict[str, Any] = {"model": model if draw(st.integers(0, 5)) else draw(_json)}
    if path == "/v1/chat/completions":
        body["messages"] = draw(st.lists(_message, min_size=1, max_size=3) | _json)
    elif path == "/v1/completions":
        body["prompt"] = draw(st.text(max_size=30) | st.lists(st.integers(-5, 3000), max_size=5))
    elif path == "/v1/responses":
        items = st.lists(_message | _json, min_size=1, max_size=3)
        body["input"] = draw(st.text(max_size=30) | items | _json)
    else:
        body["input"] = draw(st.text(max_size=30) | _json)
    for field in draw(st.lists(st.sampled_from(_PATHS[path]), max_size=5, unique=True)):
        if field not in ("model", "messages", "prompt", "input"):
            body[field] = draw(_VALID[path][field] if draw(st.integers(0, 3)) else _json)
    if draw(st.booleans()):
        body["max_tokens"] = draw(st.integers(-2, 300))
    return path, json.dumps(body).encode()


async def test_random_bodies_get_no_5xx() -> None:
    runtime = FakeRuntime()
    frontend = await start_frontend(runtime)
    harness = Harness(runtime, frontend)
    await harness.add(FakeWorker(tiny_card()))
    await harness.add(FakeWorker(tiny_card("embedder", model_types=["embedding"])))
    loop = asyncio.get_running_loop()
    seen: dict[int, int] = {}

    async def post(session: aiohttp.ClientSession, path: str, data: bytes) -> tuple[int, bytes]:
        headers = {"Content-Type": "application/json"}
        async with session.post(harness.url + path, data=data, headers=headers) as r:
            return r.status, await r.read()

    async with aiohttp.ClientSession() as session:
        # hypothesis drives a plain function in a thread; requests run on this loop
        @settings(
            max_examples=300,
            deadline=None,
            derandomize=True,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        @given(bodies())
        def check(case: tuple[str, bytes]) -> None:
            path, data = case
            status, payload = asyncio.run_coroutine_threadsafe(
                post(session, path, data), loop
            ).result(timeout=60)
            seen[status] = seen.get(status, 0) + 1
            assert status < 500, (status, data, payload)
            if status >= 400:
                err = orjson.loads(payload)["error"]
                assert set(err) == {"message", "type", "param", "code"}

        try:
            await asyncio.to_thread(check)
        finally:
            await frontend.stop()
    assert seen.get(400, 0) > 0 and seen.get(200, 0) >= 10, seen
