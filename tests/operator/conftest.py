"""Fixtures of the operator tests: a fake API server, a `kubectl`-like client, the operator."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest
from _operator_harness import Cluster, running_operator

from dynamo.operator.config import OperatorConfig
from dynamo.testing.kube_api import FakeKubeApi, fake_kube_api


@pytest.fixture
async def kube() -> AsyncIterator[FakeKubeApi]:
    async with fake_kube_api() as api:
        yield api


@pytest.fixture
async def cluster(kube: FakeKubeApi) -> AsyncIterator[Cluster]:
    async with aiohttp.ClientSession(base_url=str(kube.url)) as session:
        yield Cluster(kube, session)


@pytest.fixture
async def operator(kube: FakeKubeApi, cluster: Cluster) -> AsyncIterator[None]:
    """The real operator, cluster-wide, default config (no health port)."""
    async with running_operator(kube, OperatorConfig(health_port=0)):
        yield
