"""The Grafana dashboard of the platform chart: well formed, and every metric its queries use
is one a live frontend and live mocker workers (prefill and decode) really expose."""

from __future__ import annotations

import json
import re
import socket
from pathlib import Path
from typing import Any

import aiohttp
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

from dynamo.testing.processes import Procs, mocker_args, wait_for_instances

DASHBOARDS = Path(__file__).parents[2] / "deploy/helm/dynamo-platform/dashboards"
# Built on branch `planner` (#14); the names the planner panels assume, until it registers them.
PLANNER_METRICS_ASSUMED = {
    "dynamo_planner_prefill_replicas",
    "dynamo_planner_decode_replicas",
    "dynamo_planner_target_prefill_replicas",
    "dynamo_planner_target_decode_replicas",
    "dynamo_planner_predicted_requests_per_second",
    "dynamo_planner_predicted_input_sequence_tokens",
    "dynamo_planner_predicted_output_sequence_tokens",
}
_LABEL_LISTS = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_MATCHERS = re.compile(r"\{[^}]*\}")
_METRIC = re.compile(r"\b(dynamo_[a-z0-9_]+)\b")


def dashboards() -> list[Path]:
    return sorted(DASHBOARDS.glob("*.json"))


def queries(dashboard: dict[str, Any]) -> list[str]:
    found = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    for var in dashboard["templating"]["list"]:
        if var["type"] == "query":
            found.append(var["query"]["query"])
    return found


def metric_names(expr: str) -> set[str]:
    """The metric names of a PromQL expression (label names in `by (...)` and `{...}` are not)."""
    return set(_METRIC.findall(_MATCHERS.sub("", _LABEL_LISTS.sub("", expr))))


def used_metrics() -> set[str]:
    names: set[str] = set()
    for path in dashboards():
        for expr in queries(json.loads(path.read_text())):
            names |= metric_names(expr)
    return names


def test_metric_names_are_told_from_label_names() -> None:
    expr = (
        'sum by (le, dynamo_component) (rate(dynamo_component_x_bucket{model=~"$m",'
        'dynamo_endpoint="g"}[5m])) / on (model) dynamo_frontend_y'
    )
    assert metric_names(expr) == {"dynamo_component_x_bucket", "dynamo_frontend_y"}


@pytest.mark.parametrize("path", dashboards(), ids=lambda p: p.stem)
def test_dashboard_is_well_formed(path: Path) -> None:
    dashboard = json.loads(path.read_text())
    assert dashboard["uid"] and dashboard["title"]
    panels = dashboard["panels"]
    assert len({p["id"] for p in panels}) == len(panels)
    cells: set[tuple[int, int]] = set()
    for panel in panels:
        pos = panel["gridPos"]
        assert pos["x"] + pos["w"] <= 24, panel["title"]
        mine = {(pos["x"] + dx, pos["y"] + dy) for dx in range(pos["w"]) for dy in range(pos["h"])}
        assert not mine & cells, f"{panel['title']} overlaps another panel"
        cells |= mine
        if panel["type"] == "row":
            continue
        assert panel["datasource"]["uid"] == "${datasource}"
        refs = [t["refId"] for t in panel["targets"]]
        assert panel["targets"] and len(set(refs)) == len(refs), panel["title"]
    titles = {p["title"] for p in panels}
    for wanted in ("Time to first token", "Inter-token latency", "KV cache usage per worker",
                   "Requests by path", "Planner: replicas now and decided"):  # fmt: skip
        assert wanted in titles


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


_SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "gauge": ("",)}


async def _exposed(url: str) -> set[str]:
    """Sample names on `url`/metrics; a labelled family with no series yet (a fallback that
    never happened) counts by its `# TYPE` line."""
    async with aiohttp.ClientSession() as s, s.get(url + "/metrics") as r:
        assert r.status == 200
        text = await r.text()
    names = set()
    for family in text_string_to_metric_families(text):
        names |= {sample.name for sample in family.samples}
        names |= {family.name + suffix for suffix in _SUFFIXES.get(family.type, ())}
    return names


@pytest.mark.slow
async def test_every_dashboard_metric_is_exposed_after_traffic(procs: Procs) -> None:
    used = used_metrics()
    assert used & PLANNER_METRICS_ASSUMED == {n for n in used if n.startswith("dynamo_planner_")}
    url = await procs.frontend("--router-mode", "kv")
    workers = []
    for role in ("--is-prefill-worker", "--is-decode-worker"):
        port = _free_port()
        proc = await procs.spawn(
            *mocker_args(role, speedup_ratio=50), env={"DYN_SYSTEM_PORT": str(port)}
        )
        procs.drain(proc)
        workers.append(f"http://127.0.0.1:{port}")
    await wait_for_instances(url, 2)
    async with openai.AsyncOpenAI(base_url=url + "/v1", api_key="unused", max_retries=0) as client:
        for i in range(3):
            stream = await client.chat.completions.create(
                model="tinymodel",
                messages=[{"role": "user", "content": f"request {i} " + "word " * 80}],
                max_tokens=4,
                stream=True,
                stream_options={"include_usage": True},
            )
            async for _ in stream:
                pass

    exposed = await _exposed(url)
    for worker in workers:
        exposed |= await _exposed(worker)
    missing = sorted(used - PLANNER_METRICS_ASSUMED - exposed)
    assert missing == []
