"""Hostile clients over raw sockets: slow-loris headers and bodies, a client that never reads
its stream, idle keep-alive connections, bodies at the size limit, deeply nested JSON. Each is
bounded by a timeout or limit of `FrontendConfig`, and the frontend serves others meanwhile."""

from __future__ import annotations

import asyncio
import contextlib
import resource
import shutil
import socket
import ssl
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import openai
import orjson
import pytest

from dynamo.frontend.connections import RESERVED_FDS, connection_limit
from dynamo.frontend.server import Frontend
from dynamo.testing.fake_worker import FakeRuntime, FakeWorker
from dynamo.testing.frontend_harness import (
    MODEL,
    Harness,
    start_frontend,
    tiny_card,
    wait_until,
)

TIMEOUT_S = 1.0  # keep-alive, body and write timeouts of the frontend under test
BOUND_S = 30.0  # how long a test waits for the frontend to act (a bound, not a measurement)
BODY_LIMIT = 4096


@pytest.fixture
async def hostile(runtime: FakeRuntime) -> AsyncIterator[Harness]:
    frontend = await start_frontend(
        runtime,
        http_keepalive_timeout_s=TIMEOUT_S,
        http_body_timeout_s=TIMEOUT_S,
        http_write_timeout_s=TIMEOUT_S,
        max_request_body_bytes=BODY_LIMIT,
    )
    yield Harness(runtime, frontend)
    await frontend.stop()


@pytest.fixture
async def worker(hostile: Harness) -> FakeWorker:
    return await hostile.add(FakeWorker(tiny_card(context_length=1_000_000), chunk_tokens=64))


@pytest.fixture
async def client(hostile: Harness, worker: FakeWorker) -> AsyncIterator[openai.AsyncOpenAI]:
    c = openai.AsyncOpenAI(base_url=hostile.url + "/v1", api_key="unused", max_retries=0)
    yield c
    await c.close()


async def connect(
    frontend: Frontend, *, rcvbuf: int | None = None
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if rcvbuf is not None:  # before connect, so the window stays small
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", frontend.port))
    return await asyncio.open_connection(sock=sock)


async def closed_by_server(reader: asyncio.StreamReader) -> bytes:
    """Everything the server sends until it closes the connection (bounded)."""
    data = b""
    async with asyncio.timeout(BOUND_S):
        with contextlib.suppress(ConnectionResetError):
            while chunk := await reader.read(65536):
                data += chunk
    return data


async def served(client: openai.AsyncOpenAI) -> None:
    resp = await client.completions.create(model=MODEL, prompt="hello", max_tokens=2)
    assert resp.choices[0].finish_reason == "length"


def request_head(path: str, length: int) -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
        f"Content-Length: {length}\r\n\r\n"
    ).encode()


async def test_slow_loris_headers_are_closed(hostile: Harness, client: openai.AsyncOpenAI) -> None:
    reader, writer = await connect(hostile.frontend)
    writer.write(b"POST /v1/completions HTTP/1.1\r\nHost: test\r\n")

    async def drip() -> None:  # one header byte every 100 ms, never the end of the headers
        with contextlib.suppress(ConnectionError):
            for i in range(10_000):
                writer.write(b"X-Slow-%d: y\r\n" % i if i % 20 == 0 else b"")
                writer.write(b"a")
                await writer.drain()
                await asyncio.sleep(0.1)

    dripping = asyncio.create_task(drip())
    try:
        await served(client)  # others are served while the loris holds its connection
        assert await closed_by_server(reader) == b""  # closed without a response
    finally:
        dripping.cancel()
        writer.close()


async def test_slow_loris_after_a_first_request_is_closed(hostile: Harness) -> None:
    reader, writer = await connect(hostile.frontend)
    try:
        writer.write(b"GET /live HTTP/1.1\r\nHost: test\r\n\r\n")
        assert (await reader.readuntil(b'Service is live"}')).startswith(b"HTTP/1.1 200 ")
        writer.write(b"GET /live HTTP/1.1\r\n")  # the next request's headers never end
        for _ in range(5):
            writer.write(b"X-Slow: y\r\n")
            await writer.drain()
            await asyncio.sleep(0.1)
        assert await closed_by_server(reader) == b""
    finally:
        writer.close()


async def test_slow_body_gets_408_and_the_connection_closes(
    hostile: Harness, client: openai.AsyncOpenAI
) -> None:
    reader, writer = await connect(hostile.frontend)
    writer.write(request_head("/v1/completions", 1000) + b'{"model": "tiny", ')
    await writer.drain()
    await served(client)
    raw = await closed_by_server(reader)
    writer.close()
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408 ")
    assert b"Connection: close" in head
    err = orjson.loads(body)["error"]
    assert err["code"] == "request_timeout"
    assert err["message"] == "The request body did not arrive within 1 s"


async def test_client_that_never_reads_its_stream_is_dropped(
    hostile: Harness, worker: FakeWorker, client: openai.AsyncOpenAI
) -> None:
    _, writer = await connect(hostile.frontend, rcvbuf=4096)
    body = orjson.dumps(
        {"model": MODEL, "prompt": "a b c d e f g h", "max_tokens": 900_000, "stream": True}
    )
    writer.write(request_head("/v1/completions", len(body)) + body)
    await writer.drain()
    await wait_until(lambda: bool(worker.active), what="the stream to start")
    # never read: the frontend's buffers fill, the write timeout drops the client, and
    # closing the stream cancels the work on the worker
    await wait_until(lambda: bool(worker.cancelled), what="the worker's stream cancelled")
    assert not worker.active
    assert hostile.metric("dynamo_frontend_disconnected_clients") == 1
    await served(client)
    writer.close()


