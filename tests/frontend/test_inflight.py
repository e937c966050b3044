"""In-flight requests with their age and state, listed on SIGUSR1 (`dynamo.frontend.inflight`)."""

from __future__ import annotations

import asyncio
import signal

import aiohttp

from dynamo.frontend.inflight import InflightRequests, task_summary
from dynamo.testing.fake_worker import FakeWorker
from dynamo.testing.frontend_harness import MODEL, Harness, tiny_card, wait_until
from dynamo.testing.processes import FRONTEND_LISTENING, Procs, read_until

STREAM = {
    "model": MODEL,
    "messages": [{"role": "user", "content": "one two three four"}],
    "max_tokens": 40,
    "stream": True,
}


def test_requests_are_listed_oldest_first_while_open() -> None:
    inflight = InflightRequests()
    with inflight.track("a", "/v1/chat/completions") as a:
        with inflight.track("b", "/v1/completions") as b:
            b.state = "waiting on worker"
            b.wrote()
            assert [r.request_id for r in inflight.oldest_first()] == ["a", "b"]
            report = inflight.report(["request plane tcp://x: 1 streams, open"])
            lines = report.splitlines()
            assert lines[0] == "2 requests in flight"
            assert lines[1].startswith("  a /v1/chat/completions age ")
            assert "reading body, 0 chunks sent" in lines[1]
            assert "waiting on worker, 1 chunks sent (last " in lines[2]
            assert lines[3] == "request plane tcp://x: 1 streams, open"
        assert len(inflight) == 1
        assert a.state == "reading body"
    assert len(inflight) == 0
    assert inflight.report() == "0 requests in flight"


async def test_task_summary_counts_tasks_by_coroutine() -> None:
    async def parked() -> None:
        await asyncio.sleep(60)

    tasks = [asyncio.create_task(parked()) for _ in range(3)]
    await asyncio.sleep(0)
    try:
        summary = task_summary()
        assert summary.startswith("4 asyncio tasks: ")  # the 3 and this test's own
        assert "parked 3" in summary
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def test_a_stream_waiting_on_its_worker_is_listed_until_the_client_leaves(
    harness: Harness,
) -> None:
    await harness.add(FakeWorker(tiny_card(), instance_id=1, delay_s=0.5))
    inflight = harness.frontend.app.inflight
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session:
        resp = await session.post(
            harness.url + "/v1/chat/completions",
            json=STREAM,
            headers={"x-request-id": "stuck-1"},
        )
        assert resp.status == 200
        assert (await resp.content.readline()).startswith(b"data: ")

        def waiting_on_worker() -> bool:
            entries = inflight.oldest_first()
            return len(entries) == 1 and entries[0].state == "waiting on worker"

        await wait_until(waiting_on_worker, what="the stream waiting on its worker")
        (entry,) = inflight.oldest_first()
        assert (entry.request_id, entry.path) == ("stuck-1", "/v1/chat/completions")
        assert entry.chunks >= 1
        resp.close()  # the client leaves mid-stream
    await wait_until(lambda: len(inflight) == 0, what="the request to leave the list")


async def test_a_unary_request_is_preparing_until_it_is_answered(harness: Harness) -> None:
    await harness.add(FakeWorker(tiny_card(), instance_id=1, delay_s=0.2))
    inflight = harness.frontend.app.inflight
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session:
        task = asyncio.create_task(
            session.post(harness.url + "/v1/chat/completions", json={**STREAM, "stream": False})
        )
        await wait_until(
            lambda: [r.state for r in inflight.oldest_first()] == ["preparing"],
            what="the unary request preparing",
        )
        resp = await task
        assert resp.status == 200
        await resp.read()
    assert len(inflight) == 0


async def test_sigusr1_logs_the_open_requests_and_request_plane_connections(
    procs: Procs,
) -> None:
    front = await procs.spawn("dynamo.frontend", "--http-host", "127.0.0.1", "--http-port", "0")
    url = (await read_until(front, FRONTEND_LISTENING)).decode()
    lines = procs.collect(front)
    await procs.echo_worker(delay_s=0.5)
    await procs.wait_for_instances(url, 1)

    async def logged(text: str) -> str:
        for _ in range(300):
            for line in lines:
                if text in line.decode(errors="replace"):
                    return line.decode(errors="replace")
            await asyncio.sleep(0.1)
        raise AssertionError(f"{text!r} not logged; log: {b''.join(lines)!r:.2000}")

    timeout = aiohttp.ClientTimeout(total=60)
    async with (
        aiohttp.ClientSession(timeout=timeout) as session,
        session.post(
            url + "/v1/chat/completions", json=STREAM, headers={"x-request-id": "stuck-2"}
        ) as resp,
    ):
        assert resp.status == 200
        await resp.content.readline()
        front.send_signal(signal.SIGUSR1)
        await logged("1 requests in flight")
        assert "stuck-2 /v1/chat/completions age" in await logged("stuck-2")
        assert "1 streams, open" in await logged("request plane tcp://")
        assert "1 HTTP connections" in await logged("HTTP connections")
        assert "RequestHandler.start" in await logged("asyncio tasks: ")
