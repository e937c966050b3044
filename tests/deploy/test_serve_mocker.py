"""End to end: `dynamo serve examples/mocker/agg_router.yaml` with the real frontend and mocker."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from _deploy_runner_helpers import WAIT_S, descendants, gone, kill_leftovers, wait_for

from dynamo.deploy.state import read_state
from dynamo.testing.servers import free_port

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "mocker" / "agg_router.yaml"
DISAGG = REPO / "examples" / "mocker" / "disagg_router.yaml"
START_S = 60.0  # two workers and a frontend importing on 2 shared cores


def _chat(port: int) -> dict | None:
    body = json.dumps(
        {"model": "tinymodel", "messages": [{"role": "user", "content": "Hello"}], "max_tokens": 8}
    ).encode()
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/v1/chat/completions",
        data=body,
        headers={"content-type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.loads(response.read())
    except (urllib.error.URLError, OSError, ValueError):
        return None


def _models(port: int) -> list[str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/models", timeout=5) as response:
            return [m["id"] for m in json.loads(response.read())["data"]]
    except (urllib.error.URLError, OSError, ValueError, KeyError):
        return []


@pytest.fixture
def served(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[tuple[subprocess.Popen[bytes], int, Path, Path]]:
    example = getattr(request, "param", EXAMPLE)
    port = free_port()
    run_dir = tmp_path / "run"
    log = tmp_path / "serve.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "dynamo.cli",
                "serve",
                "-f",
                str(example),
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
            env={**os.environ, "DYN_SERVE_NAMESPACE": "e2e"},
        )
    pids: list[int] = []
    try:
        yield proc, port, run_dir, log
    finally:
        pids = descendants(proc.pid)
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=WAIT_S)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        wait_for(lambda: all(gone(p) for p in pids))
        assert kill_leftovers(pids) == []


def _mocker_pids(proc: subprocess.Popen[bytes]) -> list[int]:
    import psutil

    found = []
    for pid in descendants(proc.pid):
        try:
            cmd = psutil.Process(pid).cmdline()
        except psutil.NoSuchProcess:
            continue
        if "dynamo.mocker" in cmd and "dynamo.deploy.guard" not in cmd:
            found.append(pid)
    return found


def test_agg_router_serves_restarts_and_stops(
    served: tuple[subprocess.Popen[bytes], int, Path, Path],
) -> None:
    proc, port, run_dir, log = served
    assert wait_for(lambda: "tinymodel" in _models(port), START_S), log.read_text()[-4000:]
    reply = _chat(port)
    assert reply is not None, log.read_text()[-4000:]
    assert reply["object"] == "chat.completion"
    assert reply["choices"][0]["message"]["role"] == "assistant"

    assert wait_for(lambda: len(_mocker_pids(proc)) == 2, START_S)
    victim = _mocker_pids(proc)[0]
    os.kill(victim, signal.SIGKILL)

    def restarted() -> bool:
        state = read_state(run_dir)
        workers = next(s for s in state.services if s.name == "MockerWorker")
        return sum(r.restarts for r in workers.replicas) == 1 and all(
            r.state == "running" for r in workers.replicas
        )

    assert wait_for(restarted, START_S), log.read_text()[-4000:]
    assert wait_for(lambda: len(_mocker_pids(proc)) == 2 and victim not in _mocker_pids(proc))
    assert wait_for(lambda: _chat(port) is not None, START_S)

    everything = descendants(proc.pid)
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=WAIT_S) == 0
    assert [p for p in everything if not gone(p)] == []


def _metric(port: int, name: str) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name))


@pytest.mark.parametrize("served", [DISAGG], indirect=True)
def test_disagg_router_example_prefills_on_the_prefill_workers(
    served: tuple[subprocess.Popen[bytes], int, Path, Path],
) -> None:
    proc, port, _, log = served
    assert wait_for(lambda: len(_mocker_pids(proc)) == 4, START_S), log.read_text()[-4000:]

    def all_four_registered() -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as r:
                return len(json.loads(r.read())["instances"]) == 4
        except (urllib.error.URLError, OSError, ValueError, KeyError):
            return False

    assert wait_for(all_four_registered, START_S), log.read_text()[-4000:]
    for _ in range(6):
        assert _chat(port) is not None, log.read_text()[-4000:]
    disaggregated = 'dynamo_frontend_disagg_requests_total{model="tinymodel",path="disaggregated"}'
    assert _metric(port, disaggregated) == 6
    assert _metric(port, "dynamo_frontend_disagg_fallbacks_total") == 0
