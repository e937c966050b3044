"""Fixtures of the connector tests: the Kubernetes emulator with the real operator (the
operator tests' harness, `tests/operator/_operator_harness.py`, shared rather than copied)."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

sys.path.insert(0, str(Path(__file__).parents[2] / "operator"))

from _connector_harness import RecordingKubeApi
from _operator_harness import Cluster, running_operator

from dynamo.operator.config import OperatorConfig
from dynamo.testing.kube_api import fake_kube_api


@pytest.fixture
async def kube() -> AsyncIterator[RecordingKubeApi]:
    async with fake_kube_api(api_type=RecordingKubeApi) as api:
        yield api


@pytest.fixture
async def cluster(kube: RecordingKubeApi) -> AsyncIterator[Cluster]:
    async with aiohttp.ClientSession(base_url=str(kube.url)) as session:
        yield Cluster(kube, session)


@pytest.fixture
async def operator(kube: RecordingKubeApi, cluster: Cluster) -> AsyncIterator[None]:
    """The real operator, cluster-wide, default config (no health port)."""
    async with running_operator(kube, OperatorConfig(health_port=0)):
        yield
