"""`python -m dynamo.planner` as a process: flags and config file, /health and /metrics, and a
safe hold (never an exit) when its graph and its Prometheus cannot be reached."""

from __future__ import annotations

import asyncio
import re
import signal
from pathlib import Path

import aiohttp
import pytest

from dynamo.planner.main import main, parse_configs
from dynamo.testing.processes import Procs, read_until
from dynamo.testing.servers import free_port


def test_parse_configs_mixes_runtime_flags_config_file_and_planner_flags(tmp_path: Path) -> None:
    config = tmp_path / "planner.yaml"
    config.write_text("ttft_ms: 250\nmode: agg\n")
    runtime, planner, level = parse_configs(
        ["--namespace", "ns1", "--config", str(config), "--itl", "20", "--log-level", "debug"]
    )
    assert runtime.namespace == "ns1"
    assert (planner.ttft_ms, planner.itl_ms, planner.mode) == (250.0, 20.0, "agg")
    assert level == "debug"


def test_bad_flags_exit_2_with_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--ttft", "-1"]) == 2
    assert capsys.readouterr().err == "dynamo.planner: error: --ttft must be > 0 (ms)\n"
    assert main(["--environment", "local"]) == 2  # not under `dynamo serve`
    assert "DYN_SERVE_CONTROL is not set" in capsys.readouterr().err


async def _get(url: str) -> tuple[int, str]:
    async with aiohttp.ClientSession() as s, s.get(url) as r:
        return r.status, await r.text()


async def test_holds_without_graph_or_prometheus_and_serves_health(
    procs: Procs, tmp_path: Path
) -> None:
    port = free_port()
    proc = await procs.spawn(
        "dynamo.planner",
        "--environment", "local", "--backend", "mocker", "--adjustment-interval", "1",
        "--metric-pulling-prometheus-endpoint", "http://127.0.0.1:9",
        "--metric-reporting-prometheus-port", str(port),
        env={"DYN_SERVE_CONTROL": str(tmp_path / "no-such.sock")},
    )  # fmt: skip
    unreachable = re.compile(
        rb"(no traffic metrics this interval: Prometheus at http://127\.0\.0\.1:9)"
    )
    await read_until(proc, unreachable, timeout_s=60)
    await read_until(proc, re.compile(rb"(hold: cannot read the live replicas: cannot reach)"))
    procs.drain(proc)
    status, body = await _get(f"http://127.0.0.1:{port}/health")
    assert status == 200 and "planner.status" in body
    await asyncio.sleep(1.5)  # another interval: still alive, still holding
    assert proc.returncode is None
    _, metrics = await _get(f"http://127.0.0.1:{port}/metrics")
    errors = re.search(r'dynamo_planner_decisions_total\{outcome="error"\} (\d+)', metrics)
    assert errors is not None and int(float(errors.group(1))) >= 2
    proc.send_signal(signal.SIGTERM)
    assert await asyncio.wait_for(proc.wait(), 30) == 0
