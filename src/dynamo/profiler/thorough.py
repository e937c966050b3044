"""Thorough measurement: deploy each candidate engine and measure it with real HTTP load.

Each candidate is deployed as a graph of a frontend and one aggregated worker, by one of two
deployers (`--deploy-target`):

- `local`: `LocalGraph`, a `dynamo serve` of `candidate_graph` on this machine (mocker
  requests only: real engines need their GPUs here);
- `kubernetes`: `kube_graph.KubeGraph`, a trial DGD in the profiler's namespace, measured
  through its frontend Service (any backend; the mocker's graph for `useMocker`).

`auto` (the default) is `kubernetes` inside a pod (`KUBERNETES_SERVICE_HOST` is set), else
`local`. Prefill and decode points are streamed completions through the frontend, timed at
the client.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Protocol

import aiohttp
import orjson
import yaml

from dynamo.profiler.config import ProfileRequest
from dynamo.profiler.dgd import MOCKER_TOKENIZER
from dynamo.profiler.hardware import Engine
from dynamo.profiler.measure import DecodePoint, PrefillPoint, prompts, steady_state
from dynamo.runtime.errors import DynamoError

PREFILL_REPEATS = 5  # TTFT is their median: one slow request on a busy machine is noise
STOP_GRACE_S = 15.0
REQUEST_TIMEOUT_S = 600.0
DEPLOY_TARGETS = ("auto", "local", "kubernetes")


class Graph(Protocol):
    """A deployed candidate: where its frontend serves `model`; `stop` tears it down."""

    engine: Engine
    model: str
    base_url: str

    def stop(self) -> None: ...


Deployer = Callable[[Engine], Graph]


def resolve_target(target: str, env: Mapping[str, str]) -> str:
    """`local` or `kubernetes`: `auto` is `kubernetes` inside a pod."""
    if target not in DEPLOY_TARGETS:
        raise DynamoError(f"--deploy-target: {target!r} is not one of {', '.join(DEPLOY_TARGETS)}")
    if target == "auto":
        return "kubernetes" if env.get("KUBERNETES_SERVICE_HOST") else "local"
    return target


def deployer(request: ProfileRequest, target: str, workdir: Path) -> Deployer:
    """How `ThoroughMeasurer` deploys a candidate for `target` (`local` or `kubernetes`).
    Raises `DynamoError` for a real engine on `local`."""
    if target == "kubernetes":
        from dynamo.profiler.kube_graph import KubeGraph

        return lambda eng: KubeGraph(request, eng)
    if not request.use_mocker:
        raise DynamoError(
            "--mode thorough with --deploy-target local runs each candidate as a `dynamo "
            "serve` graph on this machine, which needs spec.useMocker: true (real engines "
            "need their GPUs); run the profiler in the cluster (the DGDR's profiling Job) or "
            "with --deploy-target kubernetes to deploy trial DGDs, or use --mode rapid"
        )
    return lambda eng: LocalGraph(request, eng, workdir)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def candidate_graph(request: ProfileRequest, eng: Engine) -> dict[str, Any]:
    """A frontend and one aggregated mocker worker simulating `eng`."""
    args = ["--model-path", MOCKER_TOKENIZER, "--model-name", request.model, *eng.mocker_args()]
    return {
        "apiVersion": "nvidia.com/v1alpha1",
        "kind": "DynamoGraphDeployment",
        "metadata": {"name": f"profile-tp{eng.gpus}"},
        "spec": {
            "services": {
                "Frontend": {
                    "componentType": "frontend",
                    "extraPodSpec": {
                        "mainContainer": {"command": ["python3", "-m", "dynamo.frontend"]}
                    },
                },
                "Mocker": {
                    "componentType": "worker",
                    "extraPodSpec": {
                        "mainContainer": {
                            "command": ["python3", "-m", "dynamo.mocker"],
                            "args": args,
                        }
                    },
                },
            }
        },
    }


class LocalGraph:
    """One `dynamo serve` process group; `stop` ends it and its children."""

    def __init__(self, request: ProfileRequest, eng: Engine, workdir: Path) -> None:
        self.engine, self.model = eng, request.model
        self.port = _free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        graph_file = workdir / f"tp{eng.gpus}.yaml"
        graph_file.write_text(yaml.safe_dump(candidate_graph(request, eng), sort_keys=False))
        self.log_path = workdir / f"tp{eng.gpus}.log"
        self._log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            [
                *(sys.executable, "-m", "dynamo.cli", "serve", "-f", str(graph_file)),
                *("--http-port", str(self.port), "--color", "never"),
                *("--run-dir", str(workdir / f"run-tp{eng.gpus}")),
            ],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self._wait_ready(request.deployment_timeout_s)

    def _wait_ready(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self.stop()
                raise DynamoError(
                    f"dynamo serve of the TP{self.engine.gpus} candidate exited with "
                    f"{self.proc.returncode} (log: {self.log_path})"
                )
            with contextlib.suppress(OSError, ValueError):
                import urllib.request

                with urllib.request.urlopen(f"{self.base_url}/v1/models", timeout=2) as r:
                    if self.model.encode() in r.read():
                        return
            time.sleep(0.5)
        self.stop()
        raise DynamoError(
            f"the TP{self.engine.gpus} candidate graph was not serving {self.model} after "
            f"{timeout_s:g} s (deployment.deploymentTimeout; log: {self.log_path})"
        )

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        with contextlib.suppress(ProcessLookupError):  # orphans of a killed runner
            os.killpg(self.proc.pid, signal.SIGKILL)
        self._log.close()


async def _stream(
    session: aiohttp.ClientSession, url: str, model: str, prompt: list[int], max_tokens: int
) -> tuple[float, list[float], list[int]]:
    """(start, arrival time of each chunk with new tokens, tokens generated up to each) of one
    streamed completion; the counts come from the frontend's continuous usage, so a chunk
    that carries several tokens counts as several."""
    body = {
        "model": model,
        "prompt": prompt,
        "max_tokens": max_tokens,
        "min_tokens": max_tokens,
        "ignore_eos": True,
        "stream": True,
        "stream_options": {"include_usage": True, "continuous_usage_stats": True},
    }
    start = time.perf_counter()
    times: list[float] = []
    counts: list[int] = []
    async with session.post(f"{url}/v1/completions", json=body) as resp:
        if resp.status != 200:
            raise DynamoError(f"the candidate graph answered {resp.status}: {await resp.text()}")
        async for raw in resp.content:
            line = raw.strip()
            if not line.startswith(b"data:") or line == b"data: [DONE]":
                continue
            event = orjson.loads(line[5:])
            if not event.get("choices"):
                continue  # the final usage chunk
            usage = event.get("usage")
            if not usage:
                raise DynamoError("the candidate graph's frontend sent no continuous usage")
            count = int(usage["completion_tokens"])
            if times and count <= counts[-1]:
                continue  # no new token (the finish chunk)
            times.append(time.perf_counter())
            counts.append(count)
    return start, times, counts


class ThoroughMeasurer:
    """`Measurer` against live graphs, one candidate at a time."""

    def __init__(
        self, request: ProfileRequest, target: str = "local", deploy: Deployer | None = None
    ) -> None:
        """`target`: `local` or `kubernetes` (`resolve_target`); `deploy` replaces its
        deployer (tests)."""
        self.request = request
        self._tmp = tempfile.TemporaryDirectory(prefix="dynamo-profile-")
        try:
            self._deploy = deploy or deployer(request, target, Path(self._tmp.name))
        except DynamoError:
            self._tmp.cleanup()
            raise
        self._graph: Graph | None = None
        self._seed = 0

    def _serving(self, eng: Engine) -> Graph:
        if self._graph is None or self._graph.engine != eng:
            if self._graph is not None:
                self._graph.stop()
                self._graph = None
            self._graph = self._deploy(eng)
        return self._graph

    def _prompts(self, count: int, isl: int) -> list[list[int]]:
        self._seed += 1  # never repeat a prompt across points (no accidental cache hits)
        return prompts(count, isl, seed=self._seed * 7919 + isl)

    async def _session(self) -> aiohttp.ClientSession:
        return aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S),
            connector=aiohttp.TCPConnector(limit=0),
        )

    def prefill(self, engine: Engine, isl: int) -> PrefillPoint:
        graph = self._serving(engine)

        async def run() -> float:
            async with await self._session() as session:
                ttfts = []
                warm, *measured = self._prompts(PREFILL_REPEATS + 1, isl)
                await _stream(session, graph.base_url, graph.model, warm, 1)  # first-use costs
                for prompt in measured:
                    start, times, _ = await _stream(session, graph.base_url, graph.model, prompt, 1)
                    ttfts.append(times[0] - start)
                return statistics.median(ttfts)

        return PrefillPoint(engine.gpus, isl, asyncio.run(run()) * 1000.0)

    def decode(self, engine: Engine, isl: int, osl: int, concurrency: int) -> DecodePoint:
        graph = self._serving(engine)
        batch = self._prompts(concurrency, isl)

        async def run() -> list[tuple[float, list[float], list[int]]]:
            async with await self._session() as session:
                url, model = graph.base_url, graph.model
                await asyncio.gather(*(_stream(session, url, model, p, 1) for p in batch))
                return await asyncio.gather(*(_stream(session, url, model, p, osl) for p in batch))

        streams = asyncio.run(run())
        itl_s, tokens_per_s = steady_state([t for _, t, _ in streams], [c for _, _, c in streams])
        return DecodePoint.measured(
            engine, isl, osl, concurrency, itl_s=itl_s, tokens_per_s=tokens_per_s
        )

    def close(self) -> None:
        if self._graph is not None:
            self._graph.stop()
            self._graph = None
        self._tmp.cleanup()
