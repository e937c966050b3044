"""End to end: `dynamo serve examples/mocker/disagg_planner.yaml` — the frontend (kv), one
prefill and one decode mocker and the planner. Under overload the planner adds prefill workers
within two decisions; when the load falls back it returns to 1 + 1, draining the workers it
removes, and no request fails on the way."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import pytest
from openai import AsyncOpenAI

from dynamo.deploy.state import read_state
from dynamo.testing.servers import free_port

REPO = Path(__file__).resolve().parents[2]
GRAPH = REPO / "examples" / "mocker" / "disagg_planner.yaml"
START_S = 90.0  # four processes importing on two shared cores
PROMPT = "hello " * 480  # ~1440 tokens with the tiny model's tokenizer
# decision lines, and the load checks between them (which only add workers)
DECISION = re.compile(r"Planner-0 .* INFO dynamo\.planner: (?:load check: )?(keep|scale|hold) \[")

pytestmark = pytest.mark.slow


@dataclass
class Load:
    ok: int = 0
    failures: list[str] = field(default_factory=list)


def _has_model(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/models", timeout=5) as r:
            return b"tinymodel" in r.read()
    except (urllib.error.URLError, OSError):
        return False


def _replicas(run_dir: Path) -> dict[str, int]:
    try:
        return {s.name: s.desired for s in read_state(run_dir).services}
    except (OSError, ValueError, KeyError):
        return {}


async def _until(predicate: object, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return True
        await asyncio.sleep(0.5)
    return bool(predicate())  # type: ignore[operator]


async def _send(client: AsyncOpenAI, load: Load) -> None:
    try:
        reply = await client.completions.create(model="tinymodel", prompt=PROMPT, max_tokens=20)
        assert reply.usage is not None and reply.usage.completion_tokens == 20
        load.ok += 1
    except Exception as exc:  # every failure is the test's finding
        load.failures.append(repr(exc))


async def _drive(client: AsyncOpenAI, load: Load, rate: float, stop: asyncio.Event) -> None:
    tasks: list[asyncio.Task[None]] = []
    started, sent = time.monotonic(), 0
    while not stop.is_set():
        tasks.append(asyncio.create_task(_send(client, load)))
        sent += 1
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), max(0.0, started + sent / rate - time.monotonic()))
    await asyncio.gather(*tasks)


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[int, Path, Path]]:
    port, run_dir, log = free_port(), tmp_path / "run", tmp_path / "serve.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "dynamo.cli",
                "serve",
                "-f",
                str(GRAPH),
                "--http-port",
                str(port),
                "--run-dir",
                str(run_dir),
                "--color",
                "never",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env={**os.environ, "DYN_SERVE_NAMESPACE": "planner-e2e"},
        )
    try:
        yield port, run_dir, log
    finally:
        children = [p.pid for p in psutil.Process(proc.pid).children(recursive=True)]
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        for pid in children:
            with contextlib.suppress(psutil.NoSuchProcess):
                psutil.Process(pid).kill()


async def test_planner_scales_up_under_overload_and_back_without_failures(
    served: tuple[int, Path, Path],
) -> None:
    port, run_dir, log = served
    assert await _until(lambda: _has_model(port), START_S), log.read_text()[-4000:]
    assert await _until(lambda: "dynamo.planner: planner dyn://" in log.read_text(), START_S)
    client = AsyncOpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="none", max_retries=0)
    load = Load()
    try:
        decisions_before = len(DECISION.findall(log.read_text()))
        stop = asyncio.Event()
        overload = asyncio.create_task(_drive(client, load, 12.0, stop))
        scaled = await _until(lambda: _replicas(run_dir).get("MockerPrefillWorker", 1) > 1, 60)
        assert scaled, log.read_text()[-6000:]
        decisions = DECISION.findall(log.read_text())[decisions_before:]
        assert "scale" in decisions[:2], log.read_text()[-6000:]  # within two intervals
        # the overload goes on for two more decisions: the added workers stay
        seen = len(DECISION.findall(log.read_text()))
        assert await _until(lambda: len(DECISION.findall(log.read_text())) >= seen + 2, 40)
        assert _replicas(run_dir)["MockerPrefillWorker"] > 1, log.read_text()[-6000:]
        stop.set()
        await overload

        # light traffic while the planner scales back: removed workers drain, nothing fails
        stop = asyncio.Event()
        trickle = asyncio.create_task(_drive(client, load, 1.0, stop))
        back = await _until(
            lambda: (
                _replicas(run_dir).get("MockerPrefillWorker") == 1
                and _replicas(run_dir).get("MockerDecodeWorker") == 1
            ),
            120,
        )
        await asyncio.sleep(3.0)  # requests routed around the drained workers
        stop.set()
        await trickle
    finally:
        await client.close()
    text = log.read_text()
    assert back, text[-6000:]
    assert load.failures == [], text[-6000:]
    assert load.ok > 100
    assert "MockerPrefillWorker-1  | " in text  # a worker the planner added ...
    assert re.search(r"MockerPrefillWorker-[12] .*SIGTERM received: draining", text), text[-6000:]
