"""Fetch a model's tokenizer and config files from its workers, verify and cache them.

Each file of a card is named by its sha256. A file is looked up in memory, then in the disk
cache (`{cache_dir}/{sha256}`: content-addressed, so a restart or a second model with the same
tokenizer reuses it), then fetched from each live worker whose card lists the hash (the next
on any failure), then from the card's hub repo unless `HF_HUB_OFFLINE` is set. Whatever the
source, the content must hash to the card's sha256.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

import aiohttp

from dynamo.engines.model_resolution import hub_offline
from dynamo.protocols.model_card import ModelCard, ModelFile
from dynamo.runtime.errors import UnavailableError
from dynamo.runtime.hosted_files import file_url, sha256_hex

log = logging.getLogger(__name__)


def default_cache_dir() -> str:
    """`$XDG_CACHE_HOME/dynamo/model-files`, else `~/.cache/dynamo/model-files`."""
    root = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return str(Path(root) / "dynamo" / "model-files")


class ModelFilesError(UnavailableError):
    """A model's files could not be had from any worker, the cache or the hub (retry later)."""


def worker_urls(ref: ModelFile, cards: Sequence[ModelCard]) -> list[str]:
    """Where the workers behind `cards` serve `ref`, each once, in the cards' order."""
    urls: list[str] = []
    for card in cards:
        if card.files_url and any(f.sha256 == ref.sha256 for f in card.files):
            url = file_url(card.files_url, ref.sha256)
            if url not in urls:
                urls.append(url)
    return urls


class ModelFileFetcher:
    """One per frontend: one HTTP session, one memory cache, one disk cache directory."""

    def __init__(
        self,
        cache_dir: str | Path | None,
        *,
        timeout_s: float = 60.0,
        allow_hub: bool = True,
        hub_endpoint: str | None = None,
    ) -> None:
        self._cache_dir = Path(cache_dir) if cache_dir else None
        self._timeout = aiohttp.ClientTimeout(total=timeout_s, sock_connect=5.0)
        self._allow_hub = allow_hub
        self._hub_endpoint = hub_endpoint  # None: huggingface_hub's (HF_ENDPOINT or the hub)
        self._memory: dict[str, bytes] = {}
        self._pending: dict[str, asyncio.Task[bytes]] = {}
        self._session: aiohttp.ClientSession | None = None

    async def fetch_model(self, card: ModelCard, peers: Sequence[ModelCard]) -> dict[str, bytes]:
        """name -> content of every file `card` lists; `peers` are the model's live cards."""
        cards = [card, *(p for p in peers if p is not card)]
        contents = await asyncio.gather(
            *(self.fetch(ref, worker_urls(ref, cards), card.hub_repo) for ref in card.files)
        )
        return {ref.name: data for ref, data in zip(card.files, contents, strict=True)}

    async def fetch(self, ref: ModelFile, urls: Sequence[str], hub_repo: str | None) -> bytes:
        """The verified content of `ref`; raises ModelFilesError naming what was tried."""
        cached = self._memory.get(ref.sha256)
        if cached is not None:
            return cached
        task = self._pending.get(ref.sha256)
        if task is None:  # one download per hash, however many models wait for it
            task = asyncio.ensure_future(self._obtain(ref, list(urls), hub_repo))
            self._pending[ref.sha256] = task
            task.add_done_callback(lambda t: self._settled(ref.sha256, t))
        return await asyncio.shield(task)

    def _settled(self, sha256: str, task: asyncio.Task[bytes]) -> None:
        self._pending.pop(sha256, None)
        if not task.cancelled():
            task.exception()  # retrieved here: the waiters may all have gone

    async def close(self) -> None:
        pending = list(self._pending.values())
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _obtain(self, ref: ModelFile, urls: list[str], hub_repo: str | None) -> bytes:
        data = await asyncio.to_thread(self._read_cache, ref)
        if data is None:
            data = await self._download(ref, urls, hub_repo)
            await asyncio.to_thread(self._write_cache, ref, data)
        self._memory[ref.sha256] = data
        return data

    async def _download(self, ref: ModelFile, urls: list[str], hub_repo: str | None) -> bytes:
        tried: list[str] = []
        for url in urls:
            try:
                data = await self._get(url, ref.size_bytes)
                return await asyncio.to_thread(_verified, ref, data, url)  # hashing takes ms/MB
            except ModelFilesError as exc:
                log.warning("%s", exc)
                tried.append(str(exc))
        if not urls:
            tried.append("no live worker lists it")
        if hub_repo and (not self._allow_hub or hub_offline()):
            tried.append(f"hub repo {hub_repo} not tried (offline)")
        elif hub_repo:
            try:
                data = await asyncio.to_thread(_hub_file, hub_repo, ref.name, self._hub_endpoint)
                return await asyncio.to_thread(_verified, ref, data, f"hub repo {hub_repo}")
            except ModelFilesError as exc:
                tried.append(str(exc))
        what = f"cannot get {ref.name} (sha256 {ref.sha256[:12]}…)"
        raise ModelFilesError(f"{what}: " + "; ".join(tried))

    async def _get(self, url: str, size_bytes: int) -> bytes:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self._timeout)
        try:
            async with self._session.get(url) as resp:
                if resp.status != 200:
                    raise ModelFilesError(f"{url}: HTTP {resp.status}")
                data = bytearray()
                async for chunk in resp.content.iter_chunked(1 << 16):
                    data += chunk
                    if len(data) > size_bytes:  # never read an unbounded body
                        raise ModelFilesError(f"{url}: longer than the card's {size_bytes} bytes")
                return bytes(data)
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise ModelFilesError(f"{url}: {type(exc).__name__}: {exc}") from exc

    def _read_cache(self, ref: ModelFile) -> bytes | None:
        if self._cache_dir is None:
            return None
        path = self._cache_dir / ref.sha256
        try:
            data = path.read_bytes()
        except OSError:
            return None
        if sha256_hex(data) != ref.sha256:  # a damaged entry: fetch it again
            log.warning("model-file cache entry %s is damaged; fetching it again", path)
            return None
        return data

    def _write_cache(self, ref: ModelFile, data: bytes) -> None:
        if self._cache_dir is None:
            return
        tmp: str | None = None
        try:
            self._cache_dir.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=self._cache_dir, prefix=".partial-")
            with os.fdopen(fd, "wb") as out:
                out.write(data)
            os.replace(tmp, self._cache_dir / ref.sha256)  # readers see all of it or nothing
        except OSError as exc:
            log.warning("cannot cache %s in %s (memory only): %s", ref.name, self._cache_dir, exc)
            if tmp is not None:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)


def _verified(ref: ModelFile, data: bytes, origin: str) -> bytes:
    digest = sha256_hex(data)
    if len(data) != ref.size_bytes or digest != ref.sha256:
        raise ModelFilesError(
            f"{origin}: {ref.name} has {len(data)} bytes with sha256 {digest[:12]}…, "
            f"expected {ref.size_bytes} bytes with sha256 {ref.sha256[:12]}…"
        )
    return data


def _hub_file(repo: str, name: str, endpoint: str | None) -> bytes:
    """Download `name` of hub repo `repo` (blocking; run in a thread)."""
    try:
        from huggingface_hub import hf_hub_download

        return Path(hf_hub_download(repo, name, endpoint=endpoint)).read_bytes()
    except Exception as exc:  # hub errors come in many types; all mean "cannot get it"
        raise ModelFilesError(f"hub repo {repo}: {name}: {exc}") from exc
