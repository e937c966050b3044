"""Worker lifecycle: graceful drain on SIGTERM, and the /live /health /metrics server."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import signal
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from _runtime_helpers import Spawn
from prometheus_client import CollectorRegistry, Counter

from dynamo.runtime.addressing import EndpointAddress
from dynamo.runtime.config import RuntimeConfig
from dynamo.runtime.distributed import DistributedRuntime
from dynamo.runtime.errors import ConfigError, NotFoundError, TransportError, UnavailableError
from dynamo.runtime.lifecycle import serve_until_signal
from dynamo.runtime.system_server import SystemServer


async def test_sigterm_drains_in_flight_requests(tmp_path: Path, spawn: Spawn) -> None:
    namespace = f"ns{uuid.uuid4().hex[:8]}"
    env = {
        "DYN_NAMESPACE": namespace,
        "DYN_FILE_KV": str(tmp_path),
        "DYN_GRACEFUL_SHUTDOWN_GRACE_PERIOD_SECS": "30",
    }
    child = await spawn("serve-runtime", env=env)
    instance_id = int(child.ready[0], 16)
    caller = await DistributedRuntime.create(
        RuntimeConfig(namespace=namespace, file_kv_root=str(tmp_path))
    )
    client = caller.client(EndpointAddress(namespace, "worker", "generate"))
    await client.wait_for_instances(10)
    removed = asyncio.Event()
    client.on_change(lambda change, _: removed.set() if change == "remove" else None)
    started = [asyncio.Event() for _ in range(8)]

    async def call(k: int) -> list[int]:
        out = []
        request = {"n": 6, "delay_s": 0.1}
        async for item in client.generate(request, instance_id=instance_id, request_id=str(k)):
            out.append(item["i"])
            started[k].set()
        return out

    calls = [asyncio.create_task(call(k)) for k in range(8)]
    for event in started:
        await asyncio.wait_for(event.wait(), 10)
    server_address = client.transport_address(instance_id)
    assert server_address is not None
    child.proc.send_signal(signal.SIGTERM)
    await asyncio.wait_for(removed.wait(), 10)  # the instance is unregistered first
    with pytest.raises((NotFoundError, UnavailableError)):  # and takes no new requests
        name = f"{namespace}/worker/generate/{instance_id:x}"
        async for _ in caller.request_client.stream(server_address, name, {}, request_id="new"):
            pass
    results = await asyncio.gather(*calls)
    assert results == [[0, 1, 2, 3, 4, 5]] * 8  # nothing in flight was lost
    assert await child.read_line() == "EXIT 0"
    assert await asyncio.wait_for(child.proc.wait(), 10) == 0
    await caller.shutdown(0)


async def get(session: aiohttp.ClientSession, url: str) -> tuple[int, Any]:
    async with session.get(url) as resp:
        if resp.content_type == "application/json":
            return resp.status, await resp.json()
        return resp.status, await resp.text()


async def test_system_server_live_health_metrics() -> None:
    endpoints: list[str] = []
    registry = CollectorRegistry()
    Counter("dynamo_component_requests", "requests", registry=registry).inc(3)
    server = SystemServer(0, lambda: list(endpoints), registry=registry, host="127.0.0.1")
    port = await server.start()
    base = f"http://127.0.0.1:{port}"
    async with aiohttp.ClientSession() as session:
        assert await get(session, f"{base}/live") == (200, {"status": "live"})
        status, body = await get(session, f"{base}/health")
        assert (status, body["status"], body["endpoints"]) == (503, "notready", [])
        endpoints.append("dyn://ns.backend.generate")
        status, body = await get(session, f"{base}/health")
        assert (status, body["status"]) == (200, "ready")
        assert body["endpoints"] == ["dyn://ns.backend.generate"]
        status, text = await get(session, f"{base}/metrics")
        assert status == 200 and "dynamo_component_requests_total 3.0" in text
    await server.stop()


async def test_system_server_port_in_use_is_a_clear_error() -> None:
    first = SystemServer(0, list, host="127.0.0.1")
    port = await first.start()
    second = SystemServer(port, list, host="127.0.0.1")
    with pytest.raises(TransportError, match=f"cannot serve status on 127.0.0.1:{port}"):
        await second.start()
    await first.stop()


async def test_serve_until_signal_exit_codes(tmp_path: Path) -> None:
    config = RuntimeConfig(namespace=f"ns{uuid.uuid4().hex[:8]}", discovery_backend="mem")
    served: list[str] = []

    async def ok(runtime: DistributedRuntime) -> None:
        address = EndpointAddress(config.namespace, "worker", "generate")
        await runtime.serve_endpoint(address, _never)
        served.append(str(address))
        os.kill(os.getpid(), signal.SIGUSR1)

    async def broken(runtime: DistributedRuntime) -> None:
        raise RuntimeError("engine failed to load")

    assert await serve_until_signal(ok, config, signals=(signal.SIGUSR1,)) == 0
    assert served == [f"dyn://{config.namespace}.worker.generate"]
    assert await serve_until_signal(broken, config, signals=(signal.SIGUSR1,)) == 1
    bad = dataclasses.replace(config, discovery_backend="zk")
    assert await serve_until_signal(ok, bad, signals=(signal.SIGUSR1,)) == 1


async def _never(request: dict[str, Any], ctx: Any) -> AsyncIterator[dict[str, Any]]:
    await ctx.stopped()
    yield {}


async def test_an_expected_failure_is_one_log_line_without_traceback(
    caplog: pytest.LogCaptureFixture,
) -> None:
    config = RuntimeConfig(namespace=f"ns{uuid.uuid4().hex[:8]}", discovery_backend="mem")

    async def refuses(runtime: DistributedRuntime) -> None:
        raise ConfigError("--model: no such model")

    assert await serve_until_signal(refuses, config, signals=(signal.SIGUSR1,)) == 1
    errors = [r for r in caplog.records if r.levelname == "ERROR"]
    assert [r.getMessage() for r in errors] == ["--model: no such model"]
    assert errors[0].exc_info is None
