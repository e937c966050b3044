"""How Kubernetes discovery retries API calls: transient failures with jittered backoff
(`runtime.retry`) for a bounded time, refusals at once as a `ConfigError` (naming the RBAC
rule when access is denied)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeVar

from dynamo.runtime.discovery.kubernetes.api import KubeStatusError
from dynamo.runtime.errors import ConfigError, TransportError
from dynamo.runtime.retry import retry as retry_transient

T = TypeVar("T")
RBAC_HINT = (
    "the pod's ServiceAccount needs get, list, watch, create, patch and delete on configmaps "
    "and get, list, watch on discovery.k8s.io endpointslices (the operator's Role "
    "<graph>-k8s-service-discovery-role grants them)"
)


async def retry(what: str, op: Callable[[], Awaitable[T]], timeout_s: float) -> T:
    """Run `op`, retrying transient API failures for about `timeout_s`; refusals are fatal."""
    try:
        return await retry_transient(op, transient=_transient, timeout_s=timeout_s)
    except KubeStatusError as exc:
        if exc.status in (401, 403):
            raise ConfigError(f"kubernetes discovery {what}: {exc}; {RBAC_HINT}") from exc
        if not exc.transient:
            raise ConfigError(f"kubernetes discovery {what}: {exc}") from exc
        raise TransportError(f"kubernetes discovery {what}: {exc}") from exc


def _transient(exc: Exception) -> bool:
    return isinstance(exc, KubeStatusError) and exc.transient and exc.status not in (401, 403)
