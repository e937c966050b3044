# ruff: noqa: E501 (Prometheus exposition lines are kept whole)
"""`dynamo top`: the frame's arithmetic on known scrapes, and the command over a real frontend
and a real mocker process (workers found through discovery)."""

from __future__ import annotations

import asyncio
import math
import os
import sys
from pathlib import Path

import openai
import pytest

from dynamo.deploy.state import RunState, write_state
from dynamo.deploy.top import find_targets, top_main
from dynamo.deploy.top_view import Scrape, model_rows, parse_metrics, quantile, render, worker_rows
from dynamo.runtime.errors import ConfigError
from dynamo.testing.processes import Procs, mocker_args, wait_for_instances

FRONTEND_T0 = """
dynamo_frontend_requests_total{model="m",endpoint="chat_completions",request_type="stream",status="success",error_type=""} 10
dynamo_frontend_output_tokens_total{model="m"} 100
dynamo_frontend_model_workers{model="m"} 2
dynamo_frontend_inflight_requests{model="m"} 3
dynamo_frontend_queued_requests{model="m"} 1
dynamo_frontend_time_to_first_token_seconds_bucket{model="m",le="0.1"} 10
dynamo_frontend_time_to_first_token_seconds_bucket{model="m",le="1.0"} 10
dynamo_frontend_time_to_first_token_seconds_bucket{model="m",le="+Inf"} 10
dynamo_frontend_cached_tokens_sum{model="m"} 0
dynamo_frontend_input_sequence_tokens_sum{model="m"} 1000
"""
FRONTEND_T1 = """
dynamo_frontend_requests_total{model="m",endpoint="chat_completions",request_type="stream",status="success",error_type=""} 28
dynamo_frontend_requests_total{model="m",endpoint="chat_completions",request_type="stream",status="error",error_type="internal"} 2
dynamo_frontend_output_tokens_total{model="m"} 300
dynamo_frontend_model_workers{model="m"} 2
dynamo_frontend_inflight_requests{model="m"} 0
dynamo_frontend_queued_requests{model="m"} 0
dynamo_frontend_time_to_first_token_seconds_bucket{model="m",le="0.1"} 10
dynamo_frontend_time_to_first_token_seconds_bucket{model="m",le="1.0"} 30
dynamo_frontend_time_to_first_token_seconds_bucket{model="m",le="+Inf"} 30
dynamo_frontend_cached_tokens_sum{model="m"} 500
dynamo_frontend_input_sequence_tokens_sum{model="m"} 3000
dynamo_frontend_worker_active_decode_blocks{model="m",worker_id="7",dp_rank="0",worker_type="decode"} 4
"""
WORKER = """
dynamo_component_kvstats_gpu_cache_usage_percent{dynamo_namespace="n",dynamo_component="backend",dynamo_endpoint="generate",worker_id="7",dp_rank="0"} 0.25
dynamo_component_kvstats_active_blocks{dynamo_namespace="n",dynamo_component="backend",dynamo_endpoint="generate",worker_id="7",dp_rank="0"} 25
dynamo_component_kvstats_total_blocks{dynamo_namespace="n",dynamo_component="backend",dynamo_endpoint="generate",worker_id="7",dp_rank="0"} 100
dynamo_component_kvstats_gpu_prefix_cache_hit_rate{dynamo_namespace="n",dynamo_component="backend",dynamo_endpoint="generate",worker_id="7",dp_rank="0"} 0.5
"""


def test_quantile_interpolates_like_prometheus() -> None:
    buckets = {0.1: 10.0, 1.0: 30.0, math.inf: 30.0}
    assert quantile(0.5, buckets) == pytest.approx(0.1 + 0.9 * 5 / 20)
    assert quantile(0.2, buckets) == pytest.approx(0.06)  # rank 6 of the first 10
    assert quantile(0.5, {0.1: 0.0, math.inf: 0.0}) is None
    assert quantile(0.99, {0.1: 1.0, math.inf: 2.0}) == 0.1  # in +Inf: the highest bound


