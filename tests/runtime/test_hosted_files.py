"""The status server serves hosted files by content hash, and nothing else; a runtime without
`--system-port` starts one on a free port for its files and stops it on shutdown."""

from __future__ import annotations

import uuid

import aiohttp
import pytest

from dynamo.runtime.config import RuntimeConfig
from dynamo.runtime.distributed import DistributedRuntime
from dynamo.runtime.hosted_files import HostedFiles, file_url, sha256_hex
from dynamo.runtime.system_server import SystemServer


async def get(url: str) -> tuple[int, bytes, str | None]:
    async with aiohttp.ClientSession() as s, s.get(url) as r:
        return r.status, await r.read(), r.headers.get("ETag")


async def test_files_are_served_by_hash_and_unknown_hashes_are_404() -> None:
    files = HostedFiles()
    digest = files.add(b'{"hello": 1}')
    assert files.add(b'{"hello": 1}') == digest and len(files) == 1
    server = SystemServer(0, list, host="127.0.0.1", files=files)
    base = f"http://127.0.0.1:{await server.start()}"
    try:
        assert await get(file_url(base, digest)) == (200, b'{"hello": 1}', f'"{digest}"')
        assert await get(file_url(base, digest.upper())) == (200, b'{"hello": 1}', f'"{digest}"')
        unknown = sha256_hex(b"something else")
        status, body, _ = await get(file_url(base, unknown))
        assert status == 404
        assert body.decode() == (
            f'{{"error": {{"message": "no file with sha256 \'{unknown}\' here", "code": 404}}}}'
        )
        for path in ("not-a-hash", "..%2F..%2Fetc%2Fpasswd", "%2Fetc%2Fpasswd", ""):
            status, _, _ = await get(f"{base}/v1/model-files/{path}")
            assert status == 404, path
    finally:
        await server.stop()


async def test_runtime_without_system_port_serves_files_on_a_free_port() -> None:
    config = RuntimeConfig(namespace=f"ns{uuid.uuid4().hex[:8]}", discovery_backend="mem")
    assert config.system_port is None
    runtime = await DistributedRuntime.create(config)
    digest = runtime.hosted_files.add(b"tokenizer")
    url = await runtime.files_url()
    assert url.startswith("http://127.0.0.1:")
    assert await runtime.files_url() == url  # one server per process
    assert await get(file_url(url, digest)) == (200, b"tokenizer", f'"{digest}"')
    assert (await get(url + "/live"))[0] == 200
    await runtime.shutdown(0)
    with pytest.raises(aiohttp.ClientConnectionError):
        await get(url + "/live")
