"""The local runner with real child processes: restarts, scaling, log prefixes, draining."""

from __future__ import annotations

import io
import os
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from _deploy_runner_helpers import async_wait_for, gone, kill_leftovers, service, write_graph

from dynamo.deploy.connector import LocalConnector
from dynamo.deploy.logs import LogPrinter
from dynamo.deploy.runner import RestartPolicy, Supervisor
from dynamo.deploy.serve import ServeConfig, plan, prepare_run_dir
from dynamo.deploy.state import CONTROL_SOCKET, read_state
from dynamo.runtime.errors import ConfigError, TransportError

Factory = Callable[..., Supervisor]


@pytest.fixture
async def supervisors(tmp_path: Path) -> AsyncIterator[tuple[Factory, io.StringIO]]:
    """Build supervisors over fake graphs; shut them down and check no child is left."""
    out = io.StringIO()
    made: list[Supervisor] = []
    pids: list[int] = []

    def make(
        *services: str, backoff: RestartPolicy | None = None, grace_s: float = 5.0
    ) -> Supervisor:
        graph = write_graph(tmp_path / f"graph{len(made)}.yaml", *services)
        p = plan(ServeConfig(file=str(graph), run_dir=str(tmp_path / f"run{len(made)}")))
        prepare_run_dir(p)
        sup = Supervisor(
            p.specs,
            graph=p.graph.name,
            run_dir=p.run_dir,
            env=os.environ,
            extra_env=p.extra_env,
            printer=LogPrinter([s.name for s in p.specs], stream=out, color="never"),
            grace_period_s=grace_s,
            restart=backoff or RestartPolicy(0.05, 0.2, 60.0),
        )
        made.append(sup)
        return sup

    yield make, out
    for sup in made:
        for svc in sup.snapshot().services:
            pids.extend(r.pid for r in svc.replicas if r.pid)
        await sup.shutdown()
    assert kill_leftovers(pids) == []


def _running(sup: Supervisor, name: str) -> list[int]:
    svc = next(s for s in sup.snapshot().services if s.name == name)
    return [r.pid for r in svc.replicas if r.state == "running" and r.pid]


def test_restart_policy_delays() -> None:
    policy = RestartPolicy(initial_s=1.0, max_s=30.0, stable_after_s=10.0)
    assert [policy.delay(n) for n in range(1, 8)] == [1, 2, 4, 8, 16, 30, 30]


async def test_crash_restarts_with_exponential_backoff(
    supervisors: tuple[Factory, io.StringIO],
) -> None:
    make, out = supervisors
    sup = make(service("Worker", "crash"))
    await sup.start()

    def restarts() -> int:
        return sup.snapshot().services[0].replicas[0].restarts

    assert await async_wait_for(lambda: restarts() >= 4)
    await sup.shutdown()
    text = out.getvalue()
    for line in (
        "Worker-0 exited with code 3; restart 1 in 0.05s",
        "Worker-0 exited with code 3; restart 2 in 0.1s",
        "Worker-0 exited with code 3; restart 3 in 0.2s",
        "Worker-0 exited with code 3; restart 4 in 0.2s",
    ):
        assert line in text
    assert sup.snapshot().services[0].replicas[0].last_exit_code == 3


async def test_log_lines_are_prefixed_per_replica(supervisors: tuple[Factory, io.StringIO]) -> None:
    make, out = supervisors
    sup = make(
        service("Frontend", "serve", kind="frontend"), service("Worker", "serve", replicas=2)
    )
    await sup.start()
    assert await async_wait_for(lambda: out.getvalue().count(" up pid=") == 3)
    lines = out.getvalue().splitlines()
    width = len("Frontend") + 3
    for label, name in (("Frontend-0", "Frontend"), ("Worker-0", "Worker"), ("Worker-1", "Worker")):
        assert any(line.startswith(f"{label:<{width}} | {name} up pid=") for line in lines)
    assert any(line.startswith(f"{'serve':<{width}} | status: ") for line in lines)


def test_colours_can_be_forced() -> None:
    out = io.StringIO()
    printer = LogPrinter(["A", "B"], stream=out, color="always")
    printer.line("B-0", "hello", service="B")
    assert out.getvalue() == "\x1b[33mB-0   | \x1b[0mhello\n"
    plain = io.StringIO()
    LogPrinter(["A"], stream=plain, color="auto").line("A-0", "x\r\n", service="A")
    assert plain.getvalue() == "A-0   | x\n"  # not a TTY: no colour


