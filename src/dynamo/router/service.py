"""The standalone router (`python -m dynamo.router`): KV routing as endpoints of its own.

It routes over the workers of one endpoint (e.g. `dyn://ns.prefill.generate`) and serves,
under `dyn://{ns}.{router component}.`:

- `best_worker`: `{"token_ids", "request_id"?, overrides?}` → one
  `{"instance_id", "dp_rank", "overlap_blocks", "required_blocks"}`. With a `request_id` the
  choice is booked as an active sequence until `mark` reports its `finish`; without, it is a
  dry run.
- `mark`: `{"request_id", "event": "first_token" | "finish"}` → one `{"request_id", "event"}`.
- `generate`: a worker request (`EngineRequest`, optional `routing` overrides) routed and
  forwarded; the worker's outputs stream back unchanged.
- `potential_loads` (kv mode): `{"token_ids"}` → `{"loads": [per worker key figures]}`.
- `workers`: `{}` → `{"router_mode", "endpoint", "workers": [...]}`.

Overrides: `overlap_score_weight`, `router_temperature` (>= 0), `backend_instance_id`,
`exclude` (instance ids).
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import AsyncIterator
from typing import Any

from dynamo.router.base import RouteRequest, RoutingDecision, RoutingPolicy
from dynamo.router.config import RouterConfig
from dynamo.router.feeds import EndpointWorkers
from dynamo.router.kv_policy import KvPolicy
from dynamo.router.policies import make_policy
from dynamo.router.replica_sync import ReplicaSync, replica_sync_topic
from dynamo.runtime.addressing import EndpointAddress
from dynamo.runtime.config import option
from dynamo.runtime.distributed import DistributedRuntime, ServedEndpoint
from dynamo.runtime.errors import (
    EngineShutdownError,
    InvalidRequestError,
    NotFoundError,
    TransportError,
)
from dynamo.runtime.transport.base import RequestContext

log = logging.getLogger(__name__)

BEST_WORKER, MARK, GENERATE = "best_worker", "mark", "generate"
POTENTIAL_LOADS, WORKERS = "potential_loads", "workers"
MARK_EVENTS = ("first_token", "finish")
MAX_ATTEMPTS = 3  # `generate`: workers tried when one fails before its first output
_RETRYABLE = (TransportError, EngineShutdownError, NotFoundError)


@dataclasses.dataclass(frozen=True)
class StandaloneRouterConfig:
    """The standalone router's own flags (beside `RuntimeConfig` and `RouterConfig`)."""

    endpoint: str | None = option(
        None, help="workers to route over, dyn://ns.component.endpoint "
        "(default dyn://{namespace}.backend.generate)",
    )  # fmt: skip
    router_component: str = option(
        "router", help="component the router serves best_worker/mark/generate under"
    )

    def worker_address(self, namespace: str) -> EndpointAddress:
        return EndpointAddress.parse(self.endpoint or f"dyn://{namespace}.backend.generate")

    def router_address(self, namespace: str, endpoint: str) -> EndpointAddress:
        return EndpointAddress.parse(f"dyn://{namespace}.{self.router_component}.{endpoint}")


# --- request parsing (pure) -----------------------------------------------------------------
def _opt_int(body: dict[str, Any], name: str) -> int | None:
    value = body.get(name)
    if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
        raise InvalidRequestError(f"{name} must be an integer, got {value!r}", param=name)
    return value


def _opt_weight(body: dict[str, Any], name: str) -> float | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidRequestError(f"{name} must be a number, got {value!r}", param=name)
    if not (math.isfinite(value) and value >= 0):
        raise InvalidRequestError(f"{name} must be >= 0, got {value!r}", param=name)
    return float(value)


def route_request(body: Any, request_id: str, overrides: Any = None) -> RouteRequest:
    """The `RouteRequest` of a `best_worker`/`generate` body; overrides default to the body."""
    token_ids = _map(body).get("token_ids")
    if not isinstance(token_ids, list):
        raise InvalidRequestError("token_ids must be a list of token ids", param="token_ids")
    hints = body if overrides is None else overrides
    if not isinstance(hints, dict):
        raise InvalidRequestError("routing must be a map", param="routing")
    exclude = hints.get("exclude") or []
    if not isinstance(exclude, list) or not all(
        isinstance(i, int) and not isinstance(i, bool) for i in exclude
    ):
        raise InvalidRequestError("exclude must be a list of instance ids", param="exclude")
    return RouteRequest(
        request_id=request_id,
        token_ids=token_ids,
        backend_instance_id=_opt_int(hints, "backend_instance_id"),
        overlap_score_weight=_opt_weight(hints, "overlap_score_weight"),
        router_temperature=_opt_weight(hints, "router_temperature"),
        exclude=frozenset(exclude),
    )


def decision_to_wire(decision: RoutingDecision) -> dict[str, Any]:
    return {
        "instance_id": decision.instance_id,
        "dp_rank": decision.dp_rank,
        "overlap_blocks": decision.overlap_blocks,
        "required_blocks": decision.required_blocks,
    }


def _optional_id(body: dict[str, Any]) -> str | None:
    rid = body.get("request_id")
    return None if rid is None else _required_id(body)


def _required_id(body: dict[str, Any]) -> str:
    rid = body.get("request_id")
    if not isinstance(rid, str) or not rid:
        raise InvalidRequestError("request_id must be a non-empty string", param="request_id")
    return rid


