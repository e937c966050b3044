"""How Kubernetes discovery retries API calls: transient failures with backoff for a bounded
time, refusals at once as a `ConfigError` (naming the RBAC rule when access is denied)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

from dynamo.runtime.discovery.kubernetes.api import KubeStatusError
from dynamo.runtime.errors import ConfigError, TransportError

T = TypeVar("T")
BACKOFF_MIN_S, BACKOFF_MAX_S = 0.05, 5.0
RBAC_HINT = (
    "the pod's ServiceAccount needs get, list, watch, create, patch and delete on configmaps "
    "and get, list, watch on discovery.k8s.io endpointslices (the operator's Role "
    "<graph>-k8s-service-discovery-role grants them)"
)


async def retry(what: str, op: Callable[[], Awaitable[T]], timeout_s: float) -> T:
    """Run `op`, retrying transient API failures for about `timeout_s`; refusals are fatal."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    backoff = BACKOFF_MIN_S
    while True:
        try:
            return await op()
        except KubeStatusError as exc:
            if exc.status in (401, 403):
                raise ConfigError(f"kubernetes discovery {what}: {exc}; {RBAC_HINT}") from exc
            if not exc.transient:
                raise ConfigError(f"kubernetes discovery {what}: {exc}") from exc
            if loop.time() + backoff > deadline:
                raise TransportError(f"kubernetes discovery {what}: {exc}") from exc
        await asyncio.sleep(backoff)
        backoff = min(backoff * 2, BACKOFF_MAX_S)
