"""The SLA planner against static provisioning in wall-clock time, under `dynamo serve`.

    python benchmarks/planner_serve.py [--shape ramp+burst] [--time-scale 0.5] [--seed 0]
        [--base-rate 3] [--speedup-ratio 0.2] [--setups planner,peak,mean]
        [--planner-args "--ttft 500 --itl 60 --adjustment-interval 5 ..."]

The wall-clock twin of `planner.py`: one of its load shapes (`_load_shapes`), its phases
`--time-scale` times as long, is replayed as streaming `/v1/completions` requests (random
token-id prompts of --isl tokens, --osl output tokens) against a `dynamo serve` graph: the
frontend (`--router-mode kv`), prefill and decode mockers (`--speedup-ratio`) and, for the
planner setup, the `Planner` service (`--environment local --backend mocker`). Three graphs:
the planner starting at 1 + 1, and static graphs sized like `planner.py`'s (the planner's
throughput formula at the trace's peak and mean rate).

Reported per graph: SLA attainment (share of requests with TTFT <= --ttft and mean ITL <=
--itl; failed requests miss), worker-seconds over the trace (each prefill / decode worker
process from its start to its exit, as the runner's state file shows them, sampled every
0.5 s) and the same ratio to the peak graph as `planner.py`. Run `planner.py` with the same
--time-scale and planner flags for the simulated numbers of the same load.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import random
import shlex
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import psutil
from _load_shapes import (
    SHAPES,
    Phases,
    arrivals,
    format_misses,
    mean_rate,
    misses_by_phase,
    peak_rate,
    scaled,
    trace_s,
)
from _procs import REPO, BenchError, free_port

from dynamo.planner.config import PlannerConfig, build_parser, planner_config
from dynamo.planner.connectors.base import ROLES, Role
from dynamo.planner.profile import mocker_profile
from planner import replicas_for_rate

MODEL = "tinymodel"
VOCAB = 2048  # the tiny model's
WORKERS: dict[Role, str] = {"prefill": "MockerPrefillWorker", "decode": "MockerDecodeWorker"}
START_S = 180.0  # several Python processes importing on two shared cores


def graph_yaml(replicas: dict[Role, int], speedup: float, planner_args: list[str] | None) -> str:
    """A disaggregated mocker graph; with `planner_args`, a `Planner` service too."""

    def worker(role: Role) -> dict[str, object]:
        return {
            "componentType": "worker",
            "subComponentType": role,
            "replicas": replicas[role],
            "extraPodSpec": {
                "mainContainer": {
                    "command": ["python3", "-m", "dynamo.mocker"],
                    "args": [
                        "--model-path",
                        "dynamo:tinymodel",
                        "--model-name",
                        MODEL,
                        f"--is-{role}-worker",
                        "--speedup-ratio",
                        str(speedup),
                    ],
                }
            },
        }

    services: dict[str, object] = {
        "Frontend": {
            "componentType": "frontend",
            "replicas": 1,
            "extraPodSpec": {
                "mainContainer": {
                    "command": ["python3", "-m", "dynamo.frontend"],
                    "args": ["--router-mode", "kv"],
                }
            },
        },
        WORKERS["decode"]: worker("decode"),
        WORKERS["prefill"]: worker("prefill"),
    }
    if planner_args is not None:
        services["Planner"] = {
            "componentType": "planner",
            "replicas": 1,
            "extraPodSpec": {
                "mainContainer": {
                    "command": ["python3", "-m", "dynamo.planner"],
                    "args": planner_args,
                }
            },
        }
    graph = {
        "apiVersion": "nvidia.com/v1alpha1",
        "kind": "DynamoGraphDeployment",
        "metadata": {"name": "planner-bench"},
        "spec": {"services": services},
    }
    return json.dumps(graph, indent=1)  # JSON is YAML


@dataclass
class Lifetimes:
    """Worker processes seen in the runner's state file: pid -> [service, start, last seen]."""

    seen: dict[int, list[object]] = field(default_factory=dict)

    def sample(self, state_file: Path) -> dict[Role, int]:
        """Record the workers running now; returns the live count per role."""
        now = time.time()
        try:
            state = json.loads(state_file.read_text())
        except (OSError, ValueError):
            return {}
        live: dict[Role, int] = dict.fromkeys(ROLES, 0)
        for service in state.get("services", []):
            role = next((r for r, name in WORKERS.items() if name == service["name"]), None)
            if role is None:
                continue
            for replica in service.get("replicas", []):
                pid = replica.get("pid")
                if pid is None or not psutil.pid_exists(pid):
                    continue
                entry = self.seen.setdefault(pid, [role, replica.get("started_at") or now, now])
                entry[2] = now
                live[role] += 1
        return live

    def worker_seconds(self, start: float, end: float) -> float:
        """Worker time inside [start, end]: each process from its start to its last sighting."""
        total = 0.0
        for _, born, last in self.seen.values():
            assert isinstance(born, float) and isinstance(last, float)
            total += max(0.0, min(last, end) - max(born, start))
        return total


