"""The engine-health hook with a real mocker worker (in this process, on its real lifecycle)
behind a real `python -m dynamo.frontend`: once the engine's step loop dies, the worker's
`/health` answers 503 naming why, and the watchdog deregisters the worker (the frontend drops
the instance and the model) and ends the process with exit code 1."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import openai
import pytest
from prometheus_client import CollectorRegistry

from dynamo.engines.mocker.engine import MockerEngine
from dynamo.mocker.main import build_workers, parse_args, tokenizer_dir
from dynamo.runtime.distributed import DistributedRuntime
from dynamo.runtime.lifecycle import serve_until_signal
from dynamo.testing.processes import Procs, mocker_args
from dynamo.worker.core import Worker
from dynamo.worker.model_card import read_tokenizer_facts

pytestmark = pytest.mark.slow
EXIT_TIMEOUT_S = 30.0


class MockerProcess:
    """`python -m dynamo.mocker`'s body run here: the test can reach its engine."""

    def __init__(self, *flags: str) -> None:
        argv = [*mocker_args("--system-port", "0", *flags)[1:]]
        self.runtime_config, self.config, self.parsers = parse_args(argv)
        self.workers: list[Worker] = []
        self.system_url = ""
        self.started = asyncio.Event()
        self.task: asyncio.Task[int] | None = None

    async def _main(self, runtime: DistributedRuntime) -> None:
        assert self.config.model_path is not None
        facts = read_tokenizer_facts(tokenizer_dir(self.config.model_path))
        self.workers = build_workers(
            runtime, self.runtime_config, self.config, facts, parsers=self.parsers
        )
        await asyncio.gather(*(w.start() for w in self.workers))
        self.system_url = await runtime.start_system_server(0)
        self.started.set()
        try:
            await asyncio.Event().wait()
        finally:
            for worker in self.workers:
                await worker.stop()

    async def start(self) -> None:
        main: Callable[[DistributedRuntime], Awaitable[None]] = self._main
        self.task = asyncio.create_task(
            serve_until_signal(main, self.runtime_config, registry=CollectorRegistry(), signals=())
        )
        await asyncio.wait_for(self.started.wait(), EXIT_TIMEOUT_S)

    @property
    def engine(self) -> MockerEngine:
        engine = self.workers[0].engine
        assert isinstance(engine, MockerEngine)
        return engine

    def break_step_loop(self) -> None:
        """A scheduler bug: the next step raises, which ends the rank's step loop."""
        scheduler = self.engine.schedulers[0]

        def broken_step() -> Any:
            raise RuntimeError("scheduler bug")

        scheduler.step = broken_step  # type: ignore[method-assign]

    async def stop(self) -> None:
        if self.task is not None and not self.task.done():
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)


async def _health(url: str) -> tuple[int, dict[str, Any]]:
    async with aiohttp.ClientSession() as session, session.get(url + "/health") as resp:
        return resp.status, await resp.json()


async def _trip(client: openai.AsyncOpenAI) -> None:
    """A request that makes the broken step loop run (and fail)."""
    with pytest.raises(openai.APIStatusError) as err:
        await client.completions.create(model="tinymodel", prompt="hello", max_tokens=3)
    assert err.value.status_code == 503


async def test_a_dead_engine_makes_health_503_naming_why(procs: Procs) -> None:
    url = await procs.frontend("--router-mode", "round-robin")
    worker = MockerProcess("--engine-health-interval-s", "0")  # /health only, no watchdog
    try:
        await worker.start()
        await procs.wait_for_instances(url, 1)
        status, body = await _health(worker.system_url)
        assert status == 200 and body["status"] == "ready"
        worker.break_step_loop()
        client = openai.AsyncOpenAI(base_url=url + "/v1", api_key="unused", max_retries=0)
        async with client:
            await _trip(client)
        status, body = await _health(worker.system_url)
        assert status == 503
        address = worker.workers[0].address
        instance = worker.workers[0].instance_id
        assert body["status"] == "unhealthy"
        assert body["check"] == f"engine of {address} instance {instance:x}"
        assert body["reason"] == "mocker rank 0 step loop stopped (RuntimeError: scheduler bug)"
        assert body["endpoints"] == [str(address)]
        assert worker.task is not None and not worker.task.done()  # no watchdog: still up
    finally:
        await worker.stop()


async def test_the_watchdog_deregisters_and_exits_1(procs: Procs) -> None:
    url = await procs.frontend("--router-mode", "round-robin")
    worker = MockerProcess("--engine-health-interval-s", "0.1")
    try:
        await worker.start()
        await procs.wait_for_instances(url, 1)
        worker.break_step_loop()
        client = openai.AsyncOpenAI(base_url=url + "/v1", api_key="unused", max_retries=0)
        async with client:
            await _trip(client)
            assert worker.task is not None
            assert await asyncio.wait_for(worker.task, EXIT_TIMEOUT_S) == 1
            await procs.wait_for_instances(url, 0)
            # The model goes with its last card, a discovery event of its own.
            for _ in range(200):
                if not (await client.models.list()).data:
                    break
                await asyncio.sleep(0.05)
            assert (await client.models.list()).data == []
    finally:
        await worker.stop()
