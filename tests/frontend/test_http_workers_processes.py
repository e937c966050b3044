"""`python -m dynamo.frontend --num-http-workers 2` over a real mocker (2 workers, KV router,
file discovery, ZMQ event plane), through the real `openai` client.

Every request opens a new connection, so the kernel spreads them over both HTTP worker
processes; each process's own metrics (its unix socket) show that both took requests.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
from pathlib import Path

import aiohttp
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

from dynamo.testing.processes import Procs, mocker_args, read_until

pytestmark = pytest.mark.slow

MODEL = "tinymodel"
READY = re.compile(
    rb"frontend listening on (http://\S+ with 2 HTTP worker processes \(pids \d+ \d+; "
    rb"each one's own metrics on the unix sockets in \S+)\)"
)
Series = dict[tuple[str, frozenset[tuple[str, str]]], float]


class Stack:
    def __init__(self, line: str) -> None:
        self.url = line.split()[0]
        self.pids = [int(p) for p in re.findall(r"pids (\d+) (\d+)", line)[0]]
        self.run_dir = Path(line.rsplit(" ", 1)[1])

    async def own_metrics(self, index: int) -> Series:
        """HTTP worker `index`'s own series (not merged)."""
        connector = aiohttp.UnixConnector(path=str(self.run_dir / f"http-worker-{index}.sock"))
        async with (
            aiohttp.ClientSession(connector=connector) as s,
            s.get("http://worker/metrics") as r,
        ):
            return parse(await r.text())

    async def metrics(self) -> Series:
        async with aiohttp.ClientSession() as s, s.get(self.url + "/metrics") as r:
            assert r.status == 200
            return parse(await r.text())


def parse(text: str) -> Series:
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def children_of(pid: int) -> set[int]:
    return {int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()}


def alive(pid: int) -> bool:
    try:
        return "zombie" not in Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False


def total(series: Series, name: str) -> float:
    return sum(v for (n, _), v in series.items() if n == name)


async def start(procs: Procs, *args: str, keep_output: bool = False) -> tuple[Stack, list[bytes]]:
    """The frontend with 2 HTTP worker processes, and its output lines if `keep_output`."""
    proc = await procs.spawn(
        "dynamo.frontend", "--http-host", "127.0.0.1", "--http-port", "0",
        "--num-http-workers", "2", *args,
    )  # fmt: skip
    stack = Stack((await read_until(proc, READY, timeout_s=120)).decode())
    output: list[bytes] = []
    if keep_output:
        output = procs.collect(proc)
    else:
        procs.drain(proc)
    return stack, output


async def completion(url: str, prompt: str) -> int:
    """Cached prompt tokens of one completion, over a new connection."""
    async with openai.AsyncOpenAI(base_url=url + "/v1", api_key="unused", max_retries=0) as c:
        resp = await c.completions.create(model=MODEL, prompt=prompt, max_tokens=2)
    assert resp.usage is not None and resp.usage.prompt_tokens_details is not None
    return resp.usage.prompt_tokens_details.cached_tokens or 0