@dataclass
class Outcome:
    ttft_s: float | None = None
    itl_s: float | None = None
    error: str | None = None


async def one_request(
    session: aiohttp.ClientSession, url: str, prompt: list[int], osl: int
) -> Outcome:
    body = {
        "model": MODEL,
        "prompt": prompt,
        "max_tokens": osl,
        "min_tokens": osl,
        "ignore_eos": True,
        "stream": True,
    }
    sent = time.monotonic()
    times: list[float] = []
    try:
        async with session.post(url + "/v1/completions", json=body) as resp:
            if resp.status != 200:
                return Outcome(error=f"HTTP {resp.status}: {(await resp.text())[:200]}")
            async for raw in resp.content:
                line = raw.strip()
                if not line.startswith(b"data:") or line == b"data: [DONE]":
                    continue
                chunk = json.loads(line[5:])
                if chunk.get("choices") and chunk["choices"][0].get("text"):
                    times.append(time.monotonic())
    except (aiohttp.ClientError, TimeoutError) as exc:
        return Outcome(error=repr(exc))
    if not times:
        return Outcome(error="no tokens")
    itl = (times[-1] - times[0]) / (len(times) - 1) if len(times) > 1 else None
    return Outcome(times[0] - sent, itl)


@dataclass
class Result:
    attainment: float
    errors: int
    requests: int
    worker_seconds: float
    ttft_p90_ms: float
    itl_p90_ms: float
    max_replicas: dict[Role, int]
    by_phase: list[tuple[str, int, int]] = field(default_factory=list)  # label, arrived, missed


async def replay(
    url: str,
    times: list[float],
    isl: int,
    osl: int,
    config: PlannerConfig,
    state_file: Path,
    lifetimes: Lifetimes,
) -> tuple[list[Outcome], float, dict[Role, int]]:
    """Send the requests at their times; the outcomes, the wall-clock start, the peak live
    workers per role."""
    rng = random.Random(len(times))
    peak: dict[Role, int] = dict.fromkeys(ROLES, 0)
    stop = asyncio.Event()

    async def watch() -> None:
        while not stop.is_set():
            for role, n in lifetimes.sample(state_file).items():
                peak[role] = max(peak[role], n)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.5)

    timeout = aiohttp.ClientTimeout(total=300)
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
        watcher = asyncio.create_task(watch())
        start_wall, start = time.time(), time.monotonic()
        tasks = []
        for t in times:
            await asyncio.sleep(max(0.0, start + t - time.monotonic()))
            prompt = [rng.randrange(10, VOCAB - 10) for _ in range(isl)]
            tasks.append(asyncio.create_task(one_request(session, url, prompt, osl)))
        outcomes = await asyncio.gather(*tasks)
        stop.set()
        await watcher
    return list(outcomes), start_wall, peak


