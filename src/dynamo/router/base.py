"""The routing-policy interface the frontend and the standalone router use.

A policy sees the live workers (from discovery), their pushed load metrics and, for `kv`,
their KV events; it picks a worker for each request and hears when the request's first
token arrives and when it ends.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from dynamo.protocols.kv_events import LoadMetrics, RouterEvent


@dataclass(frozen=True, slots=True)
class WorkerInfo:
    instance_id: int
    kv_block_size: int
    total_kv_blocks: int | None = None
    data_parallel_size: int = 1


@dataclass(frozen=True, slots=True)
class RouteRequest:
    request_id: str
    token_ids: Sequence[int]
    backend_instance_id: int | None = None  # nvext direct routing
    overlap_score_weight: float | None = None  # per-request override
    router_temperature: float | None = None
    exclude: frozenset[int] = field(default_factory=frozenset)  # e.g. workers that failed


@dataclass(frozen=True, slots=True)
class RoutingDecision:
    instance_id: int
    dp_rank: int = 0
    overlap_blocks: int = 0  # predicted prefix-cache hit, in blocks
    required_blocks: int = 0


class RoutingPolicy(Protocol):
    def add_worker(self, worker: WorkerInfo) -> None: ...

    def remove_worker(self, instance_id: int) -> None: ...

    def workers(self) -> list[int]: ...

    def select(self, request: RouteRequest) -> RoutingDecision:
        """Pick a worker. Raises UnavailableError (none), OverloadedError (all busy),
        NotFoundError (direct target unknown)."""

    def on_first_token(self, request_id: str) -> None: ...

    def on_finish(self, request_id: str) -> None:
        """The request ended (done, error or cancelled): release what it held."""

    def apply_kv_event(self, event: RouterEvent) -> None: ...

    def apply_load(self, metrics: LoadMetrics) -> None: ...
