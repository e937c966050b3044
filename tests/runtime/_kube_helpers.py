"""Helpers shared by the Kubernetes discovery tests: a kubeconfig for the fake API server,
waiting on watch events and state, and reading a ConfigMap back."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import kmock

from dynamo.runtime.discovery.base import WatchEvent
from dynamo.testing.kube_api import FakeKubeApi

NS = "team-a"
CONFIGMAPS = kmock.resource("", "v1", "configmaps")


def kubeconfig_dict(url: str, namespace: str = NS) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "fake", "cluster": {"server": url.rstrip("/")}}],
        "users": [{"name": "tester", "user": {"token": "t"}}],
        "contexts": [
            {
                "name": "fake",
                "context": {"cluster": "fake", "user": "tester", "namespace": namespace},
            }
        ],
        "current-context": "fake",
    }


async def next_event(it: AsyncIterator[WatchEvent], timeout_s: float = 20.0) -> WatchEvent:
    return await asyncio.wait_for(it.__anext__(), timeout_s)


async def next_events(
    it: AsyncIterator[WatchEvent], n: int, timeout_s: float = 20.0
) -> list[WatchEvent]:
    """The next `n` events, sorted by key (one change of a view may send them in any order)."""
    events = [await next_event(it, timeout_s) for _ in range(n)]
    return sorted(events, key=lambda e: (e.key, e.kind))


async def wait_until(predicate: Callable[[], Awaitable[bool]], timeout_s: float = 20.0) -> None:
    async with asyncio.timeout(timeout_s):
        while not await predicate():  # noqa: ASYNC110 (the state lives in another process)
            await asyncio.sleep(0.05)


def configmap(kube: FakeKubeApi, name: str) -> dict[str, Any] | None:
    for resource, namespace, obj_name, body in kube.live_objects():
        if resource == CONFIGMAPS and namespace == NS and obj_name == name:
            return body
    return None