def _map(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise InvalidRequestError("the request must be a map")
    return body


class RouterService:
    """Routes over one endpoint's workers and serves the router endpoints (module docstring)."""

    def __init__(
        self,
        runtime: DistributedRuntime,
        router_config: RouterConfig,
        config: StandaloneRouterConfig,
        *,
        policy: RoutingPolicy | None = None,
    ) -> None:
        namespace = runtime.config.namespace
        self.runtime = runtime
        self.router_config = router_config
        self.worker_address = config.worker_address(namespace)
        self.addresses = {
            name: config.router_address(namespace, name)
            for name in (BEST_WORKER, MARK, GENERATE, POTENTIAL_LOADS, WORKERS)
        }
        self.policy = policy or make_policy(router_config)
        self.workers = EndpointWorkers(
            runtime,
            self.worker_address,
            self.policy,
            block_size_override=router_config.kv_cache_block_size,
        )
        self.sync: ReplicaSync | None = None
        if router_config.router_replica_sync and isinstance(self.policy, KvPolicy):
            self.sync = ReplicaSync(replica_sync_topic(namespace, config.router_component))
            self.sync.attach(self.policy)
        self._served: list[ServedEndpoint] = []

    async def start(self) -> None:
        """Follow the workers, join replica sync, then serve the router endpoints."""
        if self.sync is not None:
            await self.sync.start(self.runtime)
        await self.workers.start()
        handlers = {
            BEST_WORKER: self.best_worker,
            MARK: self.mark,
            GENERATE: self.generate,
            POTENTIAL_LOADS: self.potential_loads,
            WORKERS: self.list_workers,
        }
        for name, handler in handlers.items():
            self._served.append(await self.runtime.serve_endpoint(self.addresses[name], handler))

    async def close(self) -> None:
        for served in self._served:
            await served.unregister()
        self._served.clear()
        await self.workers.close()
        if self.sync is not None:
            await self.sync.close()

    # --- handlers --------------------------------------------------------------------------
    async def best_worker(
        self, body: dict[str, Any], context: RequestContext
    ) -> AsyncIterator[dict[str, Any]]:
        request_id = _optional_id(_map(body))
        request = route_request(body, request_id or context.request_id)
        if request_id is not None:
            decision = self.policy.select(request)
        elif isinstance(self.policy, KvPolicy):
            decision = self.policy.preview(request)
        else:  # the other policies keep no per-request state
            decision = self.policy.select(request)
        yield decision_to_wire(decision)

    async def mark(
        self, body: dict[str, Any], context: RequestContext
    ) -> AsyncIterator[dict[str, Any]]:
        request_id = _required_id(_map(body))
        event = body.get("event")
        if event == "first_token":
            self.policy.on_first_token(request_id)
        elif event == "finish":
            self.policy.on_finish(request_id)
        else:
            raise InvalidRequestError(
                f"event must be one of {list(MARK_EVENTS)}, got {event!r}", param="event"
            )
        yield {"request_id": request_id, "event": event}

    async def generate(
        self, body: dict[str, Any], context: RequestContext
    ) -> AsyncIterator[dict[str, Any]]:
        request_id = _optional_id(_map(body)) or context.request_id
        request = route_request(body, request_id, body.get("routing") or {})
        forwarded = {k: v for k, v in body.items() if k != "routing"}
        forwarded["request_id"] = request_id
        exclude = set(request.exclude)
        for attempt in range(1, MAX_ATTEMPTS + 1):
            decision = self.policy.select(dataclasses.replace(request, exclude=frozenset(exclude)))
            log.debug(
                "request %s: worker %x rank %d (attempt %d)",
                request_id,
                decision.instance_id,
                decision.dp_rank,
                attempt,
            )
            started = False
            try:
                stream = self.workers.client.generate(
                    self._for_rank(forwarded, decision),
                    instance_id=decision.instance_id,
                    request_id=request_id,
                )
                try:
                    async for output in stream:
                        if not started:
                            started = True
                            self.policy.on_first_token(request_id)
                        yield output
                finally:
                    aclose = getattr(stream, "aclose", None)
                    if aclose is not None:
                        await aclose()
                return
            except _RETRYABLE as exc:
                if started or request.backend_instance_id is not None or attempt == MAX_ATTEMPTS:
                    raise
                log.warning(
                    "request %s: worker %x failed before its first output (%s); trying another",
                    request_id,
                    decision.instance_id,
                    exc,
                )
                exclude.add(decision.instance_id)
            finally:
                self.policy.on_finish(request_id)

    async def potential_loads(
        self, body: dict[str, Any], context: RequestContext
    ) -> AsyncIterator[dict[str, Any]]:
        if not isinstance(self.policy, KvPolicy):
            raise InvalidRequestError(
                f"potential_loads needs --router-mode kv (this router is "
                f"{self.router_config.router_mode})"
            )
        request = route_request(body, context.request_id)
        loads = [
            {
                "instance_id": c.key[0],
                "dp_rank": c.key[1],
                "overlap_blocks": c.overlap_blocks,
                "potential_prefill_tokens": c.prefill_tokens,
                "potential_decode_blocks": c.decode_blocks,
            }
            for c in self.policy.potential_loads(request.token_ids)
        ]
        yield {"loads": loads}

    async def list_workers(
        self, body: dict[str, Any], context: RequestContext
    ) -> AsyncIterator[dict[str, Any]]:
        yield {
            "router_mode": self.router_config.router_mode,
            "endpoint": str(self.worker_address),
            "workers": [dataclasses.asdict(w) for w in self.workers.workers()],
        }

    def _for_rank(self, request: dict[str, Any], decision: RoutingDecision) -> dict[str, Any]:
        """Name the chosen dp rank to a data-parallel worker (`extra_args["dp_rank"]`)."""
        info = self.workers.info(decision.instance_id)
        if info is None or info.data_parallel_size <= 1:
            return request
        extra = dict(request.get("extra_args") or {})
        extra["dp_rank"] = decision.dp_rank
        return {**request, "extra_args": extra}
