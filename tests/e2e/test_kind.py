"""The guide's flow on a real kind cluster: charts, a mocker DGD, port-forward, curl.

Opt-in (DYN_E2E_KIND=1); see README.md. Every step shells out to the same commands a user
types, so a failure here is a failure of the documented flow.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from dynamo import __version__

REPO = Path(__file__).resolve().parents[2]
IMAGE = f"pydynamo/runtime:{__version__}"
NS_PLATFORM = "dynamo-system"
NS_GRAPH = "dynamo-e2e"
EXAMPLE = REPO / "examples/mocker/agg.yaml"
GRAPH = "mocker-agg"
TIMEOUT_S = float(os.environ.get("DYN_E2E_TIMEOUT_S", "600"))


def sh(*argv: str, check: bool = True, timeout: float = 900) -> str:
    env = {**os.environ, "PATH": f"{REPO / '.tools/bin'}{os.pathsep}{os.environ['PATH']}"}
    result = subprocess.run(
        argv, capture_output=True, text=True, env=env, timeout=timeout, check=False
    )
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(argv)} failed:\n{result.stdout}\n{result.stderr}")
    return result.stdout


@pytest.fixture(scope="module")
def kind_cluster() -> Iterator[str]:
    for tool in ("docker", "kind", "kubectl"):
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} is required for the kind e2e suite")
    existing = os.environ.get("DYN_E2E_KIND_CLUSTER")
    name = existing or "dynamo-e2e"
    if not existing:
        sh("kind", "create", "cluster", "--name", name, "--wait", "120s")
    sh("kubectl", "config", "use-context", f"kind-{name}")
    try:
        if os.environ.get("DYN_E2E_SKIP_BUILD") != "1":
            sh("docker", "build", "-t", IMAGE, str(REPO), timeout=1800)
            sh("kind", "load", "docker-image", IMAGE, "--name", name)
        yield name
    finally:
        if not existing:
            sh("kind", "delete", "cluster", "--name", name, check=False)


@pytest.fixture(scope="module")
def platform(kind_cluster: str) -> Iterator[None]:
    sh(
        "helm",
        "install",
        "dynamo-crds",
        str(REPO / "deploy/helm/dynamo-crds"),
        "--namespace",
        "default",
        "--wait",
    )
    sh(
        "helm",
        "install",
        "dynamo-platform",
        str(REPO / "deploy/helm/dynamo-platform"),
        "--namespace",
        NS_PLATFORM,
        "--create-namespace",
        "--set",
        "dynamo-operator.image.pullPolicy=Never",
        "--wait",
        "--timeout",
        "5m",
    )
    try:
        yield
    finally:
        sh("kubectl", "delete", "namespace", NS_GRAPH, "--ignore-not-found", check=False)
        sh("helm", "uninstall", "dynamo-platform", "-n", NS_PLATFORM, check=False)
        sh("helm", "uninstall", "dynamo-crds", "-n", "default", check=False)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _get_json(url: str, body: dict[str, object] | None = None) -> dict[str, object]:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as resp:
        return dict(json.loads(resp.read()))


def test_check_reports_a_usable_cluster(platform: None) -> None:
    out = sh(sys.executable, "-m", "dynamo.operator.check", check=False)
    rows = {line.split("  ")[0].strip(): line for line in out.splitlines()}
    assert "PASS" in rows["CRDs installed"], out
    assert "PASS" in rows["Kubernetes API"], out


def test_mocker_graph_serves_through_port_forward(platform: None) -> None:
    sh("kubectl", "create", "namespace", NS_GRAPH)
    sh("kubectl", "apply", "-n", NS_GRAPH, "-f", str(EXAMPLE))
    deadline = time.monotonic() + TIMEOUT_S
    state = ""
    while time.monotonic() < deadline:
        state = sh(
            "kubectl",
            "get",
            "dgd",
            GRAPH,
            "-n",
            NS_GRAPH,
            "-o",
            "jsonpath={.status.state}",
            check=False,
        )
        if state == "successful":
            break
        time.sleep(5)
    assert state == "successful", sh("kubectl", "get", "dgd,deploy,pods", "-n", NS_GRAPH)

    port = _free_port()
    forward = subprocess.Popen(
        ["kubectl", "port-forward", "-n", NS_GRAPH, f"svc/{GRAPH}-frontend", f"{port}:8000"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        models: dict[str, object] = {}
        while time.monotonic() < deadline:
            try:
                models = _get_json(f"{base}/v1/models")
                if models.get("data"):
                    break
            except (urllib.error.URLError, ConnectionError):
                pass
            time.sleep(2)
        assert [m["id"] for m in models["data"]] == ["tinymodel"]  # type: ignore[index, union-attr]
        reply = _get_json(
            f"{base}/v1/chat/completions",
            {
                "model": "tinymodel",
                "messages": [{"role": "user", "content": "Hi"}],
                "max_tokens": 8,
            },
        )
        assert reply["choices"][0]["message"]["content"]  # type: ignore[index]
    finally:
        forward.terminate()
        forward.wait(timeout=10)
