"""Chaos: the frontend is killed (kill -9) under steady streaming load while `dynamo serve`
runs the graph. Clients see closed connections, never a hang or a stream that ends as if
complete; `dynamo serve` restarts the frontend on the same port and requests are served again
within a stated time, by the same workers (they are not restarted)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
from _load import ERROR, HUNG, OK, TRUNCATED, report, steady_load

from dynamo.testing.servers import free_port

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "mocker" / "agg_router.yaml"
CASE_S = 150
RECOVERY_BOUND_S = 30.0  # the stated bound (the restart delay is 1 s, then imports + discovery)


def _children(serve: subprocess.Popen[bytes], module: str) -> list[int]:
    found = []
    for child in psutil.Process(serve.pid).children(recursive=True):
        try:
            cmd = child.cmdline()
        except psutil.NoSuchProcess:
            continue
        if module in cmd and "dynamo.deploy.guard" not in cmd:
            found.append(child.pid)
    return found


async def _until(predicate: object, what: str, timeout_s: float = 90) -> None:
    for _ in range(int(timeout_s / 0.1)):
        if predicate():  # type: ignore[operator]
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"{what} not within {timeout_s} s")


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], int, Path]]:
    """`dynamo serve` of the mocker agg_router example on a free port; all stopped after."""
    port, log = free_port(), tmp_path / "serve.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "dynamo.cli", "serve", "-f", str(EXAMPLE),
             "--http-port", str(port), "--run-dir", str(tmp_path / "run"), "--color", "never"],
            stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
            env={**os.environ, "DYN_SERVE_NAMESPACE": "chaos"},
        )  # fmt: skip
    try:
        yield proc, port, log
    finally:
        pids = [c.pid for c in psutil.Process(proc.pid).children(recursive=True)]
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        for pid in pids:  # a child left behind must not outlive the test
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


async def test_frontend_killed_under_dynamo_serve(
    serve: tuple[subprocess.Popen[bytes], int, Path],
) -> None:
    proc, port, log = serve
    url = f"http://127.0.0.1:{port}"
    async with asyncio.timeout(CASE_S):
        await _until(lambda: len(_children(proc, "dynamo.mocker")) == 2, "two workers")
        await _until(lambda: len(_children(proc, "dynamo.frontend")) == 1, "a frontend")
        workers = sorted(_children(proc, "dynamo.mocker"))
        async with steady_load(url, model="tinymodel", concurrency=6) as load:
            await load.wait_served(0.0, 90)
            await load.wait_streaming(12)
            [frontend] = _children(proc, "dynamo.frontend")
            killed = time.monotonic()
            os.kill(frontend, signal.SIGKILL)
            served_s = await load.wait_served(killed, RECOVERY_BOUND_S)
            await load.wait_streaming(12)
        at_kill = load.counts(killed, killed)
        report(
            "frontend kill -9 under dynamo serve", load,
            in_flight_at_kill=dict(at_kill), served_again_s=f"{served_s:.2f}",
        )  # fmt: skip
        counts = load.counts()
        assert counts[HUNG] == counts[TRUNCATED] == 0, load.details(TRUNCATED)
        assert counts[ERROR] == 0, load.details(ERROR)  # closed connections, not errors
        assert counts[OK] >= 24
        assert sorted(_children(proc, "dynamo.mocker")) == workers  # not restarted
        assert proc.poll() is None, log.read_text()[-4000:]
