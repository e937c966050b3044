"""Helpers for runner tests: fake graphs, bounded waits, leak checks."""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Callable
from pathlib import Path

import psutil

FAKE_SERVICE = Path(__file__).with_name("_fake_service.py")
WAIT_S = 20.0


def service(
    name: str, mode: str, *, replicas: int = 1, kind: str = "worker", shell: bool = False
) -> str:
    if shell:
        command = f'["/bin/sh", "-c"]\n          args: ["python3 {FAKE_SERVICE} {mode} {name}"]'
    else:
        command = f'["python3", "{FAKE_SERVICE}", "{mode}", "{name}"]'
    return (
        f"    {name}:\n      componentType: {kind}\n      replicas: {replicas}\n"
        f"      extraPodSpec:\n        mainContainer:\n          command: {command}\n"
    )


def write_graph(path: Path, *services: str, name: str = "fake") -> Path:
    path.write_text(
        "apiVersion: nvidia.com/v1alpha1\nkind: DynamoGraphDeployment\n"
        f"metadata:\n  name: {name}\nspec:\n  services:\n" + "".join(services)
    )
    return path


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def wait_for(predicate: Callable[[], bool], timeout_s: float = WAIT_S) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


async def async_wait_for(predicate: Callable[[], bool], timeout_s: float = WAIT_S) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        await asyncio.sleep(0.05)
    return predicate()


def descendants(pid: int) -> list[int]:
    try:
        return [p.pid for p in psutil.Process(pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def kill_leftovers(pids: list[int]) -> list[int]:
    """Kill (and report) any of `pids` still alive, so a failing test leaks nothing."""
    alive = [p for p in pids if not gone(p)]
    for pid in alive:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, 9)
    return alive
