"""Steady streaming load through the frontend for the chaos cases, with every request's
outcome recorded: served in full, failed cleanly (an OpenAI error, HTTP or in-band), its
connection closed, truncated (the stream ended without a finish reason) or hung (no end
within `request_timeout_s`). Only the first two are acceptable endings of a request."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass

import openai

_TRANSPORT_MODULES = {"httpx", "httpx2", "httpcore", "h11", "anyio"}
OK, ERROR, CLOSED, TRUNCATED, HUNG = "ok", "error", "closed", "truncated", "hung"


@dataclass(frozen=True)
class Outcome:
    started: float
    ended: float
    kind: str
    detail: str = ""


class SteadyLoad:
    """`concurrency` closed-loop clients sending streaming chat requests until `stop()`."""

    def __init__(
        self,
        url: str,
        *,
        model: str,
        concurrency: int = 6,
        max_tokens: int = 24,
        request_timeout_s: float = 30.0,
    ) -> None:
        self._client = openai.AsyncOpenAI(
            base_url=url + "/v1", api_key="unused", max_retries=0, timeout=request_timeout_s
        )
        self.model, self.max_tokens = model, max_tokens
        self.concurrency, self.request_timeout_s = concurrency, request_timeout_s
        self.outcomes: list[Outcome] = []
        self._loops: list[asyncio.Task[None]] = []
        self._stopping = asyncio.Event()
        self._started_streams = 0
        self._progress = asyncio.Condition()

    async def start(self) -> None:
        self._loops = [asyncio.create_task(self._loop(i)) for i in range(self.concurrency)]

    async def stop(self) -> None:
        """Let every in-flight request end (each is bounded by `request_timeout_s`)."""
        self._stopping.set()
        await asyncio.gather(*self._loops)
        await self._client.close()

    async def wait_streaming(self, n: int, timeout_s: float = 60.0) -> None:
        """Until `n` more streams have produced their first token."""
        target = self._started_streams + n
        async with asyncio.timeout(timeout_s), self._progress:
            await self._progress.wait_for(lambda: self._started_streams >= target)

    async def wait_served(self, since: float, timeout_s: float = 60.0) -> float:
        """Seconds from `since` until a request started after it was served in full."""

        def served() -> list[float]:
            return [o.ended for o in self.outcomes if o.kind == OK and o.started >= since]

        async with asyncio.timeout(timeout_s), self._progress:
            await self._progress.wait_for(served)
        return min(served()) - since

    def counts(self, since: float = 0.0, until: float = float("inf")) -> Counter[str]:
        """Outcomes of the requests in flight at any time in [since, until]."""
        return Counter(o.kind for o in self.outcomes if o.ended >= since and o.started <= until)

    async def _notify(self) -> None:
        async with self._progress:
            self._progress.notify_all()

    def details(self, kind: str) -> list[str]:
        return [o.detail for o in self.outcomes if o.kind == kind][:5]

    async def _loop(self, index: int) -> None:
        n = 0
        while not self._stopping.is_set():
            n += 1
            started = time.monotonic()
            kind, detail = await self._one(f"client {index} request {n}")
            self.outcomes.append(Outcome(started, time.monotonic(), kind, detail))
            await self._notify()
            if kind != OK:
                await asyncio.sleep(0.05)  # a failing server is not hammered in a tight loop

    async def _one(self, prompt: str) -> tuple[str, str]:
        finish = None
        try:
            async with asyncio.timeout(self.request_timeout_s):
                stream = await self._client.chat.completions.create(
                    model=self.model,
                    messages=[{"role": "user", "content": prompt}],
                    max_tokens=self.max_tokens,
                    stream=True,
                )
                first = True
                async for chunk in stream:
                    if first:
                        self._started_streams += 1
                        first = False
                        await self._notify()
                    for choice in chunk.choices:
                        finish = choice.finish_reason or finish
        except TimeoutError:
            return HUNG, f"no end in {self.request_timeout_s} s"
        except openai.APIConnectionError as exc:
            return CLOSED, f"{type(exc).__name__}: {exc}"
        except (openai.APIStatusError, openai.APIError) as exc:
            return ERROR, f"{type(exc).__name__}: {exc}"
        except Exception as exc:
            # a connection dropped mid-stream surfaces as the HTTP library's own error
            if type(exc).__module__.split(".")[0] not in _TRANSPORT_MODULES:
                raise
            return CLOSED, f"{type(exc).__name__}: {exc}"
        if finish in ("stop", "length"):
            return OK, ""
        return TRUNCATED, f"finish_reason {finish!r}"


def report(case: str, load: SteadyLoad, **measured: object) -> str:
    """One line a chaos case prints: what it measured (collected into docs/benchmarks.md)."""
    total = load.counts()
    fields = " ".join(f"{k}={v}" for k, v in measured.items())
    line = f"CHAOS {case}: requests={sum(total.values())} {dict(total)} {fields}"
    print(line)
    return line


@contextlib.asynccontextmanager
async def steady_load(
    url: str, *, model: str, concurrency: int = 6, max_tokens: int = 24
) -> AsyncIterator[SteadyLoad]:
    load = SteadyLoad(url, model=model, concurrency=concurrency, max_tokens=max_tokens)
    await load.start()
    try:
        yield load
    finally:
        await load.stop()