async def test_children_get_the_graph_env(supervisors: tuple[Factory, io.StringIO]) -> None:
    make, out = supervisors
    sup = make(service("Worker", "serve"))
    await sup.start()
    assert await async_wait_for(lambda: " up pid=" in out.getvalue())
    control = sup.run_dir / CONTROL_SOCKET
    assert f"ns=default-fake control={control}" in out.getvalue()


async def test_scale_up_and_down_in_process_and_by_socket(
    supervisors: tuple[Factory, io.StringIO],
) -> None:
    make, _ = supervisors
    sup = make(service("Worker", "serve"), service("Other", "serve"))
    await sup.start()
    assert await async_wait_for(lambda: len(_running(sup, "Worker")) == 1)

    await LocalConnector(sup).set_replicas("Worker", 3)
    assert await async_wait_for(lambda: len(_running(sup, "Worker")) == 3)
    three = _running(sup, "Worker")

    remote = LocalConnector(sup.run_dir)
    assert await remote.replica_counts() == {"Worker": 3, "Other": 1}
    await remote.set_replicas("Worker", 1)
    assert await remote.get_replicas("Worker") == 1
    assert [r.index for r in sup.snapshot().services[0].replicas] == [0]
    assert all(gone(pid) for pid in three[1:])  # set_replicas returns once they are stopped
    assert read_state(sup.run_dir).services[0].desired == 1

    await remote.set_replicas("Worker", 0)
    assert _running(sup, "Worker") == []
    assert len(_running(sup, "Other")) == 1

    with pytest.raises(ConfigError, match="no service 'Nope'; services: Worker, Other"):
        await remote.set_replicas("Nope", 1)
    with pytest.raises(ConfigError, match="replicas must be >= 0"):
        await remote.set_replicas("Worker", -1)
    status = await remote.status()
    assert status["graph"] == "fake" and status["services"][1]["name"] == "Other"


async def test_shutdown_kills_a_child_that_ignores_sigterm(
    supervisors: tuple[Factory, io.StringIO],
) -> None:
    make, out = supervisors
    sup = make(service("Stubborn", "stubborn"), grace_s=0.5)
    await sup.start()
    assert await async_wait_for(lambda: " up pid=" in out.getvalue())
    pid = _running(sup, "Stubborn")[0]
    await sup.shutdown()
    assert gone(pid)
    assert sup.snapshot().services[0].replicas[0].last_exit_code == -9
    assert read_state(sup.run_dir).state == "stopped"
    assert not (sup.run_dir / CONTROL_SOCKET).exists()


async def test_missing_command_is_reported_and_retried(
    supervisors: tuple[Factory, io.StringIO],
) -> None:
    make, out = supervisors
    sup = make(
        "    Broken:\n      componentType: worker\n      extraPodSpec:\n        mainContainer:\n"
        '          command: ["/nonexistent/binary"]\n'
    )
    await sup.start()
    assert await async_wait_for(lambda: "restart 2 in" in out.getvalue())
    assert "Broken-0  | cannot start '/nonexistent/binary': No such file or directory" in (
        out.getvalue()
    )
    assert "Broken-0 exited with code 127; restart 1 in 0.05s" in out.getvalue()


async def test_planner_style_connector_calls(supervisors: tuple[Factory, io.StringIO]) -> None:
    make, _ = supervisors
    sup = make(service("Prefill", "serve"), service("Decode", "serve"))
    await sup.start()
    connector = LocalConnector(sup.run_dir)
    await connector.set_component_replicas({"Prefill": 2, "Decode": 0})
    await connector.add_component("Decode")
    await connector.remove_component("Prefill")
    await connector.remove_component("Prefill")
    await connector.remove_component("Prefill")  # already 0: stays 0
    assert await connector.replica_counts() == {"Prefill": 0, "Decode": 1}
    assert await async_wait_for(lambda: len(_running(sup, "Decode")) == 1)


async def test_connector_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DYN_SERVE_CONTROL", raising=False)
    with pytest.raises(ConfigError, match="DYN_SERVE_CONTROL is not set"):
        LocalConnector.from_env()
    monkeypatch.setenv("DYN_SERVE_CONTROL", "/nonexistent/control.sock")
    with pytest.raises(TransportError, match="cannot reach dynamo serve"):
        await LocalConnector.from_env().replica_counts()
