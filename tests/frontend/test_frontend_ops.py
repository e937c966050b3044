"""Health, liveness, metrics, OpenAPI, busy thresholds, overload status and embeddings."""

from __future__ import annotations

import base64
import struct
from typing import Any

import aiohttp
import openai
import pytest

from dynamo.protocols.kv_events import LoadMetrics
from dynamo.testing.fake_worker import FakeRuntime, FakeWorker
from dynamo.testing.frontend_harness import MODEL, Harness, start_frontend, tiny_card, wait_until


async def get(harness: Harness, path: str) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as s, s.get(harness.url + path) as r:
        ctype = r.headers.get("Content-Type", "")
        return r.status, (await r.json()) if "json" in ctype else await r.text()


async def post_json(harness: Harness, path: str, body: Any) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as s, s.post(harness.url + path, json=body) as r:
        return r.status, await r.json()


async def test_health_follows_workers_and_live_is_always_up(harness: Harness) -> None:
    status, body = await get(harness, "/health")
    assert status == 503
    assert body["status"] == "unhealthy" and body["instances"] == []
    worker = await harness.add(FakeWorker(tiny_card()))
    status, body = await get(harness, "/health")
    assert status == 200 and body["status"] == "healthy"
    assert body["endpoints"] == ["dyn://dynamo.backend.generate"]
    assert body["instances"] == [
        {
            "model": MODEL,
            "endpoint": "dyn://dynamo.backend.generate",
            "instance_id": worker.instance_id,
        }
    ]
    assert await get(harness, "/live") == (200, {"status": "live", "message": "Service is live"})
    await harness.remove(worker)
    assert (await get(harness, "/health"))[0] == 503


async def test_metrics_use_dynamo_names(harness: Harness, client: openai.AsyncOpenAI) -> None:
    await harness.add(FakeWorker(tiny_card(kv_block_size=16), cached_tokens=2))
    await client.completions.create(model=MODEL, prompt="a b c d", max_tokens=3)
    stream = await client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "x"}], max_tokens=4, stream=True
    )
    async for _ in stream:
        pass
    status, text = await get(harness, "/metrics")
    assert status == 200
    for line in (
        'dynamo_frontend_requests_total{endpoint="completions",error_type="",model="tiny",'
        'request_type="unary",status="success"} 1.0',
        'dynamo_frontend_requests_total{endpoint="chat_completions",error_type="",model="tiny",'
        'request_type="stream",status="success"} 1.0',
        'dynamo_frontend_inflight_requests{model="tiny"} 0.0',
        'dynamo_frontend_queued_requests{model="tiny"} 0.0',
        'dynamo_frontend_output_sequence_tokens_sum{model="tiny"} 7.0',
        'dynamo_frontend_output_tokens_total{model="tiny"} 7.0',
        'dynamo_frontend_model_context_length{model="tiny"} 256.0',
        'dynamo_frontend_model_kv_cache_block_size{model="tiny"} 16.0',
        'dynamo_frontend_model_total_kv_blocks{model="tiny"} 100.0',
        'dynamo_frontend_model_workers{model="tiny"} 1.0',
        'dynamo_frontend_cached_tokens_sum{model="tiny"} 4.0',
        "dynamo_frontend_disconnected_clients 0.0",
    ):
        assert line in text, line
    for name in (
        "time_to_first_token_seconds_count",
        "inter_token_latency_seconds_count",
        "request_duration_seconds_count",
        "input_sequence_tokens_count",
        "kv_hit_rate",
    ):
        assert f'dynamo_frontend_{name}{{model="tiny"}}' in text, name


async def test_metrics_prefix_is_configurable(runtime: FakeRuntime) -> None:
    frontend = await start_frontend(runtime, metrics_prefix="custom")
    try:
        status, text = await get(Harness(runtime, frontend), "/metrics")
        assert status == 200 and "custom_disconnected_clients" in text
    finally:
        await frontend.stop()


async def test_openapi_document_describes_the_request_bodies(harness: Harness) -> None:
    status, doc = await get(harness, "/openapi.json")
    assert status == 200
    assert doc["openapi"].startswith("3.")
    body = doc["paths"]["/v1/chat/completions"]["post"]["requestBody"]
    assert body["content"]["application/json"]["schema"]["$ref"].endswith("ChatCompletionRequest")
    chat = doc["components"]["schemas"]["ChatCompletionRequest"]
    assert chat["properties"]["temperature"]["anyOf"][0]["maximum"] == 2.0
    assert {"model", "messages"} <= set(chat["required"])
    responses = doc["paths"]["/v1/completions"]["post"]["responses"]
    assert sorted(responses) == ["200", "400", "404", "408", "413", "500", "501", "503"]