def test_rows_over_an_interval() -> None:
    t0 = Scrape(100.0, [parse_metrics(FRONTEND_T0)], [parse_metrics(WORKER)])
    t1 = Scrape(110.0, [parse_metrics(FRONTEND_T1)], [parse_metrics(WORKER)])
    (row,) = model_rows(t0, t1)
    assert (row.model, row.workers, row.inflight, row.queued) == ("m", 2, 0, 0)
    assert row.requests_per_s == pytest.approx(2.0)  # 20 requests in 10 s
    assert row.errors_per_s == pytest.approx(0.2)
    assert row.output_tokens_per_s == pytest.approx(20.0)
    assert row.kv_hit_rate == pytest.approx(0.25)  # 500 cached of 2000 prompt tokens
    assert row.ttft_p50_s == pytest.approx(0.1 + 0.9 * 10 / 20)  # the window's 20, not all 30
    (first,) = model_rows(None, t0)
    assert first.requests_per_s is None and first.ttft_p50_s == pytest.approx(0.05)
    (worker,) = worker_rows(t1)
    assert (worker.component, worker.worker_id, worker.kv_usage) == ("backend", "7", 0.25)
    assert (worker.kv_active_blocks, worker.kv_total_blocks) == (25, 100)
    assert worker.router_decode_blocks == 4 and worker.prefix_hit_rate == 0.5
    frame = render(t0, t1, title="t").splitlines()
    assert frame[0] == "t  (1 frontend(s), 1 worker process(es), 10.0s window)"
    assert frame[3].split() == [
        "m", "2", "2.0", "0.2", "0", "0", "20.0", "550ms", "955ms", "-", "-", "25%"
    ]  # fmt: skip
    assert frame[6].split() == ["7", "backend", "0", "25%", "25/100", "50%", "4", "-"]


def test_explicit_frontends_still_find_workers_in_discovery() -> None:
    env = {"DYN_NAMESPACE": "ns1", "DYN_FILE_KV": "/tmp/kv", "DYN_DISCOVERY_BACKEND": "file"}
    targets = find_targets(graph=None, run_dir=None, frontends=["http://h:1"], workers=[], env=env)
    assert targets.frontends == ("http://h:1",)
    assert targets.discovery is not None and targets.discovery.namespace == "ns1"
    given = find_targets(graph=None, run_dir=None, frontends=[], workers=["http://w:2"], env=env)
    assert given.workers == ("http://w:2",) and given.discovery is None


@pytest.mark.slow
async def test_top_over_a_live_frontend_and_mocker(procs: Procs) -> None:
    url = await procs.frontend("--router-mode", "kv")
    mocker = await procs.spawn(*mocker_args(num_workers=2, speedup_ratio=5))
    procs.drain(mocker)
    instances = await wait_for_instances(url, 2)
    ids = sorted(str(i["instance_id"]) for i in instances)  # type: ignore[index]

    async def traffic(stop: asyncio.Event) -> int:
        sent = 0
        async with openai.AsyncOpenAI(base_url=url + "/v1", api_key="x", max_retries=0) as client:
            while not stop.is_set():
                await client.completions.create(
                    model="tinymodel", prompt=f"request {sent} " + "word " * 30, max_tokens=8
                )
                sent += 1
        return sent

    stop = asyncio.Event()
    load = asyncio.create_task(traffic(stop))
    await asyncio.sleep(0.5)
    top = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "dynamo.cli", "top", "--once", "--interval", "2",
        "--frontend", url,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=dict(os.environ),
    )  # fmt: skip
    try:
        out, err = await asyncio.wait_for(top.communicate(), 60)
    finally:
        stop.set()
        sent = await load
        if top.returncode is None:
            top.kill()
            await top.wait()
    assert top.returncode == 0, err.decode()
    assert sent > 0
    frame = out.decode().splitlines()
    assert frame[0].startswith("dynamo top  (1 frontend(s), 1 worker process(es), ")
    model = next(line.split() for line in frame if line.startswith("tinymodel "))
    assert model[1] == "2"  # workers
    assert float(model[2]) > 0  # requests/s over the window
    assert model[7].endswith("ms")  # a TTFT p50 from the window
    workers = {
        line.split()[0]: line.split() for line in frame if line.split()[:1] in [[i] for i in ids]
    }
    assert sorted(workers) == ids
    for cols in workers.values():
        assert cols[1] == "backend" and cols[3].endswith("%")
        assert int(cols[4].split("/")[1]) > 0  # active/total KV blocks
    assert not [line for line in frame if line.startswith("unreachable")]


def test_a_running_serve_graph_is_found(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DYN_SERVE_RUN_ROOT", str(tmp_path))
    run_dir = tmp_path / "my-graph"
    run_dir.mkdir()
    state = RunState("my-graph", os.getpid(), 0.0, "ns-g", 8123, str(tmp_path / "kv"))
    write_state(run_dir, state)
    for graph in ("my-graph", None):  # by name, and as the only running graph
        targets = find_targets(graph=graph, run_dir=None, frontends=[], workers=[], env={})
        assert targets.title == "dynamo top: graph my-graph"
        assert targets.frontends == ("http://127.0.0.1:8123",)
        assert targets.discovery is not None
        assert (targets.discovery.discovery_backend, targets.discovery.namespace) == (
            "file",
            "ns-g",
        )
        assert targets.discovery.file_kv_root == str(tmp_path / "kv")
    with pytest.raises(ConfigError, match="--interval must be > 0"):
        top_main(graph=None, run_dir=None, frontends=[], workers=[], interval_s=0, once=True)
