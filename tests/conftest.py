"""Suite-wide fixtures: every test runs with its own discovery root and namespace."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def _isolated_dynamo_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Keep tests from seeing each other's (or a developer's) registrations."""
    monkeypatch.setenv("DYN_FILE_KV", str(tmp_path / "kv"))
    monkeypatch.setenv("DYN_NAMESPACE", f"test-{uuid.uuid4().hex[:8]}")
    yield