async def test_idle_keep_alive_connections_are_closed(
    hostile: Harness, client: openai.AsyncOpenAI
) -> None:
    # one connection makes a request first: kept alive after its response, then idle
    reader, writer = await connect(hostile.frontend)
    conns = [(reader, writer)]
    try:
        writer.write(b"GET /live HTTP/1.1\r\nHost: test\r\n\r\n")
        assert (await reader.readuntil(b'Service is live"}')).startswith(b"HTTP/1.1 200 ")
        conns += [await connect(hostile.frontend) for _ in range(500)]  # never send anything
        await served(client)
        results = await asyncio.gather(*(closed_by_server(r) for r, _ in conns))
        assert results == [b""] * len(conns)
        await served(client)
    finally:
        for _, w in conns:
            w.close()


async def test_body_at_the_size_limit_is_read_one_byte_more_is_413(
    hostile: Harness, worker: FakeWorker
) -> None:
    prefix = b'{"model": "tiny", "prompt": "hello", "max_tokens": 2}'
    at_limit = prefix + b" " * (BODY_LIMIT - len(prefix))
    assert len(at_limit) == BODY_LIMIT
    for body, status in ((at_limit, b"200"), (at_limit + b" ", b"413")):
        reader, writer = await connect(hostile.frontend)
        writer.write(request_head("/v1/completions", len(body)) + body)
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), BOUND_S)
        assert head.startswith(b"HTTP/1.1 " + status + b" ")
        length = int(head.split(b"Content-Length: ")[1].split(b"\r\n")[0])
        answer = orjson.loads(await reader.readexactly(length))
        if status == b"413":
            assert answer["error"]["type"] == "invalid_request_error"
            assert answer["error"]["message"].startswith("Maximum request body size 4096 exceeded")
        else:
            assert answer["choices"][0]["finish_reason"] == "length"
        writer.close()


@pytest.mark.parametrize("path", ["/v1/completions", "/v1/chat/completions", "/busy_threshold"])
async def test_deeply_nested_json_is_a_400(
    hostile: Harness, client: openai.AsyncOpenAI, path: str
) -> None:
    depth = 2000  # fits under the body limit; parsers stop far earlier
    body = b'{"model": "tiny", "prompt": ' + b"[" * depth + b"]" * depth + b"}"
    reader, writer = await connect(hostile.frontend)
    writer.write(request_head(path, len(body)) + body)
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), BOUND_S)
    assert head.startswith(b"HTTP/1.1 400 ")
    length = int(head.split(b"Content-Length: ")[1].split(b"\r\n")[0])
    message = orjson.loads(await reader.readexactly(length))["error"]["message"]
    assert message.startswith("Invalid JSON body: ")
    assert "limit exceeded" in message  # pydantic: recursion, orjson: depth
    writer.close()
    await served(client)


def test_connection_limit_defaults_below_the_open_file_limit() -> None:
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    assert connection_limit(500) == 500
    expected = soft - RESERVED_FDS if soft > 2 * RESERVED_FDS else max(1, soft // 2)
    assert connection_limit(0) == expected


async def test_connections_past_the_cap_get_503_and_others_are_still_served(
    runtime: FakeRuntime,
) -> None:
    frontend = await start_frontend(runtime, http_max_connections=20)
    harness = Harness(runtime, frontend)
    conns: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
    try:
        await harness.add(FakeWorker(tiny_card()))
        conns = [await connect(frontend) for _ in range(20)]
        await wait_until(lambda: len(frontend.connections()) == 20, what="20 connections held")
        reader, writer = await connect(frontend)
        conns.append((reader, writer))
        writer.write(b"GET /live HTTP/1.1\r\nHost: test\r\n\r\n")  # not read, not answered
        raw = await closed_by_server(reader)
        head, _, body = raw.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 503 ")
        assert orjson.loads(body)["error"]["code"] == "too_many_connections"
        async with openai.AsyncOpenAI(
            base_url=frontend.url + "/v1", api_key="unused", max_retries=0
        ) as c:
            with pytest.raises(openai.InternalServerError) as info:
                await served(c)
        assert info.value.status_code == 503
        assert info.value.code == "too_many_connections"
        # a held connection is served as usual
        reader, writer = conns[0]
        writer.write(b"GET /live HTTP/1.1\r\nHost: test\r\n\r\n")
        assert (await reader.readuntil(b'Service is live"}')).startswith(b"HTTP/1.1 200 ")
        for _, w in conns[1:]:
            w.close()
        await wait_until(lambda: len(frontend.connections()) <= 1, what="connections closed")
        async with openai.AsyncOpenAI(
            base_url=frontend.url + "/v1", api_key="unused", max_retries=0
        ) as c:
            await served(c)
    finally:
        for _, w in conns:
            w.close()
        await frontend.stop()


@pytest.fixture
def self_signed(tmp_path: Path) -> tuple[Path, Path]:
    if shutil.which("openssl") is None:
        pytest.skip("needs the openssl command")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    return cert, key


async def test_tls_is_served_through_the_capped_listener(
    runtime: FakeRuntime, self_signed: tuple[Path, Path]
) -> None:
    cert, key = self_signed
    frontend = await start_frontend(runtime, tls_cert_path=str(cert), tls_key_path=str(key))
    try:
        await Harness(runtime, frontend).add(FakeWorker(tiny_card()))
        assert frontend.url.startswith("https://")
        http = openai.DefaultAsyncHttpxClient(verify=ssl.create_default_context(cafile=str(cert)))
        async with openai.AsyncOpenAI(
            base_url=frontend.url + "/v1", api_key="unused", max_retries=0, http_client=http
        ) as c:
            await served(c)
    finally:
        await frontend.stop()