async def test_busy_threshold_endpoint_and_overload_status(
    harness: Harness, client: openai.AsyncOpenAI
) -> None:
    worker = await harness.add(FakeWorker(tiny_card(total_kv_blocks=100)))
    status, body = await get(harness, "/busy_threshold")
    assert status == 200
    assert body == {
        "thresholds": [
            {
                "model": MODEL,
                "active_decode_blocks_threshold": None,
                "active_prefill_tokens_threshold": None,
            }
        ]
    }
    status, body = await post_json(
        harness, "/busy_threshold", {"model": MODEL, "active_decode_blocks_threshold": 0.5}
    )
    assert status == 200 and body["active_decode_blocks_threshold"] == 0.5
    assert (await post_json(harness, "/busy_threshold", {"model": MODEL}))[1] == body
    status, err = await post_json(
        harness, "/busy_threshold", {"model": MODEL, "active_decode_blocks_threshold": 3}
    )
    assert status == 400 and err["error"]["param"] == "active_decode_blocks_threshold"
    assert (await post_json(harness, "/busy_threshold", {"model": "nope"}))[0] == 404

    load = LoadMetrics(worker.instance_id, kv_active_blocks=90, kv_total_blocks=100)
    harness.runtime.publish("dynamo.backend.kv_metrics", load.to_wire())
    routed = harness.frontend.models.routed(MODEL)
    assert routed is not None
    await wait_until(
        lambda: bool(getattr(routed.policy, "load_metrics", dict)()), what="load to arrive"
    )
    with pytest.raises(openai.InternalServerError) as info:
        await client.completions.create(model=MODEL, prompt="x", max_tokens=2)
    assert info.value.status_code == 503
    assert info.value.response.json()["error"]["code"] == "overloaded"


async def test_overload_status_can_be_529(runtime: FakeRuntime) -> None:
    frontend = await start_frontend(runtime, overload_status_code=529)
    harness = Harness(runtime, frontend)
    try:
        worker = await harness.add(FakeWorker(tiny_card(total_kv_blocks=100)))
        await post_json(
            harness, "/busy_threshold", {"model": MODEL, "active_prefill_tokens_threshold": 10}
        )
        load = LoadMetrics(worker.instance_id, active_prefill_tokens=50, kv_total_blocks=100)
        runtime.publish("dynamo.backend.kv_metrics", load.to_wire())
        routed = frontend.models.routed(MODEL)
        assert routed is not None
        await wait_until(lambda: bool(getattr(routed.policy, "load_metrics", dict)()), what="load")
        status, body = await post_json(
            harness, "/v1/completions", {"model": MODEL, "prompt": "x", "max_tokens": 2}
        )
        assert status == 529 and body["error"]["type"] == "overloaded_error"
    finally:
        await frontend.stop()


async def test_embeddings(harness: Harness, client: openai.AsyncOpenAI) -> None:
    await harness.add(FakeWorker(tiny_card("embedder", model_types=["embedding"])))
    resp = await client.embeddings.create(model="embedder", input=["a b", "c"])
    assert [d.index for d in resp.data] == [0, 1]
    assert resp.data[0].embedding[2:] == [0.5, -1.0]
    assert resp.usage.prompt_tokens == resp.data[0].embedding[0] + resp.data[1].embedding[0]
    status, body = await post_json(
        harness,
        "/v1/embeddings",
        {"model": "embedder", "input": [5, 6, 7], "encoding_format": "base64"},
    )
    assert status == 200
    raw = base64.b64decode(body["data"][0]["embedding"])
    assert struct.unpack("<4f", raw)[0] == 3.0
    # a chat model does not serve embeddings, and an embedding model does not chat
    await harness.add(FakeWorker(tiny_card()))
    status, body = await post_json(harness, "/v1/embeddings", {"model": MODEL, "input": "x"})
    assert status == 400 and "does not serve embeddings" in body["error"]["message"]
    assert body["error"]["param"] == "model"
    status, body = await post_json(harness, "/v1/completions", {"model": "embedder", "prompt": "x"})
    assert status == 400 and "does not serve completions" in body["error"]["message"]
    status, body = await post_json(harness, "/v1/embeddings", {"model": "embedder", "input": []})
    assert status == 400 and body["error"]["param"] == "input"


async def test_kv_events_reach_the_policy_of_the_senders_model(harness: Harness) -> None:
    from dynamo.protocols.kv_events import KvCacheEvent, KvCleared, RouterEvent

    worker = await harness.add(FakeWorker(tiny_card()))
    seen: list[RouterEvent] = []
    routed = harness.frontend.models.routed(MODEL)
    assert routed is not None
    routed.policy.apply_kv_event = seen.append  # type: ignore[method-assign]
    event = RouterEvent(worker.instance_id, KvCacheEvent(1, KvCleared()))
    harness.runtime.publish("dynamo.backend.kv-events", event.to_wire())
    harness.runtime.publish("dynamo.backend.kv-events", RouterEvent(99, event.event).to_wire())
    await wait_until(lambda: bool(seen), what="the KV event")
    assert seen == [event]
