"""The seam between the frontend and the workers: route, stream, migrate, cancel.

`RoutedModel` owns one model's `RoutingPolicy` and the endpoint clients of its workers. Its
`generate` picks a worker, streams `EngineOutput` dicts from it and, when the stream breaks
(`StreamIncompleteError`, which a stream ending without a finish reason also raises, a failed
connection or an engine shutting down), re-issues the request elsewhere with the tokens
generated so far appended, up to `migration_limit` times. The policy hears `on_first_token`
and always `on_finish`. Closing the stream closes the worker's stream, which cancels the work
there.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from typing import Any, Protocol

from dynamo.protocols.engine import EngineOutput, EngineRequest
from dynamo.protocols.model_card import BootstrapAddress
from dynamo.router.base import RouteRequest, RoutingDecision, RoutingPolicy, WorkerInfo
from dynamo.runtime.errors import (
    EngineShutdownError,
    NotFoundError,
    StreamIncompleteError,
    TransportError,
    UnavailableError,
)
from dynamo.runtime.tracing import span

log = logging.getLogger(__name__)

# Failures after which the same request can run on another worker.
MIGRATABLE = (StreamIncompleteError, TransportError, EngineShutdownError)

WORKER_WAIT_S = 2.0  # how long a request waits for a model's first ready worker


class EndpointClient(Protocol):
    """What the frontend needs of the runtime's client of one endpoint."""

    def instance_ids(self) -> list[int]: ...

    def generate(
        self, request: dict[str, Any], *, instance_id: int, request_id: str
    ) -> AsyncIterator[dict[str, Any]]: ...


