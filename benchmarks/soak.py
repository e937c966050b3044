"""Soak: mixed streaming load with disconnects and cancellations; does anything grow?

    python benchmarks/soak.py --minutes 30 [--concurrency 8] [--workers 2] [--json-out soak.json]

A frontend and one mocker process (`--workers` engines in it), both run through
`_task_probe.py` so their asyncio task counts can be read. `--concurrency` client loops send,
in a fixed random mix: a chat stream read to `[DONE]`, a unary completion, a stream the client
drops after a few chunks (connection closed), and a request cancelled after 10-300 ms
(before or after its first byte). Every `--sample-s` seconds the RSS of every server process
(their children included) is read from /proc, with the request count at that moment.
A request open longer than `--stuck-s` makes the frontend log its in-flight requests and
request-plane connections (`kill -USR1`, see `dynamo.frontend.inflight`); so does the end.

The report: requests by kind and errors; per process the RSS after warm-up and at the end and
its growth per 100k requests (least-squares slope over the post-warm-up samples, and over the
second half of the run alone, after the allocator has settled); open file
descriptors, threads and asyncio tasks after warm-up and at the end, both read with the load
paused and the servers idle. An error is a non-200 answer or a stream without `[DONE]` that
the client did not drop itself.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import signal
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from dynamo.testing.processes import FRONTEND_LISTENING, Procs, mocker_args, read_until

PROBE = Path(__file__).resolve().parent / "_task_probe.py"
KINDS = ("stream", "unary", "disconnect", "cancel")
WEIGHTS = (50, 20, 15, 15)
MODEL = "tiny"


@dataclass
class Counts:
    sent: dict[str, int] = field(default_factory=lambda: dict.fromkeys(KINDS, 0))
    errors: int = 0
    error_samples: list[str] = field(default_factory=list)
    error_times_s: list[float] = field(default_factory=list)  # since the load began
    began: float = field(default_factory=time.monotonic)

    @property
    def total(self) -> int:
        return sum(self.sent.values())

    def error(self, what: str) -> None:
        self.errors += 1
        at = time.monotonic() - self.began
        self.error_times_s.append(round(at, 1))
        if len(self.error_samples) < 5:
            self.error_samples.append(f"at {at:.0f} s: {what}")


@dataclass
class Server:
    name: str
    pid: int
    task_file: Path


def _tree(pid: int) -> list[int]:
    """`pid` and all its descendants (from /proc/<pid>/task/*/children)."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        with contextlib.suppress(OSError):
            for task in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{task}/children") as f:
                    todo.extend(int(c) for c in f.read().split())
    return out


def _status(pid: int, key: str) -> int:
    with contextlib.suppress(OSError), open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return 0


def rss_mb(pid: int) -> float:
    return sum(_status(p, "VmRSS") for p in _tree(pid)) / 1024


def fds(pid: int) -> int:
    return sum(len(os.listdir(f"/proc/{p}/fd")) for p in _tree(pid) if os.path.isdir(f"/proc/{p}"))


def threads(pid: int) -> int:
    return sum(_status(p, "Threads") for p in _tree(pid))


def tasks(server: Server) -> int | None:
    try:
        return int(server.task_file.read_text())
    except (OSError, ValueError):
        return None


def snapshot(servers: list[Server]) -> dict[str, dict[str, float | int | None]]:
    return {
        s.name: {"rss_mb": rss_mb(s.pid), "fds": fds(s.pid), "threads": threads(s.pid),
                 "tasks": tasks(s)}
        for s in servers
    }  # fmt: skip


async def one_request(
    session: aiohttp.ClientSession, url: str, kind: str, rng: random.Random, counts: Counts
) -> None:
    max_tokens = rng.randint(8, 64)
    body = {
        "model": MODEL,
        "messages": [{"role": "user", "content": f"soak {rng.random()} " * rng.randint(1, 20)}],
        "max_tokens": max_tokens,
        "stream": kind != "unary",
    }
    counts.sent[kind] += 1
    if kind == "cancel":
        with contextlib.suppress(TimeoutError):
            cancel_after_s = rng.uniform(0.01, 0.3)
            await asyncio.wait_for(_stream(session, url, body, None, counts), cancel_after_s)
        return
    if kind == "unary":
        async with session.post(url + "/v1/chat/completions", json=body) as resp:
            if resp.status != 200:
                counts.error(f"unary {resp.status}: {(await resp.text())[:200]}")
                return
            answer = await resp.json()
            if answer["choices"][0]["finish_reason"] not in ("stop", "length"):
                counts.error(f"unary finish_reason {answer['choices'][0]['finish_reason']}")
        return
    drop_after = rng.randint(1, 4) if kind == "disconnect" else None
    await _stream(session, url, body, drop_after, counts)


async def _stream(
    session: aiohttp.ClientSession,
    url: str,
    body: dict[str, object],
    drop_after: int | None,
    counts: Counts,
) -> None:
    async with session.post(url + "/v1/chat/completions", json=body) as resp:
        if resp.status != 200:
            counts.error(f"stream {resp.status}: {(await resp.text())[:200]}")
            return
        chunks = 0
        async for line in resp.content:
            if line.startswith(b"data: [DONE]"):
                return
            if line.startswith(b"data: "):
                chunks += 1
                if b'"error"' in line:
                    counts.error(f"in-band error: {line[:200]!r}")
                    return
                if drop_after is not None and chunks >= drop_after:
                    resp.close()  # the client goes away: connection closed mid-stream
                    return
        counts.error("stream ended without [DONE]")


class StuckReporter:
    """A request open longer than `after_s` makes the frontend list its in-flight requests
    and request-plane connections in its log (`kill -USR1`), at most every `after_s`."""

    def __init__(self, frontend_pid: int, after_s: float) -> None:
        self.pid, self.after_s = frontend_pid, after_s
        self.reports: list[float] = []  # since the load began
        self._last = -after_s
        self._began = time.monotonic()

    def fire(self) -> None:
        now = time.monotonic() - self._began
        if now - self._last < self.after_s:
            return
        self._last = now
        self.reports.append(round(now, 1))
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGUSR1)


async def client_loop(
    session: aiohttp.ClientSession,
    url: str,
    seed: int,
    counts: Counts,
    running: asyncio.Event,
    stop: asyncio.Event,
    stuck: StuckReporter,
) -> None:
    rng = random.Random(seed)
    loop = asyncio.get_running_loop()
    while not stop.is_set():
        await running.wait()
        kind = rng.choices(KINDS, WEIGHTS)[0]
        timer = loop.call_later(stuck.after_s, stuck.fire)
        try:
            await one_request(session, url, kind, rng, counts)
        except (TimeoutError, aiohttp.ClientError) as exc:
            counts.error(f"{kind}: {type(exc).__name__}: {exc}")
        finally:
            timer.cancel()


async def idle_snapshot(
    servers: list[Server], running: asyncio.Event
) -> dict[str, dict[str, float | int | None]]:
    """Pause the load, let the servers settle, read fds/threads/tasks."""
    running.clear()
    await asyncio.sleep(5)  # requests finish; cancelled ones are cleaned up; probes refresh
    return snapshot(servers)


def rss_points(samples: list[dict[str, Any]], name: str) -> list[tuple[int, float]]:
    return [(int(x["requests"]), float(x["rss_mb"][name])) for x in samples]


def slope_per_100k(points: list[tuple[int, float]]) -> float:
    """Least-squares slope of RSS (MB) over requests, times 100,000."""
    n = len(points)
    if n < 2:
        return float("nan")
    mx = sum(x for x, _ in points) / n
    my = sum(y for _, y in points) / n
    sxx = sum((x - mx) ** 2 for x, _ in points)
    if sxx == 0:
        return float("nan")
    return sum((x - mx) * (y - my) for x, y in points) / sxx * 100_000


async def run(args: argparse.Namespace) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="dynamo-soak-"))
    procs = Procs({"DYN_FILE_KV": str(tmp / "kv"), "DYN_NAMESPACE": "soak"})
    try:
        front = await asyncio.create_subprocess_exec(
            sys.executable, str(PROBE), str(tmp / "frontend.tasks"), "dynamo.frontend",
            "--http-host", "127.0.0.1", "--http-port", "0", "--router-mode", "kv",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
            env={**os.environ, **procs.env, "PYTHONUNBUFFERED": "1"}, start_new_session=True,
        )  # fmt: skip
        procs.children.append(front)
        url = (await read_until(front, FRONTEND_LISTENING)).decode()
        procs.drain(front, tmp / "frontend.log")
        mocker = await asyncio.create_subprocess_exec(
            sys.executable, str(PROBE), str(tmp / "mocker.tasks"),
            *mocker_args(model_name=MODEL, num_workers=args.workers,
                         speedup_ratio=args.speedup_ratio),
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
            env={**os.environ, **procs.env, "PYTHONUNBUFFERED": "1"}, start_new_session=True,
        )  # fmt: skip
        procs.children.append(mocker)
        procs.drain(mocker, tmp / "mocker.log")
        await procs.wait_for_instances(url, args.workers, timeout_s=120)
        servers = [
            Server("frontend", front.pid, tmp / "frontend.tasks"),
            Server("mocker", mocker.pid, tmp / "mocker.tasks"),
        ]
        counts, running, stop = Counts(), asyncio.Event(), asyncio.Event()
        stuck = StuckReporter(front.pid, args.stuck_s)
        # idle keep-alive connections close after 1 s, so the paused snapshots (5 s) do not
        # count the client pool's connections as the server's fds and tasks
        connector = aiohttp.TCPConnector(limit=args.concurrency, keepalive_timeout=1.0)
        timeout = aiohttp.ClientTimeout(total=120)
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
            loops = [
                asyncio.create_task(client_loop(session, url, i, counts, running, stop, stuck))
                for i in range(args.concurrency)
            ]
            running.set()
            await asyncio.sleep(args.warmup_s)
            start_idle = await idle_snapshot(servers, running)
            began, start_requests = time.monotonic(), counts.total
            warmup_sent, warmup_errors = dict(counts.sent), counts.errors
            samples: list[dict[str, Any]] = []
            running.set()
            deadline = began + args.minutes * 60
            while time.monotonic() < deadline:
                await procs.check_alive()
                sample = {
                    "t_s": round(time.monotonic() - began, 1),
                    "requests": counts.total - start_requests,
                    "rss_mb": {s.name: round(rss_mb(s.pid), 1) for s in servers},
                    "load_1m": round(os.getloadavg()[0], 1),
                }
                samples.append(sample)
                if args.verbose:
                    print(json.dumps(sample), flush=True)
                await asyncio.sleep(min(args.sample_s, max(0.0, deadline - time.monotonic())))
            elapsed = time.monotonic() - began
            requests = counts.total - start_requests
            samples.append({
                "t_s": round(elapsed, 1), "requests": requests,
                "rss_mb": {s.name: round(rss_mb(s.pid), 1) for s in servers},
            })  # fmt: skip
            end_idle = await idle_snapshot(servers, running)
            os.kill(front.pid, signal.SIGUSR1)  # what is still open at the end, in its log
            stop.set()
            running.set()
            for task in loops:
                task.cancel()
            await asyncio.gather(*loops, return_exceptions=True)
        half = [x for x in samples if x["t_s"] >= elapsed / 2]
        growth = {s.name: slope_per_100k(rss_points(samples, s.name)) for s in servers}
        late_growth = {s.name: slope_per_100k(rss_points(half, s.name)) for s in servers}
        return {
            "minutes": round(elapsed / 60, 2),
            "requests": requests,
            "requests_per_s": round(requests / elapsed, 1),
            "sent": {k: n - warmup_sent[k] for k, n in counts.sent.items()},
            "errors": counts.errors - warmup_errors,
            "warmup_errors": warmup_errors,
            "error_samples": counts.error_samples,
            "error_times_s": counts.error_times_s,
            "logs": str(tmp),
            "stuck_reports_s": stuck.reports,
            "load_1m": [x.get("load_1m") for x in samples if "load_1m" in x],
            "start": start_idle,
            "end": end_idle,
            "rss_growth_mb_per_100k": {k: round(v, 2) for k, v in growth.items()},
            "rss_growth_mb_per_100k_second_half": {k: round(v, 2) for k, v in late_growth.items()},
            "samples": samples,
            "concurrency": args.concurrency,
            "stuck_s": args.stuck_s,
            "workers": args.workers,
        }
    finally:
        await procs.stop_all()


def report(result: dict[str, Any]) -> None:
    print(
        f"soak: {result['minutes']} min, {result['requests']} requests "
        f"({result['requests_per_s']} req/s, concurrency {result['concurrency']}), "
        f"mix {result['sent']}, errors {result['errors']} (warm-up: {result['warmup_errors']})"
    )
    for sample in result["error_samples"]:
        print(f"  error: {sample}")
    print(f"server logs: {result['logs']}")
    loads = result["load_1m"]
    if loads:
        mean = sum(loads) / len(loads)
        print(f"load average (1 min): {min(loads)}-{max(loads)}, mean {mean:.1f}")
    if result["stuck_reports_s"]:
        print(
            f"requests open > {result['stuck_s']:g} s at {result['stuck_reports_s']} s: the "
            "frontend listed its in-flight requests in its log (SIGUSR1)"
        )
    start, end = result["start"], result["end"]
    growth = result["rss_growth_mb_per_100k"]
    late = result["rss_growth_mb_per_100k_second_half"]
    print(
        f"{'process':10} {'RSS start MB':>12} {'RSS end MB':>10} {'MB/100k req':>11} "
        f"{'2nd half':>8} "
        f"{'fds':>9} {'threads':>9} {'tasks':>9}"
    )
    for name in start:
        s, e = start[name], end[name]
        print(
            f"{name:10} {s['rss_mb']:12.1f} {e['rss_mb']:10.1f} {growth[name]:11.2f} "
            f"{late[name]:8.2f} "
            f"{s['fds']:>4}->{e['fds']:<4} {s['threads']:>4}->{e['threads']:<4} "
            f"{s['tasks']!s:>4}->{e['tasks']!s:<4}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--workers", type=int, default=2, help="mocker engines (one process)")
    parser.add_argument("--speedup-ratio", type=float, default=50.0)
    parser.add_argument("--warmup-s", type=float, default=30.0)
    parser.add_argument("--sample-s", type=float, default=10.0)
    parser.add_argument("--json-out", type=Path)
    parser.add_argument(
        "--stuck-s",
        type=float,
        default=30.0,
        help="a request open this long makes the frontend log its in-flight requests",
    )
    parser.add_argument("--verbose", action="store_true", help="print every sample")
    args = parser.parse_args()
    result = asyncio.run(run(args))
    report(result)
    if args.json_out is not None:
        args.json_out.write_text(json.dumps(result, indent=1))
    sys.exit(1 if result["errors"] or result["warmup_errors"] else 0)


if __name__ == "__main__":
    main()
