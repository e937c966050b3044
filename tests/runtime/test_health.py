"""Health checks: what `/health` and the watchdog see from registered checks (a failure is
kept, a hung or broken check counts as a failure), and the status server's 503 body."""

from __future__ import annotations

import asyncio

import aiohttp

from dynamo.runtime.health import HealthChecks, Unhealthy
from dynamo.runtime.system_server import SystemServer


async def test_first_failure_is_kept() -> None:
    answers: list[str | None] = [None, "engine core died", None]

    async def flaky() -> str | None:
        return answers.pop(0)

    checks = HealthChecks()
    checks.add("engine", flaky)
    assert await checks.check() is None
    assert not checks.failed.is_set()
    assert await checks.check() == Unhealthy("engine", "engine core died")
    assert checks.failed.is_set()
    # The engine does not come back: the failure stands though the check now says fine.
    assert await checks.check() == Unhealthy("engine", "engine core died")


async def test_a_hung_or_broken_check_is_a_failure() -> None:
    async def hangs() -> str | None:
        await asyncio.Event().wait()
        return None

    async def raises() -> str | None:
        raise OSError("pipe closed")

    hung = HealthChecks(timeout_s=0.05)
    hung.add("slow engine", hangs)
    assert await hung.check() == Unhealthy("slow engine", "health check did not answer in 0.05 s")
    broken = HealthChecks()
    broken.add("engine", raises)
    assert await broken.check() == Unhealthy("engine", "health check failed: OSError: pipe closed")


async def test_watch_returns_the_failure() -> None:
    calls = 0

    async def dies_on_third() -> str | None:
        nonlocal calls
        calls += 1
        return "dead" if calls == 3 else None

    checks = HealthChecks()
    checks.add("engine", dies_on_third)
    failure = await asyncio.wait_for(checks.watch(0.01), 5)
    assert failure == Unhealthy("engine", "dead") and calls == 3


async def test_status_server_health_is_503_with_the_reason() -> None:
    checks = HealthChecks()
    reason: list[str | None] = [None]

    async def engine() -> str | None:
        return reason[0]

    checks.add("engine of dyn://ns.backend.generate", engine)
    server = SystemServer(0, lambda: ["dyn://ns.backend.generate"], health=checks.check)
    port = await server.start()
    url = f"http://127.0.0.1:{port}/health"
    try:
        async with aiohttp.ClientSession() as session:
            async with session.get(url) as resp:
                assert resp.status == 200
                assert (await resp.json())["status"] == "ready"
            reason[0] = "vLLM engine is dead: EngineDeadError: boom"
            async with session.get(url) as resp:
                assert resp.status == 503
                body = await resp.json()
    finally:
        await server.stop()
    assert body.pop("uptime_s") >= 0
    assert body == {
        "status": "unhealthy",
        "check": "engine of dyn://ns.backend.generate",
        "reason": "vLLM engine is dead: EngineDeadError: boom",
        "endpoints": ["dyn://ns.backend.generate"],
    }
