"""A request id followed through real processes: frontend (with its KV router) and a mocker,
both logging JSONL lines."""

from __future__ import annotations

import asyncio
import json

import openai
import pytest

from dynamo.testing.processes import (
    FRONTEND_LISTENING,
    Procs,
    mocker_args,
    read_until,
)

pytestmark = pytest.mark.slow

LOG_ENV = {
    "DYN_LOGGING_JSONL": "1",
    "DYN_LOG": "info,dynamo.frontend.app=debug,dynamo.worker.core=debug",
}


def records(lines: list[bytes]) -> list[dict[str, object]]:
    """Every output line as a JSON object (a line that is not one fails the test)."""
    return [json.loads(line) for line in lines if line.strip()]


async def test_request_id_in_frontend_and_worker_jsonl_logs(procs: Procs) -> None:
    frontend = await procs.spawn(
        "dynamo.frontend",
        "--http-host",
        "127.0.0.1",
        "--http-port",
        "0",
        "--router-mode",
        "kv",
        env=LOG_ENV,
    )
    url = (await read_until(frontend, FRONTEND_LISTENING)).decode()
    frontend_lines = procs.collect(frontend)
    mocker = await procs.spawn(*mocker_args(speedup_ratio=50), env=LOG_ENV)
    mocker_lines = procs.collect(mocker)
    await procs.wait_for_instances(url, 1)

    async with openai.AsyncOpenAI(base_url=url + "/v1", api_key="unused", max_retries=0) as client:
        given = await client.chat.completions.with_raw_response.create(
            model="tinymodel",
            messages=[{"role": "user", "content": "hello"}],
            max_tokens=3,
            extra_headers={"x-request-id": "trace-me-42"},
        )
        assert given.headers["x-request-id"] == "trace-me-42"
        assert given.parse().choices[0].finish_reason == "length"
        stream = await client.completions.with_raw_response.create(
            model="tinymodel", prompt="count", max_tokens=3, stream=True
        )
        generated = stream.headers["x-request-id"]
        async for _ in stream.parse():
            pass
    assert len(generated) == 32 and generated != "trace-me-42"

    # the worker logs when its handler starts; wait for both requests to show up there
    for _ in range(200):
        ids = {r["request_id"] for r in records(mocker_lines)}
        if {"trace-me-42", generated} <= ids:
            break
        await asyncio.sleep(0.05)
    await procs.stop_all()

    front, worker = records(frontend_lines), records(mocker_lines)
    assert {r["component"] for r in front} == {"frontend"}
    assert {r["component"] for r in worker} == {"mocker"}
    for rid in ("trace-me-42", generated):
        assert any(
            r["request_id"] == rid and r["target"] == "dynamo.frontend.app" for r in front
        ), rid
        assert any(
            r["request_id"] == rid and r["target"] == "dynamo.worker.core" for r in worker
        ), rid
    for r in front + worker:
        assert set(r) >= {"time", "level", "component", "target", "message", "request_id"}
