"""`python -m dynamo.router` in front of `python -m dynamo.mocker`, as real processes.

File discovery, the TCP request plane and ZMQ KV events; the test process calls the router's
endpoints through its own `DistributedRuntime`.
"""

from __future__ import annotations

import asyncio
import json
import random
import re
import signal
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from dynamo.runtime.addressing import EndpointAddress
from dynamo.runtime.config import RuntimeConfig, resolve
from dynamo.runtime.distributed import DistributedRuntime
from dynamo.runtime.errors import InvalidRequestError, UnavailableError
from dynamo.runtime.request_scope import request_scope
from dynamo.testing.processes import Procs, mocker_args, read_until

pytestmark = pytest.mark.slow

MOCKER = mocker_args(num_workers=2)
ROUTER_READY = re.compile(rb"router serving (dyn://\S+)")
BLOCK = 16


class RouterCaller:
    """Calls the router's endpoints (one response list per call)."""

    def __init__(self, runtime: DistributedRuntime, component: str = "router") -> None:
        self.runtime = runtime
        self.component = component
        self._clients: dict[str, Any] = {}

    async def stream(self, endpoint: str, body: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        client = self._clients.get(endpoint)
        if client is None:
            address = EndpointAddress(self.runtime.config.namespace, self.component, endpoint)
            client = self._clients[endpoint] = self.runtime.client(address)
            await client.wait_for_instances(30)
        (instance,) = client.instance_ids()
        stream: AsyncIterator[dict[str, Any]]
        stream = client.generate(body, instance_id=instance, request_id=uuid.uuid4().hex)
        return stream

    async def call(self, endpoint: str, body: dict[str, Any]) -> list[dict[str, Any]]:
        return [out async for out in await self.stream(endpoint, body)]

    async def one(self, endpoint: str, body: dict[str, Any]) -> dict[str, Any]:
        (only,) = await self.call(endpoint, body)
        return only


async def eventually(check: Callable[[], Any], timeout_s: float = 30) -> Any:
    """Await `check()` until it returns something truthy (events travel asynchronously)."""
    async with asyncio.timeout(timeout_s):
        while True:
            value = await check()
            if value:
                return value
            await asyncio.sleep(0.02)


@pytest.fixture
async def caller() -> AsyncIterator[RouterCaller]:
    runtime = await DistributedRuntime.create(resolve(RuntimeConfig))
    yield RouterCaller(runtime)
    await runtime.shutdown(0)


async def start_router(procs: Procs, caller: RouterCaller, *args: str, workers: int = 2) -> None:
    if workers:
        mocker = await procs.spawn(*MOCKER)
        procs.drain(mocker)
    router = await procs.spawn("dynamo.router", *args)
    served = await read_until(router, ROUTER_READY)
    procs.drain(router)
    namespace = caller.runtime.config.namespace
    assert served.decode() == f"dyn://{namespace}.{caller.component}.generate"

    async def all_workers() -> bool:
        listing = await caller.one("workers", {})
        return len(listing["workers"]) == workers

    await eventually(all_workers)


def prompt(seed: int, n: int) -> list[int]:
    rng = random.Random(seed)
    return [rng.randrange(3, 2000) for _ in range(n)]


async def test_generate_then_best_worker_follows_the_cached_prefix(
    procs: Procs, caller: RouterCaller
) -> None:
    await start_router(procs, caller)
    listing = await caller.one("workers", {})
    namespace = caller.runtime.config.namespace
    assert listing["router_mode"] == "kv"
    assert listing["endpoint"] == f"dyn://{namespace}.backend.generate"
    assert {w["kv_block_size"] for w in listing["workers"]} == {BLOCK}

    prefix = prompt(1, 20 * BLOCK)
    outputs = await caller.call(
        "generate",
        {
            "request_id": "g1",
            "model": "tinymodel",
            "token_ids": [*prefix, 5, 6, 7, 8, 9],
            "stop_conditions": {"max_tokens": 3},
            "sampling_options": {},
        },
    )
    assert sum(len(o.get("token_ids", [])) for o in outputs) == 3
    assert outputs[-1]["finish_reason"] == "length"
    assert outputs[-1]["usage"]["prompt_tokens"] == 20 * BLOCK + 5

    query = [*prefix, *range(10, 20)]  # 330 tokens: the 20 prefix blocks + a partial one

    async def cached() -> dict[str, Any] | None:
        dry = await caller.one("best_worker", {"token_ids": query})  # no request_id: not booked
        return dry if dry["overlap_blocks"] == 20 else None

    holder = (await eventually(cached))["instance_id"]

    first = await caller.one("best_worker", {"token_ids": query, "request_id": "b1"})
    second = await caller.one(
        "best_worker", {"token_ids": [*prefix, *range(30, 40)], "request_id": "b2"}
    )
    for decision in (first, second):
        assert decision == {
            "instance_id": holder,
            "dp_rank": 0,
            "overlap_blocks": 20,
            "required_blocks": 21,
        }

    async def holder_load() -> dict[str, Any]:
        loads = (await caller.one("potential_loads", {"token_ids": query}))["loads"]
        (load,) = [x for x in loads if x["instance_id"] == holder]
        return load

    # b1 and b2 each wait to prefill their 10 uncached tokens; the query would add 10 more.
    assert (await holder_load())["potential_prefill_tokens"] == 30
    assert (await holder_load())["potential_decode_blocks"] == 20  # the shared prefix, once
    mark = {"request_id": "b1", "event": "first_token"}
    assert await caller.one("mark", mark) == mark
    assert (await holder_load())["potential_prefill_tokens"] == 20
    for rid in ("b1", "b2"):
        await caller.one("mark", {"request_id": rid, "event": "finish"})
    assert (await holder_load())["potential_prefill_tokens"] == 10

    with pytest.raises(InvalidRequestError, match=r"token ids must be integers in \[0, 2\*\*32\)"):
        await caller.call("best_worker", {"token_ids": [1, -5] * 16})

    # SIGTERM mid-stream: the router stops taking requests but finishes this one, then exits 0.
    stream = await caller.stream(
        "generate",
        {
            "request_id": "long",
            "model": "tinymodel",
            "token_ids": prompt(2, 40),
            "stop_conditions": {"max_tokens": 1000, "ignore_eos": True},
            "sampling_options": {},
        },
    )
    first = await anext(stream)
    router = procs.children[-1]
    router.send_signal(signal.SIGTERM)
    rest = [out async for out in stream]
    assert sum(len(o.get("token_ids", [])) for o in [first, *rest]) == 1000
    assert rest[-1]["finish_reason"] == "length"
    assert await asyncio.wait_for(router.wait(), 30) == 0


async def test_without_workers_and_with_bad_requests(procs: Procs, caller: RouterCaller) -> None:
    namespace = caller.runtime.config.namespace
    caller.component = "prefill_router"
    await start_router(
        procs,
        caller,
        *("--router-component", "prefill_router", "--endpoint", f"{namespace}.prefill.generate"),
        workers=0,
    )
    listing = await caller.one("workers", {})
    assert listing == {
        "router_mode": "kv",
        "endpoint": f"dyn://{namespace}.prefill.generate",
        "workers": [],
    }
    with pytest.raises(UnavailableError, match="no workers are available"):
        await caller.call("best_worker", {"token_ids": [1] * 32})
    with pytest.raises(UnavailableError, match="no workers are available"):
        await caller.call("generate", {"token_ids": [1] * 32, "model": "m"})
    with pytest.raises(InvalidRequestError, match="token_ids must be a list of token ids"):
        await caller.call("best_worker", {"token_ids": "hello"})
    with pytest.raises(InvalidRequestError, match="overlap_score_weight must be >= 0, got -1"):
        await caller.call("best_worker", {"token_ids": [1] * 32, "overlap_score_weight": -1})
    with pytest.raises(
        InvalidRequestError, match=r"event must be one of \['first_token', 'finish'\], got 'x'"
    ):
        await caller.call("mark", {"request_id": "r", "event": "x"})
    with pytest.raises(InvalidRequestError, match="request_id must be a non-empty string"):
        await caller.call("mark", {"event": "finish"})


async def test_the_callers_request_id_reaches_router_and_worker_logs(
    procs: Procs, caller: RouterCaller
) -> None:
    log_env = {
        "DYN_LOGGING_JSONL": "1",
        "DYN_LOG": "info,dynamo.router.service=debug,dynamo.worker.core=debug",
    }
    mocker = await procs.spawn(*MOCKER, env=log_env)
    mocker_lines = procs.collect(mocker)
    router = await procs.spawn("dynamo.router", env=log_env)
    await read_until(router, ROUTER_READY)
    router_lines = procs.collect(router)

    async def all_workers() -> bool:
        return len((await caller.one("workers", {}))["workers"]) == 2

    await eventually(all_workers)
    with request_scope("from-the-frontend-7"):  # what the frontend's request plane carries
        outputs = await caller.call(
            "generate",
            {
                "model": "tinymodel",
                "token_ids": list(range(10, 60)),
                "stop_conditions": {"max_tokens": 2},
                "sampling_options": {},
            },
        )
    assert outputs[-1]["finish_reason"] == "length"

    def logged(lines: list[bytes], target: str) -> list[dict[str, Any]]:
        records = [json.loads(line) for line in lines if line.strip()]
        return [r for r in records if r["target"] == target and r["request_id"]]

    async def worker_logged() -> list[dict[str, Any]]:
        return logged(mocker_lines, "dynamo.worker.core")

    (served,) = await eventually(worker_logged)
    await procs.stop_all()
    (routed,) = logged(router_lines, "dynamo.router.service")
    assert (routed["component"], routed["request_id"]) == ("router", "from-the-frontend-7")
    assert str(routed["message"]).startswith("request ")
    assert (served["component"], served["request_id"]) == ("mocker", "from-the-frontend-7")