class Serve:
    """`dynamo serve -f graph` in its own session; stopped (children too) on exit."""

    def __init__(self, graph: str, workdir: Path) -> None:
        self.port = free_port()
        self.run_dir = workdir / "run"
        self.log = workdir / "serve.log"
        path = workdir / "graph.yaml"
        path.write_text(graph)
        with self.log.open("wb") as out:
            argv = [sys.executable, "-m", "dynamo.cli", "serve", "-f", str(path)]
            argv += ["--http-port", str(self.port), "--run-dir", str(self.run_dir)]
            self.proc = subprocess.Popen(
                [*argv, "--color", "never"],
                stdout=out, stderr=subprocess.STDOUT, cwd=REPO, start_new_session=True,
                env={**os.environ, "DYN_SERVE_NAMESPACE": f"planner-bench-{self.port}"},
            )  # fmt: skip

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def tail(self, lines: int = 30) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    async def wait_ready(self, replicas: dict[Role, int], lifetimes: Lifetimes) -> None:
        """Until every worker runs and a streamed request goes through prefill and decode."""
        deadline = time.monotonic() + START_S
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    raise BenchError(f"dynamo serve exited:\n{self.tail()}")
                live = lifetimes.sample(self.run_dir / "state.json")
                if all(live.get(r, 0) >= replicas[r] for r in ROLES):
                    out = await one_request(session, self.url, list(range(10, 60)), 2)
                    if out.error is None:
                        return
                await asyncio.sleep(1.0)
        raise BenchError(f"the graph was not ready after {START_S:.0f}s:\n{self.tail()}")

    def close(self) -> None:
        with contextlib.suppress(psutil.NoSuchProcess):
            children = psutil.Process(self.proc.pid).children(recursive=True)
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        for child in children:
            with contextlib.suppress(psutil.NoSuchProcess):
                child.kill()


