"""`PreprocessorCache`: each model's files and tokenizer, loaded once and shared by requests."""

from __future__ import annotations

import asyncio
import hashlib
import os
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

from dynamo.frontend.model_files import ModelFileFetcher
from dynamo.frontend.preprocess import Preprocessor
from dynamo.frontend.tokenizer_files import FileReader, directory_reader, load_tokenizer_files
from dynamo.protocols.model_card import ModelCard
from dynamo.runtime.errors import DynamoError, UnavailableError

# After a model's files or tokenizer failed to load, requests get that error for this long
# (doubling per failure up to the cap) before the next attempt: retried, never hammered.
RETRY_AFTER_S = 1.0
RETRY_AFTER_MAX_S = 30.0

# HF `tokenizers` reads this on every call. Its default (on) sends even a one-prompt batch to
# its own thread pool and blocks the caller until one of those threads has encoded it.
TOKENIZERS_PARALLELISM = "TOKENIZERS_PARALLELISM"


def serial_tokenizers() -> None:
    """Have HF `tokenizers` encode on the calling thread, unless the environment says otherwise.

    The encoder threads already spread a burst of prompts over the cores; the library's own
    pool only adds a hand-off per prompt and idle threads that spin on the cores the encoder
    threads and the event loop need. Off, a prompt costs about 30 % less CPU, and the routing
    profile's TTFT p50 fell from 312-363 to 115-122 ms at load average 3-5 (docs/benchmarks.md,
    "First-token path"). `encode_batch_fast` still releases the GIL while it encodes.
    """
    os.environ.setdefault(TOKENIZERS_PARALLELISM, "false")


def _card_key(card: ModelCard) -> tuple[str, str]:
    """Cards with the same name and tokenizer files share one preprocessor."""
    if card.files:
        src = ",".join(sorted(f"{f.name}:{f.sha256}" for f in card.files))
    else:
        src = f"path:{card.source_path}"
    digest = hashlib.blake2b(src.encode(), digest_size=16).hexdigest()
    extra = f"{card.chat_template}|{card.context_length}|{card.eos_token_ids}|{card.bos_token}"
    return card.name, digest + hashlib.blake2b(extra.encode(), digest_size=8).hexdigest()


class _Failure:
    __slots__ = ("attempts", "error", "retry_at")

    def __init__(self, error: DynamoError, retry_at: float, attempts: int) -> None:
        self.error, self.retry_at, self.attempts = error, retry_at, attempts


class PreprocessorCache:
    """Loads each model's files and tokenizer once and shares them between requests.

    The files come from the model's workers (`ModelFileFetcher`) or, for cards that list none,
    from `source_path`; the tokenizer is built in a thread. A failed load is answered from
    memory until its retry time (`RETRY_AFTER_S`, doubling up to `RETRY_AFTER_MAX_S`).
    It owns the encoder threads (one per CPU by default) that long prompts are encoded in:
    first come, first served, so in a burst the first prompts are ready first. Creating one
    turns the tokenizer library's own threads off (`serial_tokenizers`) unless
    `TOKENIZERS_PARALLELISM` is set.
    """

    def __init__(
        self,
        encode_threads: int | None = None,
        *,
        files: ModelFileFetcher | None = None,
        retry_after_s: float = RETRY_AFTER_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._ready: dict[tuple[str, str], Preprocessor] = {}
        self._loading: dict[tuple[str, str], asyncio.Task[Preprocessor]] = {}
        self._failed: dict[tuple[str, str], _Failure] = {}
        self._by_card: dict[str, tuple[ModelCard, Preprocessor]] = {}  # last card per model
        serial_tokenizers()
        threads = encode_threads or len(os.sched_getaffinity(0))
        self._encoder = ThreadPoolExecutor(threads, thread_name_prefix="encode")
        self.files = files if files is not None else ModelFileFetcher(None)
        self._retry_after_s = retry_after_s
        self._clock = clock

    async def get(
        self, card: ModelCard, peers: Callable[[], Sequence[ModelCard]] = tuple
    ) -> Preprocessor:
        """The preprocessor of `card`'s model; `peers()` gives the cards of its live workers, any
        of which may serve the files (asked only when the files must be loaded, not per request).
        Raises ConfigError or UnavailableError if it cannot."""
        # Hot path: the same card object as last time (a model's card is its first worker's).
        last = self._by_card.get(card.name)
        if last is not None and last[0] is card:
            return last[1]
        key = _card_key(card)
        ready = self._ready.get(key)
        if ready is not None:
            self._by_card[card.name] = (card, ready)
            return ready
        failed = self._failed.get(key)
        if failed is not None and self._clock() < failed.retry_at:
            raise failed.error
        task = self._loading.get(key)
        if task is None:
            # A task of its own: a client that disconnects does not cancel the load.
            task = asyncio.ensure_future(self._load(card, list(peers())))
            self._loading[key] = task
            task.add_done_callback(lambda t: self._loaded(key, t))
        return await asyncio.shield(task)

    async def _load(self, card: ModelCard, peers: list[ModelCard]) -> Preprocessor:
        read: FileReader
        if card.files:
            read = (await self.files.fetch_model(card, peers)).get
        else:
            read = directory_reader(card.source_path)
        files = await asyncio.to_thread(load_tokenizer_files, card, read)
        return Preprocessor(card, files, self._encoder)

    def _loaded(self, key: tuple[str, str], task: asyncio.Task[Preprocessor]) -> None:
        self._loading.pop(key, None)
        if task.cancelled():
            return
        error = task.exception()
        if error is None:
            self._ready[key] = task.result()
            self._failed.pop(key, None)
            return
        if not isinstance(error, DynamoError):
            error = UnavailableError(f"loading the tokenizer failed: {error!r}")
        previous = self._failed.get(key)
        attempts = previous.attempts + 1 if previous is not None else 1
        delay = min(self._retry_after_s * 2 ** (attempts - 1), RETRY_AFTER_MAX_S)
        self._failed[key] = _Failure(error, self._clock() + delay, attempts)

    def forget(self, model: str) -> None:
        """Drop a model's cached tokenizer and failures (its last worker left)."""
        for cache in (self._ready, self._failed):
            for key in [k for k in cache if k[0] == model]:
                del cache[key]
        self._by_card.pop(model, None)

    async def close(self) -> None:
        loading = list(self._loading.values())
        for task in loading:
            task.cancel()
        await asyncio.gather(*loading, return_exceptions=True)
        self._loading.clear()
        await self.files.close()
        self._encoder.shutdown(wait=False, cancel_futures=True)
