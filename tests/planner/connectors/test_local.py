"""The `local` connector against a real `dynamo serve` supervisor and its control socket."""

from __future__ import annotations

import io
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from dynamo.deploy.connector import LocalConnector
from dynamo.deploy.logs import LogPrinter
from dynamo.deploy.runner import RestartPolicy, Supervisor
from dynamo.deploy.serve import ServeConfig, plan, prepare_run_dir
from dynamo.planner.connectors import ConnectorSettings, make_connector
from dynamo.planner.connectors.local import GRAPH, LocalScaling, as_services
from dynamo.planner.connectors.services import pick_services
from dynamo.runtime.errors import ConfigError

SLEEPER = (
    '["python3", "-c", "import signal, sys, time; '
    'signal.signal(signal.SIGTERM, lambda *a: sys.exit(0)); time.sleep(600)"]'
)


def _service(name: str, sub: str | None) -> str:
    sub_line = f"      subComponentType: {sub}\n" if sub else ""
    return (
        f"    {name}:\n      componentType: worker\n{sub_line}      replicas: 1\n"
        f"      extraPodSpec:\n        mainContainer:\n          command: {SLEEPER}\n"
    )


@pytest.fixture
async def supervisor(tmp_path: Path) -> AsyncIterator[Supervisor]:
    graph = tmp_path / "graph.yaml"
    graph.write_text(
        "apiVersion: nvidia.com/v1alpha1\nkind: DynamoGraphDeployment\n"
        "metadata:\n  name: planned\nspec:\n  services:\n"
        + _service("MockerPrefillWorker", "prefill")
        + _service("MockerDecodeWorker", "decode")
    )
    p = plan(ServeConfig(file=str(graph), run_dir=str(tmp_path / "run")))
    prepare_run_dir(p)
    sup = Supervisor(
        p.specs,
        graph=p.graph.name,
        run_dir=p.run_dir,
        env=os.environ,
        extra_env=p.extra_env,
        printer=LogPrinter([s.name for s in p.specs], stream=io.StringIO(), color="never"),
        grace_period_s=5.0,
        restart=RestartPolicy(0.05, 0.2, 60.0),
    )
    await sup.start()
    try:
        yield sup
    finally:
        await sup.shutdown()


async def test_scales_the_roles_by_sub_component_type(supervisor: Supervisor) -> None:
    scaling = LocalScaling(
        ConnectorSettings(environment="local", namespace="ns"), LocalConnector(supervisor.run_dir)
    )
    assert await scaling.live_replicas() == {"prefill": 1, "decode": 1}
    await scaling.scale({"decode": 3}, "test")
    assert await scaling.live_replicas() == {"prefill": 1, "decode": 3}
    # someone else scales the graph: the connector reads it fresh (their #4420)
    await LocalConnector(supervisor.run_dir).set_replicas("MockerDecodeWorker", 2)
    assert await scaling.live_replicas() == {"prefill": 1, "decode": 2}
    await scaling.scale({"prefill": 1, "decode": 1}, "test")
    assert supervisor.replica_counts() == {"MockerPrefillWorker": 1, "MockerDecodeWorker": 1}


async def test_made_by_the_factory_from_the_serve_environment(
    supervisor: Supervisor, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DYN_SERVE_CONTROL", str(supervisor.run_dir))
    scaling = make_connector(
        ConnectorSettings(environment="local", namespace="ns", roles=("decode",))
    )
    assert await scaling.live_replicas() == {"decode": 1}
    await scaling.close()


def test_status_entries_pick_services_like_a_dgd() -> None:
    entries: list[dict[str, Any]] = [
        {"name": "Frontend", "component_type": "frontend", "replicas": [{}]},
        {"name": "VllmPrefillWorker", "component_type": "worker", "sub_component_type": "prefill"},
        {"name": "decode", "component_type": "worker"},
    ]
    services = as_services(entries)
    assert services["VllmPrefillWorker"] == {
        "componentType": "worker",
        "subComponentType": "prefill",
    }
    settings = ConnectorSettings(environment="local", namespace="ns")
    assert pick_services(services, settings, graph=GRAPH) == {
        "prefill": "VllmPrefillWorker",
        "decode": "decode",
    }
    with pytest.raises(ConfigError, match="has no service for the prefill role"):
        pick_services(as_services(entries[:1]), settings, graph=GRAPH)