@pytest.mark.parametrize("event_plane", ["zmq", "nats"])
async def test_a_shared_prefix_lands_where_it_is_cached_whichever_process_takes_it(
    procs: Procs, event_plane: str, request: pytest.FixtureRequest
) -> None:
    procs.env["DYN_EVENT_PLANE"] = event_plane  # zmq: publishers found through discovery
    if event_plane == "nats":
        procs.env["NATS_SERVER"] = request.getfixturevalue("nats_server").url
    stack, _ = await start(procs, "--router-mode", "kv", "--kv-cache-block-size", "16")
    mocker = await procs.spawn(*mocker_args(num_workers=2, speedup_ratio=50))
    procs.drain(mocker)
    workers = ("dynamo_frontend_model_workers", frozenset({("model", MODEL)}))
    for _ in range(600):  # both processes see both workers
        seen = [(await stack.own_metrics(i)).get(workers) for i in (0, 1)]
        if seen == [2, 2]:
            break
        await procs.check_alive()
        await asyncio.sleep(0.1)
    assert seen == [2, 2]
    async with aiohttp.ClientSession() as s:  # the same answers from whichever process
        for path in ("/v1/models", "/health"):
            answers = set()
            for _ in range(12):
                async with s.get(stack.url + path, headers={"Connection": "close"}) as r:
                    assert r.status == 200
                    answers.add(await r.read())
            assert len(answers) == 1, answers
        body = {"model": MODEL, "active_decode_blocks_threshold": 0.95}
        async with s.post(stack.url + "/busy_threshold", json=body) as r:
            assert r.status == 200
        for _ in range(12):  # set through one process, held by both
            async with s.get(stack.url + "/busy_threshold", headers={"Connection": "close"}) as r:
                rows = (await r.json())["thresholds"]
            assert rows[0]["active_decode_blocks_threshold"] == 0.95, rows

    prefixes = [f"document {k}: " + " ".join(f"w{k}x{j}" for j in range(40)) for k in range(6)]
    for prefix in prefixes:  # each cached on the one worker its first request went to
        assert await completion(stack.url, prefix + " question 0") == 0
    await asyncio.sleep(1.0)  # the workers' KV events reach both processes
    cached = [
        await completion(stack.url, prefix + f" question {q}")
        for q in range(1, 5)
        for prefix in prefixes
    ]
    # every follow-up found its prefix cached: routed to the worker that holds it
    assert min(cached) >= 32, cached

    own = [await stack.own_metrics(i) for i in (0, 1)]
    taken = [total(s, "dynamo_frontend_requests_total") for s in own]
    assert min(taken) > 0 and sum(taken) == 30, taken  # both processes took requests
    merged = await stack.metrics()
    assert total(merged, "dynamo_frontend_requests_total") == 30
    assert total(merged, "dynamo_frontend_output_tokens_total") == 60
    assert merged[workers] == 2  # a shared view, not doubled
    prompt = total(merged, "dynamo_frontend_input_sequence_tokens_sum")
    hits = total(merged, "dynamo_frontend_cached_tokens_sum")
    assert hits == sum(cached)
    assert merged[("dynamo_frontend_kv_hit_rate", frozenset({("model", MODEL)}))] == pytest.approx(
        hits / prompt
    )


async def test_a_killed_process_is_restarted_and_sigterm_drains_all(procs: Procs) -> None:
    stack, output = await start(procs, keep_output=True)
    supervisor = procs.children[0]
    supervisor.send_signal(signal.SIGUSR1)  # each process reports its own requests
    for _ in range(300):
        reports = b"".join(output)
        if b"HTTP worker process 0 of 2" in reports and b"HTTP worker process 1 of 2" in reports:
            break
        await asyncio.sleep(0.1)
    else:
        raise AssertionError("SIGUSR1 did not reach both HTTP worker processes")
    victim, survivor = stack.pids
    os.kill(victim, signal.SIGKILL)
    async with aiohttp.ClientSession() as s:
        for _ in range(20):  # the port keeps answering meanwhile (a new connection each time)
            async with s.get(stack.url + "/live", headers={"Connection": "close"}) as r:
                assert r.status == 200
        for _ in range(1200):  # a new process took the dead one's slot
            pids = children_of(supervisor.pid)
            if len(pids) == 2 and victim not in pids:
                break
            await asyncio.sleep(0.1)
        assert survivor in pids and len(pids) == 2 and victim not in pids
        for _ in range(600):  # ... and serves: its own metrics answer on its socket
            with contextlib.suppress(aiohttp.ClientError, OSError):
                await stack.own_metrics(0)  # the victim was process 0
                break
            await asyncio.sleep(0.1)
        else:
            raise AssertionError("the restarted HTTP worker never served")
        for _ in range(10):
            async with s.get(stack.url + "/v1/models", headers={"Connection": "close"}) as r:
                assert r.status == 200
    supervisor.send_signal(signal.SIGTERM)
    assert await asyncio.wait_for(supervisor.wait(), 60) == 0
    assert not [pid for pid in pids if alive(pid)]  # every HTTP worker process went with it
    assert b"HTTP worker 0 exited with -9: restarting it" in b"".join(output)
