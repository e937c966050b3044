"""A live frontend on a real port over a `FakeRuntime`, for tests (a test double harness)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from dynamo.frontend.config import FrontendConfig
from dynamo.frontend.server import Frontend
from dynamo.mocker.tinymodel import tiny_model_path
from dynamo.protocols.model_card import ModelCard
from dynamo.router.config import RouterConfig
from dynamo.router.policies import make_policy
from dynamo.testing.fake_worker import FakeRuntime, FakeWorker

MODEL = "tiny"


def tiny_card(name: str = MODEL, **kw: object) -> ModelCard:
    values: dict[str, object] = {
        "name": name,
        "source_path": tiny_model_path(),
        "context_length": 256,
        "total_kv_blocks": 100,
    }
    values.update(kw)
    return ModelCard.model_validate(values)


async def wait_until(predicate: Callable[[], bool], *, what: str) -> None:
    """Yield to the loop until `predicate` holds (bounded; fails with `what`)."""
    for _ in range(2000):
        if predicate():
            return
        await asyncio.sleep(0.005)
    raise AssertionError(f"timed out waiting for {what}")


class Harness:
    def __init__(self, runtime: FakeRuntime, frontend: Frontend) -> None:
        self.runtime = runtime
        self.frontend = frontend
        self.url = frontend.url

    async def add(self, worker: FakeWorker) -> FakeWorker:
        self.runtime.add_worker(worker)
        name = worker.card.name
        registry = self.frontend.models.registry

        def registered() -> bool:
            entry = registry.get(name)
            return entry is not None and worker.instance_id in entry.workers

        def ready() -> bool:
            return worker.instance_id in self.frontend.models.ready_workers_of(name)

        # A worker that is not alive registers its card but never becomes ready.
        await wait_until(ready if worker.alive else registered, what=f"worker of {name}")
        return worker

    async def remove(self, worker: FakeWorker) -> None:
        self.runtime.remove_worker(worker)
        await wait_until(
            lambda: (
                worker.instance_id not in self.frontend.models.ready_workers_of(worker.card.name)
            ),
            what="worker removal",
        )

    def metric(self, name: str, **labels: str) -> float:
        value = self.frontend.metrics.registry.get_sample_value(name, labels)
        return 0.0 if value is None else value


async def start_frontend(
    runtime: FakeRuntime, router: RouterConfig | None = None, **config: object
) -> Frontend:
    cfg = FrontendConfig(http_host="127.0.0.1", http_port=0, **config)  # type: ignore[arg-type]
    router = router or RouterConfig()
    frontend = Frontend(runtime, cfg, lambda card: make_policy(router), namespace="dynamo")
    await frontend.start()
    return frontend
