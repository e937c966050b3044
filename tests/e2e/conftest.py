"""The kind e2e suite is opt-in: every test here is skipped unless DYN_E2E_KIND=1."""

from __future__ import annotations

import os

import pytest


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    if os.environ.get("DYN_E2E_KIND") == "1":
        return
    skip = pytest.mark.skip(reason="real-cluster e2e suite: set DYN_E2E_KIND=1 (see README)")
    for item in items:
        if "tests/e2e/" in str(item.fspath).replace(os.sep, "/"):
            item.add_marker(skip)
