"""DGDR to a running graph: `dynamo serve -f mocker_config_with_planner.yaml` serves a request;
and a tiny `--mode thorough` sweep against real `dynamo serve` graphs."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

import openai
import psutil
import pytest
import yaml

from dynamo.profiler.main import main
from dynamo.testing.servers import free_port

START_S = 90.0  # frontend, two mockers and a planner importing on 2 shared cores
STOP_S = 30.0
SMALL = {
    "kind": "DynamoGraphDeploymentRequest",
    "metadata": {"name": "laptop"},
    "spec": {
        "model": "Qwen/Qwen3-0.6B",
        "backend": "vllm",
        "useMocker": True,
        "profilingConfig": {
            "config": {
                "sla": {"isl": 256, "osl": 8, "ttft": 300, "itl": 25},
                "hardware": {"maxNumGpusPerEngine": 1},
                "sweep": {
                    "prefillInterpolationGranularity": 2,
                    "decodeInterpolationGranularity": 2,
                },
                "engine": {"maxContextLength": 512},
                "planner": {"plannerAdjustmentInterval": 5},
            }
        },
    },
}


def _wait(predicate: Callable[[], bool], timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.25)
    return predicate()


def _models(port: int) -> list[str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/models", timeout=5) as r:
            return [m["id"] for m in json.loads(r.read())["data"]]
    except (urllib.error.URLError, OSError, ValueError, KeyError):
        return []


def _stop(proc: subprocess.Popen[bytes]) -> list[int]:
    """SIGINT the runner, wait, and return the pids of children still alive (then killed)."""
    children = [c.pid for c in psutil.Process(proc.pid).children(recursive=True)]
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(STOP_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    alive = [p for p in children if psutil.pid_exists(p) and psutil.Process(p).status() != "zombie"]
    for pid in alive:
        psutil.Process(pid).kill()
    return alive


def test_the_generated_mocker_graph_serves(tmp_path: Path) -> None:
    config = tmp_path / "dgdr.yaml"
    config.write_text(yaml.safe_dump(SMALL))
    out = tmp_path / "out"
    assert main(["-f", str(config), "-o", str(out)]) == 0

    port = free_port()
    log = tmp_path / "serve.log"
    with log.open("wb") as sink:
        proc = subprocess.Popen(
            [
                *(sys.executable, "-m", "dynamo.cli", "serve", "-f"),
                *(str(out / "mocker_config_with_planner.yaml"), "--http-port", str(port)),
                *("--run-dir", str(tmp_path / "run"), "--color", "never"),
            ],
            stdout=sink,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        assert _wait(lambda: "Qwen/Qwen3-0.6B" in _models(port), START_S), log.read_text()[-3000:]
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="none")
        reply = client.completions.create(model="Qwen/Qwen3-0.6B", prompt="Hello", max_tokens=4)
        assert reply.usage is not None and reply.usage.completion_tokens >= 1
        # the planner reads the profile the ConfigMap document carries, mounted from the run dir
        profile_dir = tmp_path / "run" / "configmaps" / "planner-profile-data"
        planning = f"planning with {profile_dir / 'prefill_raw_data.json'}"
        assert _wait(lambda: planning in log.read_text(), START_S), log.read_text()[-3000:]
    finally:
        leftovers = _stop(proc)
    assert leftovers == []


def _ours(tmp_path: Path) -> set[int]:
    """Processes started under this test's dir: by command line (dynamo serve) or by the
    environment `dynamo serve` gives its children (run dir, discovery root)."""
    found = set()
    for p in psutil.process_iter(["cmdline"]):
        try:
            text = " ".join(p.info["cmdline"] or []) + " ".join(p.environ().values())
        except (psutil.Error, OSError):
            continue
        if str(tmp_path) in text:
            found.add(p.pid)
    return found


def test_a_tiny_thorough_sweep(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # the candidate graphs' files
    config = tmp_path / "dgdr.yaml"
    config.write_text(yaml.safe_dump(SMALL))
    out = tmp_path / "out"
    argv = ["-f", str(config), "-o", str(out), "--mode", "thorough", "--deploy-target", "local"]
    assert main(argv) == 0
    results = json.loads((out / "profiling_results.json").read_text())
    assert results["mode"] == "thorough" and results["meetsSla"] is True
    (prefill,) = results["sweep"]["prefill"]
    assert prefill["ttft_ms"] > 0
    decode = results["sweep"]["decode"]
    assert [d["concurrency"] for d in decode] == [1, 256]
    assert all(d["itl_ms"] > 0 and d["thpt_per_gpu"] > 0 for d in decode)
    assert _ours(tmp_path) == set()  # every candidate graph was stopped
