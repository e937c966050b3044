"""The frontend's model files: fetched from any worker listing the hash (the next one on a
404, a wrong hash or a dead server), verified, cached on disk by hash, retried after a pause."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from dynamo.frontend.model_files import ModelFileFetcher, ModelFilesError, worker_urls
from dynamo.frontend.preprocessor_cache import PreprocessorCache
from dynamo.mocker.tinymodel import tiny_model_path
from dynamo.protocols.model_card import ModelCard, ModelFile
from dynamo.runtime.errors import UnavailableError
from dynamo.runtime.hosted_files import HostedFiles, file_url, sha256_hex
from dynamo.runtime.system_server import SystemServer
from dynamo.testing.fake_worker import FakeRuntime, FakeWorker
from dynamo.testing.frontend_harness import Harness, start_frontend

TOKENIZER = (Path(tiny_model_path()) / "tokenizer.json").read_bytes()
REF = ModelFile(name="tokenizer.json", size_bytes=len(TOKENIZER), sha256=sha256_hex(TOKENIZER))


class Worker:
    """A real status server hosting some files."""

    def __init__(self) -> None:
        self.files = HostedFiles()
        self.server = SystemServer(0, list, host="127.0.0.1", files=self.files)
        self.url = ""

    async def start(self) -> Worker:
        self.url = f"http://127.0.0.1:{await self.server.start()}"
        return self


@pytest.fixture
async def workers() -> AsyncIterator[list[Worker]]:
    started: list[Worker] = []
    yield started
    for w in started:
        await w.server.stop()


async def worker(workers: list[Worker], *contents: bytes) -> Worker:
    w = await Worker().start()
    for data in contents:
        w.files.add(data)
    workers.append(w)
    return w


@pytest.fixture
async def liar() -> AsyncIterator[tuple[str, list[str]]]:
    """A server answering every file with the same wrong content; it records each path."""
    seen: list[str] = []

    async def handler(request: web.Request) -> web.Response:
        seen.append(request.path)
        return web.Response(body=TOKENIZER.replace(b"<unk>", b"<bad>"))

    app = web.Application()
    app.router.add_get("/{tail:.*}", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    yield f"http://127.0.0.1:{runner.addresses[0][1]}", seen
    await runner.cleanup()


@pytest.fixture
async def fetcher(tmp_path: Path) -> AsyncIterator[ModelFileFetcher]:
    f = ModelFileFetcher(tmp_path / "cache", allow_hub=False)
    yield f
    await f.close()


def card(*files_urls: str | None, name: str = "m") -> list[ModelCard]:
    return [ModelCard(name=name, files=[REF], files_url=u) for u in files_urls]


async def test_a_wrong_hash_is_rejected_and_the_next_worker_is_tried(
    fetcher: ModelFileFetcher, workers: list[Worker], liar: tuple[str, list[str]]
) -> None:
    liar_url, seen = liar
    good = await worker(workers, TOKENIZER)
    cards = card(liar_url, good.url)
    assert worker_urls(REF, cards) == [
        file_url(liar_url, REF.sha256),
        file_url(good.url, REF.sha256),
    ]
    assert await fetcher.fetch_model(cards[0], cards) == {"tokenizer.json": TOKENIZER}
    assert seen == [f"/v1/model-files/{REF.sha256}"]


async def test_an_unknown_hash_404_and_a_dead_worker_fall_through_to_the_next(
    fetcher: ModelFileFetcher, workers: list[Worker]
) -> None:
    empty = await worker(workers)  # a worker that does not have the file: 404
    dead = await worker(workers)
    await dead.server.stop()
    good = await worker(workers, TOKENIZER)
    urls = [file_url(w.url, REF.sha256) for w in (empty, dead, good)]
    assert await fetcher.fetch(REF, urls, None) == TOKENIZER


async def test_when_every_source_fails_the_error_says_what_was_tried(
    fetcher: ModelFileFetcher, workers: list[Worker], liar: tuple[str, list[str]]
) -> None:
    empty = await worker(workers)
    urls = [file_url(empty.url, REF.sha256), file_url(liar[0], REF.sha256)]
    with pytest.raises(ModelFilesError) as info:
        await fetcher.fetch(REF, urls, "org/model")
    message = str(info.value)
    assert message.startswith(f"cannot get tokenizer.json (sha256 {REF.sha256[:12]}…): ")
    assert f"{urls[0]}: HTTP 404" in message
    assert f"{urls[1]}: tokenizer.json has {len(TOKENIZER)} bytes with sha256 " in message
    assert message.endswith("hub repo org/model not tried (offline)")
    assert isinstance(info.value, UnavailableError)  # retry later: a 503 for clients
    with pytest.raises(ModelFilesError, match=r"no live worker lists it$"):
        await fetcher.fetch(REF, [], None)


async def test_a_body_longer_than_the_card_says_is_rejected(
    fetcher: ModelFileFetcher, workers: list[Worker]
) -> None:
    longer = TOKENIZER + b" "
    w = await worker(workers, longer)
    short = ModelFile(name="tokenizer.json", size_bytes=len(TOKENIZER), sha256=sha256_hex(longer))
    with pytest.raises(ModelFilesError, match=f"longer than the card's {len(TOKENIZER)} bytes"):
        await fetcher.fetch(short, [file_url(w.url, short.sha256)], None)


async def test_the_disk_cache_serves_a_restarted_frontend_without_any_worker(
    tmp_path: Path, workers: list[Worker]
) -> None:
    w = await worker(workers, TOKENIZER)
    first = ModelFileFetcher(tmp_path / "cache")
    assert await first.fetch(REF, [file_url(w.url, REF.sha256)], None) == TOKENIZER
    await first.close()
    await w.server.stop()
    assert (tmp_path / "cache" / REF.sha256).read_bytes() == TOKENIZER
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == [REF.sha256]

    restarted = ModelFileFetcher(tmp_path / "cache")
    other_model = ModelCard(name="other", files=[REF], files_url=w.url)  # same tokenizer
    assert await restarted.fetch_model(other_model, [other_model]) == {"tokenizer.json": TOKENIZER}
    await restarted.close()


async def test_a_damaged_cache_entry_is_fetched_again(
    tmp_path: Path, workers: list[Worker]
) -> None:
    (tmp_path / "cache").mkdir()
    (tmp_path / "cache" / REF.sha256).write_bytes(b"truncated")
    w = await worker(workers, TOKENIZER)
    fetcher = ModelFileFetcher(tmp_path / "cache")
    assert await fetcher.fetch(REF, [file_url(w.url, REF.sha256)], None) == TOKENIZER
    await fetcher.close()
    assert (tmp_path / "cache" / REF.sha256).read_bytes() == TOKENIZER


async def test_one_download_per_hash_however_many_wait(
    fetcher: ModelFileFetcher, liar: tuple[str, list[str]], workers: list[Worker]
) -> None:
    liar_url, seen = liar
    good = await worker(workers, TOKENIZER)
    urls = [file_url(liar_url, REF.sha256), file_url(good.url, REF.sha256)]
    got = await asyncio.gather(*(fetcher.fetch(REF, urls, None) for _ in range(5)))
    assert got == [TOKENIZER] * 5
    assert len(seen) == 1
    assert await fetcher.fetch(REF, urls, None) == TOKENIZER  # from memory now
    assert len(seen) == 1


async def test_a_failed_load_is_answered_from_memory_then_retried_with_backoff(
    tmp_path: Path, workers: list[Worker]
) -> None:
    now = [100.0]
    w = await worker(workers)  # does not have the tokenizer yet
    cache = PreprocessorCache(
        1, files=ModelFileFetcher(tmp_path / "cache"), retry_after_s=1.0, clock=lambda: now[0]
    )
    model = ModelCard(name="m", files=[REF], files_url=w.url)
    try:
        with pytest.raises(ModelFilesError, match="HTTP 404"):
            await cache.get(model, lambda: [model])
        w.files.add(TOKENIZER)
        now[0] += 0.9
        with pytest.raises(ModelFilesError, match="HTTP 404"):  # not asked again yet
            await cache.get(model, lambda: [model])
        now[0] += 0.1
        pre = await cache.get(model, lambda: [model])
        assert pre.tokenizer.decode(pre.encode("hello world")) == "hello world"
    finally:
        await cache.close()


async def test_backoff_doubles_per_failure(tmp_path: Path, workers: list[Worker]) -> None:
    now = [0.0]
    w = await worker(workers)
    cache = PreprocessorCache(
        1, files=ModelFileFetcher(None), retry_after_s=1.0, clock=lambda: now[0]
    )
    model = ModelCard(name="m", files=[REF], files_url=w.url)
    try:
        for pause_s in (1.0, 2.0, 4.0):
            with pytest.raises(ModelFilesError):
                await cache.get(model, lambda: [model])  # a real attempt
            if pause_s == 4.0:
                w.files.add(TOKENIZER)
            now[0] += pause_s - 0.01
            with pytest.raises(ModelFilesError):
                await cache.get(model, lambda: [model])  # the stored failure, nothing fetched
            now[0] += 0.01
        assert (await cache.get(model, lambda: [model])).vocab_size == 2048
    finally:
        await cache.close()


async def test_an_unwritable_cache_dir_falls_back_to_memory(
    tmp_path: Path, workers: list[Worker]
) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    w = await worker(workers, TOKENIZER)
    fetcher = ModelFileFetcher(blocker / "cache")
    assert await fetcher.fetch(REF, [file_url(w.url, REF.sha256)], None) == TOKENIZER
    await w.server.stop()
    assert await fetcher.fetch(REF, [], None) == TOKENIZER
    await fetcher.close()


async def test_a_model_whose_files_cannot_be_had_is_a_503_until_a_worker_serves_them(
    tmp_path: Path, workers: list[Worker]
) -> None:
    runtime = FakeRuntime()
    frontend = await start_frontend(runtime, model_files_cache=str(tmp_path / "cache"))
    harness = Harness(runtime, frontend)
    gone = await worker(workers)
    await gone.server.stop()
    body = {"model": "m", "messages": [{"role": "user", "content": "hello world"}]}
    try:
        await harness.add(FakeWorker(card(gone.url)[0]))
        async with aiohttp.ClientSession() as s:
            async with s.post(harness.url + "/v1/chat/completions", json=body) as r:
                assert r.status == 503
                err = (await r.json())["error"]
            assert set(err) == {"message", "type", "param", "code"}
            assert err["code"] == "service_unavailable"
            assert err["message"].startswith(
                "The model `m` cannot be served: cannot get tokenizer.json (sha256 "
            )
            dead = f"{gone.url}/v1/model-files/{REF.sha256}: ClientConnectorError"
            assert dead in err["message"]

            good = await worker(workers, TOKENIZER)
            await harness.add(FakeWorker(card(good.url)[0]))
            for _ in range(600):  # the next attempt comes after RETRY_AFTER_S
                async with s.post(harness.url + "/v1/chat/completions", json=body) as r:
                    if r.status == 200:
                        reply = await r.json()
                        break
                    assert r.status == 503
                await asyncio.sleep(0.05)
            else:
                raise AssertionError("the model never became servable")
        # The fake worker echoes the prompt's tokens, decoded with the fetched tokenizer.
        text = reply["choices"][0]["message"]["content"]
        assert text.startswith("user: hello world\nassistant: user: hello world\n")
    finally:
        await frontend.stop()


@pytest.fixture
async def hub(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> AsyncIterator[list[str]]:
    """A local stand-in for the hub's `resolve` route serving the tiny tokenizer as `org/m`."""
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", False)
    seen: list[str] = []

    async def resolve(request: web.Request) -> web.Response:
        seen.append(f"{request.method} {request.path}")
        if request.path != "/org/m/resolve/main/tokenizer.json":
            return web.Response(status=404, headers={"X-Error-Code": "EntryNotFound"})
        headers = {"X-Repo-Commit": "0" * 40, "ETag": f'"{REF.sha256}"'}
        return web.Response(body=TOKENIZER, headers=headers)

    app = web.Application()
    app.router.add_get("/{tail:.*}", resolve)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    seen.append(f"http://127.0.0.1:{runner.addresses[0][1]}")
    yield seen
    await runner.cleanup()


async def test_the_hub_is_the_fallback_when_no_worker_has_the_file(
    tmp_path: Path, hub: list[str], workers: list[Worker]
) -> None:
    endpoint = hub.pop(0)
    empty = await worker(workers)
    fetcher = ModelFileFetcher(tmp_path / "cache", hub_endpoint=endpoint)
    try:
        got = await fetcher.fetch(REF, [file_url(empty.url, REF.sha256)], "org/m")
        assert got == TOKENIZER
        assert "GET /org/m/resolve/main/tokenizer.json" in hub
        wrong = ModelFile(name="tokenizer.json", size_bytes=3, sha256=sha256_hex(b"abc"))
        with pytest.raises(ModelFilesError, match=r"hub repo org/m: tokenizer.json has \d+ bytes"):
            await fetcher.fetch(wrong, [], "org/m")
    finally:
        await fetcher.close()