class RoutedModel:
    """One model: its routing policy, its workers' clients, and request migration."""

    def __init__(
        self,
        name: str,
        policy: RoutingPolicy,
        *,
        migration_limit: int = 0,
        on_migration: Callable[[str], None] | None = None,
    ) -> None:
        self.name = name
        self.policy = policy
        self.migration_limit = migration_limit
        self._on_migration = on_migration
        self._clients: dict[int, EndpointClient] = {}
        self._dp_workers: set[int] = set()  # workers with several data-parallel ranks
        self._bootstrap: dict[int, BootstrapAddress] = {}  # bootstrap-style prefill workers
        self._has_workers = asyncio.Event()

    # --- membership (driven by discovery) ----------------------------------------------
    def add_worker(
        self,
        info: WorkerInfo,
        client: EndpointClient,
        *,
        bootstrap: BootstrapAddress | None = None,
    ) -> None:
        if info.instance_id in self._clients:
            return
        self._clients[info.instance_id] = client
        if bootstrap is not None:
            self._bootstrap[info.instance_id] = bootstrap
        if info.data_parallel_size > 1:
            self._dp_workers.add(info.instance_id)
        self.policy.add_worker(info)
        self._has_workers.set()

    def remove_worker(self, instance_id: int) -> None:
        if self._clients.pop(instance_id, None) is not None:
            self._dp_workers.discard(instance_id)
            self._bootstrap.pop(instance_id, None)
            self.policy.remove_worker(instance_id)
            if not self._clients:
                self._has_workers.clear()

    def has_worker(self, instance_id: int) -> bool:
        return instance_id in self._clients

    def worker_ids(self) -> list[int]:
        return list(self._clients)

    async def wait_for_worker(self, timeout_s: float) -> bool:
        """Whether a worker takes requests within `timeout_s` (at once if one does now)."""
        if self._clients:
            return True
        try:
            async with asyncio.timeout(timeout_s):  # not wait_for: see runtime.tasks
                await self._has_workers.wait()
        except TimeoutError:
            return False
        return True

    def bootstrap_of(self, instance_id: int) -> BootstrapAddress | None:
        """The bootstrap address a (SGLang) prefill worker registered, if any."""
        return self._bootstrap.get(instance_id)

    @property
    def uses_bootstrap(self) -> bool:
        """Whether this pool's workers meet their decode workers at a bootstrap address."""
        return bool(self._bootstrap)

    # --- requests ----------------------------------------------------------------------
    def _select(
        self, request: EngineRequest, backend_instance_id: int | None, exclude: set[int]
    ) -> RoutingDecision:
        if not self._clients:
            raise UnavailableError(f"No worker of model {self.name!r} is ready")
        if backend_instance_id is not None and backend_instance_id not in self._clients:
            raise NotFoundError(
                f"nvext.backend_instance_id {backend_instance_id} is not a worker of model "
                f"{self.name!r}"
            )
        with span("route", model=self.name):
            return self.policy.select(
                RouteRequest(
                    request_id=request["request_id"],
                    token_ids=request["token_ids"],
                    backend_instance_id=backend_instance_id,
                    exclude=frozenset(exclude),
                )
            )

    async def generate(
        self,
        request: EngineRequest,
        *,
        backend_instance_id: int | None = None,
        on_route: Callable[[int, int], None] | None = None,
    ) -> AsyncGenerator[EngineOutput, None]:
        """Stream the outputs of `request`, migrating it when a worker's stream breaks.

        `on_route(instance_id, dp_rank)` hears each worker the request is sent to.
        """
        request_id = request["request_id"]
        migrations_left = self.migration_limit
        track = migrations_left > 0
        generated: list[int] = []
        exclude: set[int] = set()
        current = request
        while True:
            decision = self._select(current, backend_instance_id, exclude)
            instance_id = decision.instance_id
            if on_route is not None:
                on_route(instance_id, decision.dp_rank)
            client = self._clients.get(instance_id)
            try:
                if client is None:  # the policy knew a worker that just left
                    raise TransportError(f"worker {instance_id:x} left")
                sent = current
                if instance_id in self._dp_workers:  # the rank the router chose
                    sent = with_dp_rank(current, decision.dp_rank)
                try:
                    stream = client.generate(
                        sent,  # type: ignore[arg-type]
                        instance_id=instance_id,
                        request_id=request_id,
                    )
                except NotFoundError as exc:  # the client forgot it first: it left
                    raise TransportError(str(exc)) from exc
                finished = False
                try:
                    first = True
                    async for out in stream:
                        if first:
                            self.policy.on_first_token(request_id)
                            first = False
                        if track:
                            ids = out.get("token_ids")
                            if ids:
                                generated.extend(ids)
                        finished = finished or out.get("finish_reason") is not None
                        yield out  # type: ignore[misc]
                finally:
                    aclose = getattr(stream, "aclose", None)
                    if aclose is not None:
                        await aclose()
                if finished:
                    return
                # a clean end without a finish reason is as incomplete as a broken one
                raise StreamIncompleteError(
                    f"worker {instance_id:x} ended the stream without a finish reason"
                )
            except MIGRATABLE as exc:
                if migrations_left <= 0 or backend_instance_id is not None:
                    raise
                migrations_left -= 1
                exclude.add(instance_id)
                kind = "ongoing_request" if generated else "new_request"
                log.warning(
                    "request %s: worker %x failed (%s); migrating (%s, %d left)",
                    request_id,
                    instance_id,
                    exc,
                    kind,
                    migrations_left,
                )
                if self._on_migration is not None:
                    self._on_migration(kind)
                if generated:
                    nxt = continued(request, generated)
                    if nxt is None:  # every requested token already arrived
                        yield {"token_ids": [], "finish_reason": "length"}
                        return
                    current = nxt
            finally:
                self.policy.on_finish(request_id)


def with_dp_rank(request: EngineRequest, dp_rank: int) -> EngineRequest:
    """`request` addressed to one data-parallel rank (`extra_args.dp_rank`, as Dynamo does)."""
    out = dict(request)
    out["extra_args"] = {**request.get("extra_args", {}), "dp_rank": dp_rank}
    return out  # type: ignore[return-value]


def continued(request: EngineRequest, generated: list[int]) -> EngineRequest | None:
    """`request` with `generated` appended to the prompt and the budgets reduced by it."""
    stop: dict[str, Any] = dict(request["stop_conditions"])
    max_tokens = stop.get("max_tokens")
    if max_tokens is not None:
        left = max_tokens - len(generated)
        if left <= 0:
            return None
        stop["max_tokens"] = left
    min_tokens = stop.get("min_tokens")
    if min_tokens:
        stop["min_tokens"] = max(0, min_tokens - len(generated))
    # the KV a prefill worker sent went to the worker that failed: the next one prefills
    out = {k: v for k, v in request.items() if k != "disaggregated_params"}
    out["token_ids"] = [*request["token_ids"], *generated]
    out["stop_conditions"] = stop
    return out  # type: ignore[return-value]
