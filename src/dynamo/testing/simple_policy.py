"""A round-robin `RoutingPolicy` that records its calls (a test double for frontend tests)."""

from __future__ import annotations

from dynamo.protocols.kv_events import LoadMetrics, RouterEvent
from dynamo.router.base import RouteRequest, RoutingDecision, WorkerInfo
from dynamo.runtime.errors import NotFoundError, OverloadedError, UnavailableError


class RecordingRoundRobin:
    """Round robin over live workers; honours `backend_instance_id`, `exclude` and `busy`."""

    def __init__(self) -> None:
        self._workers: dict[int, WorkerInfo] = {}
        self._next = 0
        self.busy: set[int] = set()  # tests mark workers busy to exercise overload
        self.selected: list[tuple[str, int]] = []
        self.first_tokens: list[str] = []
        self.finished: list[str] = []
        self.kv_events: list[RouterEvent] = []
        self.loads: list[LoadMetrics] = []

    def add_worker(self, worker: WorkerInfo) -> None:
        self._workers[worker.instance_id] = worker

    def remove_worker(self, instance_id: int) -> None:
        self._workers.pop(instance_id, None)

    def workers(self) -> list[int]:
        return list(self._workers)

    def select(self, request: RouteRequest) -> RoutingDecision:
        if request.backend_instance_id is not None:
            if request.backend_instance_id not in self._workers:
                raise NotFoundError(f"no worker {request.backend_instance_id}")
            chosen = request.backend_instance_id
        else:
            candidates = [w for w in self._workers if w not in request.exclude]
            if not candidates:
                raise UnavailableError("no worker available")
            free = [w for w in candidates if w not in self.busy]
            if not free:
                raise OverloadedError("all workers are busy")
            chosen = free[self._next % len(free)]
            self._next += 1
        self.selected.append((request.request_id, chosen))
        return RoutingDecision(chosen)

    def on_first_token(self, request_id: str) -> None:
        self.first_tokens.append(request_id)

    def on_finish(self, request_id: str) -> None:
        self.finished.append(request_id)

    def apply_kv_event(self, event: RouterEvent) -> None:
        self.kv_events.append(event)

    def apply_load(self, metrics: LoadMetrics) -> None:
        self.loads.append(metrics)