async def run_setup(
    label: str,
    static: dict[Role, int] | None,
    args: argparse.Namespace,
    config: PlannerConfig,
    planner_flags: list[str],
    phases: Phases,
) -> Result:
    start = static or dict.fromkeys(ROLES, config.min_endpoint)
    graph = graph_yaml(start, args.speedup_ratio, None if static else planner_flags)
    times = arrivals(args.base_rate, args.seed, phases)
    with tempfile.TemporaryDirectory(prefix="planner-serve-") as tmp:
        serve = Serve(graph, Path(tmp))
        lifetimes = Lifetimes()
        try:
            await serve.wait_ready(start, lifetimes)
            if static is None:
                await asyncio.sleep(args.settle_s)  # the planner's first scrape finds the frontend
            print(
                f"  {label}: replaying {len(times)} requests over {trace_s(phases):.0f}s",
                flush=True,
            )
            outcomes, t0, peak = await replay(
                serve.url,
                times,
                args.isl,
                args.osl,
                config,
                serve.run_dir / "state.json",
                lifetimes,
            )
        finally:
            serve.close()
        if args.keep_logs:
            dest = Path(args.keep_logs) / f"{label.replace(' ', '-')}.log"
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_text(serve.log.read_text(errors="replace"))

    def met(o: Outcome) -> bool:
        return (
            o.error is None
            and o.ttft_s is not None
            and o.ttft_s <= config.ttft_ms / 1000
            and (o.itl_s or 0.0) <= config.itl_ms / 1000
        )

    ok = [o for o in outcomes if met(o)]
    ttfts = sorted(o.ttft_s for o in outcomes if o.ttft_s is not None)
    itls = sorted(o.itl_s for o in outcomes if o.itl_s is not None)
    errors = [o.error for o in outcomes if o.error is not None]
    if errors:
        print(f"  {label}: {len(errors)} failed, first: {errors[0]}", flush=True)
    return Result(
        attainment=len(ok) / len(outcomes) if outcomes else math.nan,
        errors=len(errors),
        requests=len(outcomes),
        worker_seconds=lifetimes.worker_seconds(t0, t0 + trace_s(phases)),
        ttft_p90_ms=ttfts[int(0.9 * len(ttfts))] * 1000 if ttfts else math.nan,
        itl_p90_ms=itls[int(0.9 * len(itls))] * 1000 if itls else math.nan,
        max_replicas=static or peak,
        by_phase=misses_by_phase(times, [not met(o) for o in outcomes], phases),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", default="ramp+burst", choices=list(SHAPES))
    parser.add_argument("--time-scale", type=float, default=0.5, help="phase lengths x this")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--base-rate", type=float, default=3.0, help="requests/s at x1")
    parser.add_argument("--isl", type=int, default=1000)
    parser.add_argument("--osl", type=int, default=100)
    parser.add_argument("--speedup-ratio", type=float, default=0.2, help="the mockers'")
    parser.add_argument(
        "--setups", default="planner,peak,mean", help="comma-separated: planner, peak, mean"
    )
    parser.add_argument(
        "--settle-s", type=float, default=10.0, help="wait after ready before the planner run"
    )
    parser.add_argument("--keep-logs", help="copy each graph's `dynamo serve` log here")
    parser.add_argument(
        "--planner-args",
        default="--ttft 500 --itl 60 --adjustment-interval 5 --max-gpu-budget 16",
        help="planner flags, as `python -m dynamo.planner` takes them",
    )
    args = parser.parse_args()
    phases = scaled(SHAPES[args.shape], args.time_scale)
    user_flags = shlex.split(args.planner_args)
    planner_flags = [
        *user_flags,
        "--environment",
        "local",
        "--backend",
        "mocker",
        "--mocker-speedup-ratio",
        str(args.speedup_ratio),
    ]
    config = planner_config(
        build_parser().parse_args([*planner_flags, "--profile-results-dir", "/nonexistent"]), {}
    )
    profile = mocker_profile(args.speedup_ratio)
    peak, mean = peak_rate(args.base_rate, phases), mean_rate(args.base_rate, phases)
    sizes = {
        "peak": replicas_for_rate(config, profile, peak, args.isl, args.osl),
        "mean": replicas_for_rate(config, profile, mean, args.isl, args.osl),
    }
    print(
        f"{args.shape} at time scale {args.time_scale:g}: {trace_s(phases):.0f}s of wall-clock "
        f"load, base {args.base_rate:g} req/s (peak {peak:.1f}, mean {mean:.2f}); ISL "
        f"{args.isl}, OSL {args.osl}; mocker speedup {args.speedup_ratio:g}; seed {args.seed}; "
        f"planner: {args.planner_args}; load average at start "
        f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}",
        flush=True,
    )
    rows: list[tuple[str, dict[Role, int] | None, Result]] = []
    for setup in args.setups.split(","):
        static = None if setup == "planner" else sizes[setup]
        label = "planner" if static is None else f"static at {setup}"
        rows.append(
            (
                label,
                static,
                asyncio.run(run_setup(label, static, args, config, planner_flags, phases)),
            )
        )
    print(f"load average at end {' '.join(f'{x:.2f}' for x in os.getloadavg())}", flush=True)
    base = next((r.worker_seconds for label, _, r in rows if label == "static at peak"), None)
    print(
        f"{'setup':16} {'replicas P+D':>13} {'SLA attain':>10} {'worker-s':>9} {'vs peak':>8} "
        f"{'failed':>6} {'TTFT p90':>9} {'ITL p90':>8}"
    )
    for label, static, r in rows:
        counts = f"{r.max_replicas['prefill']}+{r.max_replicas['decode']}"
        counts += "" if static else " max"
        vs = f"{r.worker_seconds / base:>8.0%}" if base else f"{'-':>8}"
        print(
            f"{label:16} {counts:>13} {r.attainment:>10.1%} {r.worker_seconds:>9.0f} {vs} "
            f"{r.errors:>6} {r.ttft_p90_ms:>7.0f}ms {r.itl_p90_ms:>6.1f}ms",
            flush=True,
        )
        print(f"{'':16} missed/arrived by phase: {format_misses(r.by_phase)}", flush=True)


if __name__ == "__main__":
    main()
