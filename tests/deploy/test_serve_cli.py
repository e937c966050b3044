"""`dynamo serve` / `ps` / `scale` as real processes: signals, kill -9, dry run, CLI."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from _deploy_runner_helpers import (
    WAIT_S,
    descendants,
    gone,
    kill_leftovers,
    service,
    wait_for,
    write_graph,
)

from dynamo.cli import main
from dynamo.deploy.serve import ServeConfig, missing_engines, plan
from dynamo.deploy.state import read_state

REPO = Path(__file__).resolve().parents[2]


class Runner:
    """`dynamo serve` in a child process, its output in a file."""

    def __init__(self, tmp_path: Path, graph: Path, *extra: str, log: str = "serve.log") -> None:
        self.run_dir = tmp_path / "run"
        self.log = tmp_path / log
        with self.log.open("w") as log:
            self.proc = self._start(graph, log, extra)

    def _start(self, graph: Path, log: object, extra: tuple[str, ...]) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [
                sys.executable,
                "-m",
                "dynamo.cli",
                "serve",
                "-f",
                str(graph),
                "--run-dir",
                str(self.run_dir),
                "--color",
                "never",
                *extra,
            ],
            stdout=log,  # type: ignore[arg-type]
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def output(self) -> str:
        return self.log.read_text()

    def child_pids(self) -> list[int]:
        try:
            state = read_state(self.run_dir)
        except Exception:
            return []
        return [r.pid for s in state.services for r in s.replicas if r.pid]

    def wait_running(self, count: int) -> list[int]:
        def ready() -> bool:
            try:
                state = read_state(self.run_dir)
            except Exception:
                return False
            running = [r for s in state.services for r in s.replicas if r.state == "running"]
            return len(running) == count and self.output().count(" up pid=") >= count

        assert wait_for(ready), self.output()
        return self.child_pids()


@pytest.fixture
def runners(tmp_path: Path) -> Iterator[list[Runner]]:
    started: list[Runner] = []
    yield started
    for runner in started:
        pids = runner.child_pids()
        if runner.proc.poll() is None:
            runner.proc.send_signal(signal.SIGINT)
            try:
                runner.proc.wait(timeout=WAIT_S)
            except subprocess.TimeoutExpired:
                runner.proc.kill()
                runner.proc.wait()
        wait_for(lambda p=pids: all(gone(pid) for pid in p))
        assert kill_leftovers(pids) == []


def test_sigint_stops_every_child_and_grandchild(tmp_path: Path, runners: list[Runner]) -> None:
    graph = write_graph(
        tmp_path / "g.yaml",
        service("Frontend", "serve", kind="frontend"),
        service("Worker", "serve", replicas=2),
        service("Family", "family", shell=True),
        service("Stubborn", "stubborn"),
    )
    runner = Runner(tmp_path, graph, "--grace-period-s", "1")
    runners.append(runner)
    pids = runner.wait_running(5)
    family = descendants(runner.proc.pid)
    assert len(family) > len(pids)  # the grandchild `sleep` is there too

    runner.proc.send_signal(signal.SIGINT)
    assert runner.proc.wait(timeout=WAIT_S) == 0
    assert [p for p in family if not gone(p)] == []
    out = runner.output()
    assert "SIGINT: stopping (grace period 1s)" in out
    assert out.rstrip().endswith("stopped")
    assert read_state(runner.run_dir).state == "stopped"


def test_sigterm_also_drains(tmp_path: Path, runners: list[Runner]) -> None:
    graph = write_graph(tmp_path / "g.yaml", service("Worker", "serve"))
    runner = Runner(tmp_path, graph)
    runners.append(runner)
    (pid,) = runner.wait_running(1)
    runner.proc.terminate()
    assert runner.proc.wait(timeout=WAIT_S) == 0
    assert gone(pid)


def test_children_die_when_the_runner_is_killed(tmp_path: Path, runners: list[Runner]) -> None:
    graph = write_graph(
        tmp_path / "g.yaml",
        service("Frontend", "serve", kind="frontend"),
        service("Worker", "serve", replicas=2),
        service("Stubborn", "stubborn"),
        service("Family", "family"),
    )
    runner = Runner(tmp_path, graph)
    runners.append(runner)
    runner.wait_running(5)
    pids = descendants(runner.proc.pid)  # guards, services and the family's grandchild
    assert len(pids) >= 11
    runner.proc.kill()
    runner.proc.wait()
    assert wait_for(lambda: all(gone(p) for p in pids)), [p for p in pids if not gone(p)]


def test_ps_and_scale_commands(
    tmp_path: Path, runners: list[Runner], capsys: pytest.CaptureFixture[str]
) -> None:
    graph = write_graph(tmp_path / "g.yaml", service("Worker", "serve"))
    runner = Runner(tmp_path, graph)
    runners.append(runner)
    (pid,) = runner.wait_running(1)

    assert main(["ps", "--run-dir", str(runner.run_dir)]) == 0
    table = capsys.readouterr().out
    assert f"graph fake  runner pid {runner.proc.pid}  running" in table
    assert "Worker                   worker    1/1" in table
    assert f"{pid:>8} running" in table

    assert main(["scale", "Worker", "3", "--run-dir", str(runner.run_dir)]) == 0
    assert capsys.readouterr().out == "Worker scaled to 3\n"
    assert len(runner.wait_running(3)) == 3
    assert main(["scale", "Nope", "1", "--run-dir", str(runner.run_dir)]) == 1
    assert "dynamo scale: no service 'Nope'; services: Worker" in capsys.readouterr().err

    assert main(["scale", "Worker", "1", "--run-dir", str(runner.run_dir)]) == 0
    assert [s.desired for s in read_state(runner.run_dir).services] == [1]

    second = Runner(tmp_path, graph, log="second.log")  # same run dir: refused
    runners.append(second)
    assert second.proc.wait(timeout=WAIT_S) == 1
    assert "is already running" in second.output()


def test_dry_run_prints_processes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run_dir = tmp_path / "run"
    example = REPO / "examples" / "mocker" / "agg_router.yaml"
    assert (
        main(
            [
                "serve",
                "-f",
                str(example),
                "--dry-run",
                "--http-port",
                "8123",
                "--namespace",
                "lab",
                "--run-dir",
                str(run_dir),
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    python = sys.executable
    assert f"  command: {python} -m dynamo.frontend --http-port 8123 --router-mode kv\n" in out
    assert "MockerWorker (worker) replicas=2\n" in out
    assert (
        f"  command: {python} -m dynamo.mocker --model-path dynamo:tinymodel "
        "--model-name tinymodel\n" in out
    )
    assert "  env: DYN_NAMESPACE=lab-mocker-agg-router\n" in out
    assert "  env: DYN_DISCOVERY_BACKEND=file\n" in out
    assert "  env: DYN_HTTP_PORT=8123\n" in out
    assert not run_dir.exists()  # a dry run touches nothing


def test_dry_run_of_the_guide_graph_notes_local_differences(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from _deploy_manifests import GUIDE_MY_LLM

    graph = tmp_path / "my-llm.yaml"
    graph.write_text(GUIDE_MY_LLM)
    assert main(["serve", "-f", str(graph), "--dry-run", "--run-dir", str(tmp_path / "r")]) == 0
    out = capsys.readouterr().out
    assert (
        "  command: /bin/sh -c 'python3 -m dynamo.vllm --model YOUR_MODEL [--your-flags]'\n" in out
    )
    assert "  note: envFromSecret 'hf-token-secret' is not read locally; export its keys\n" in out


def test_bad_graph_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    graph = tmp_path / "bad.yaml"
    graph.write_text(
        "apiVersion: nvidia.com/v1alpha1\nkind: DynamoGraphDeployment\nmetadata: {name: x}\n"
        "spec:\n  services:\n    Frontend: {componentType: frontend, replicas: many}\n"
    )
    assert main(["serve", "-f", str(graph)]) == 1
    assert capsys.readouterr().err.startswith(
        "dynamo serve: spec.services.Frontend.replicas: Input should be a valid integer"
    )
    assert main(["serve"]) == 1
    assert "-f/--file GRAPH.yaml is required" in capsys.readouterr().err


def test_help_lists_commands_and_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    for command in ("serve", "ps", "scale", "check", "version"):
        assert f"    {command} " in out
    assert main(["version"]) == 0
    assert capsys.readouterr().out.startswith("pydynamo 0.1.0 ")


def test_ps_without_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("DYN_SERVE_RUN_ROOT", str(tmp_path))
    assert main(["ps"]) == 0
    assert capsys.readouterr().out == "no running `dynamo serve`\n"
    assert main(["scale", "Worker", "1"]) == 1
    assert "no running `dynamo serve` found" in capsys.readouterr().err


def test_console_script_is_installed() -> None:
    script = Path(sys.executable).with_name("dynamo")
    result = subprocess.run([str(script), "version"], capture_output=True, text=True, check=True)
    assert json.dumps(result.stdout).startswith('"pydynamo ')
    assert os.access(script, os.X_OK)


def test_check_delegates_to_the_operator_checks(monkeypatch: pytest.MonkeyPatch) -> None:
    import types

    seen: list[tuple[list[str], str]] = []
    fake = types.ModuleType("dynamo.operator.check")
    fake.main = lambda argv, prog: seen.append((argv, prog)) or 7  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "dynamo.operator.check", fake)
    assert main(["check", "--namespace", "x"]) == 7
    assert seen == [(["--namespace", "x"], "dynamo check")]


def test_missing_engines_names_each_engine_once_with_its_services() -> None:
    specs = plan(ServeConfig(file=str(REPO / "examples/sglang/disagg_router.yaml"))).specs
    asked: list[str] = []
    lines = missing_engines(specs, installed=lambda module: asked.append(module) or False)
    assert asked == ["sglang"]
    assert lines == [
        "SGLangDecodeWorker, SGLangPrefillWorker run dynamo.sglang, but sglang is not "
        "installed: pip install 'sglang[all]' (NVIDIA GPU)"
    ]
    assert missing_engines(specs, installed=lambda module: True) == []


def test_missing_engines_ignores_graphs_without_an_engine() -> None:
    specs = plan(ServeConfig(file=str(REPO / "examples/mocker/agg.yaml"))).specs
    assert missing_engines(specs, installed=lambda module: False) == []
