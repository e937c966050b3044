"""`RoutedModel.wait_for_worker`: a request that finds a model's card before the request
plane listed its worker waits for it (bounded) instead of failing with a 503."""

from __future__ import annotations

import asyncio
from typing import Any

from dynamo.frontend.engine_client import RoutedModel
from dynamo.router.base import WorkerInfo
from dynamo.router.policies import RoundRobinPolicy


class _Client:
    def instance_ids(self) -> list[int]:
        return [1]

    def generate(self, *args: Any, **kwargs: Any) -> Any:
        raise AssertionError("not called")


def _info(instance_id: int) -> WorkerInfo:
    return WorkerInfo(instance_id=instance_id, kv_block_size=4)


async def test_a_worker_that_joins_during_the_wait_ends_it() -> None:
    routed = RoutedModel("m", RoundRobinPolicy())
    waiting = asyncio.create_task(routed.wait_for_worker(30.0))
    await asyncio.sleep(0.05)
    assert not waiting.done()
    routed.add_worker(_info(1), _Client())  # type: ignore[arg-type]
    assert await asyncio.wait_for(waiting, 5.0) is True


async def test_no_worker_within_the_bound_is_false_and_one_present_is_true_at_once() -> None:
    routed = RoutedModel("m", RoundRobinPolicy())
    assert await routed.wait_for_worker(0.05) is False
    routed.add_worker(_info(1), _Client())  # type: ignore[arg-type]
    assert await routed.wait_for_worker(0.0) is True
    routed.remove_worker(1)  # the last one left: waiting again waits
    assert await routed.wait_for_worker(0.05) is False
