"""In-process scripted workers behind the runtime surface the frontend uses (a test double).

`FakeRuntime` offers what `dynamo.frontend` needs of `DistributedRuntime`: `client(address)`,
`watch_model_cards()`, `event_subscriber(prefix)`. `FakeWorker`s registered on it echo their
prompt (or a fixed token script), honour `max_tokens` / EOS, and can die mid-stream, be slow,
or record that their caller went away.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

from dynamo.protocols.model_card import ModelCard
from dynamo.runtime.addressing import EndpointAddress, new_instance_id
from dynamo.runtime.discovery.base import MODEL_CARDS_ROOT, WatchEvent
from dynamo.runtime.errors import NotFoundError, RemoteError, StreamIncompleteError, TransportError

DEFAULT_ADDRESS = EndpointAddress("dynamo", "backend", "generate")


class FakeWorker:
    """One worker instance. Output: `script` cycled, or else the prompt's tokens cycled."""

    def __init__(
        self,
        card: ModelCard,
        *,
        address: EndpointAddress = DEFAULT_ADDRESS,
        instance_id: int | None = None,
        script: Sequence[int] | None = None,
        fail_after_tokens: int | None = None,
        error_after_tokens: int | None = None,
        cached_tokens: int = 0,
        delay_s: float = 0.0,
        chunk_tokens: int = 1,
        final_finish: str | None = None,
        end_without_finish: bool = False,
    ) -> None:
        self.card = card
        self.address = address
        self.instance_id = instance_id if instance_id is not None else new_instance_id()
        self.script = list(script) if script is not None else None
        self.fail_after_tokens = fail_after_tokens  # StreamIncompleteError after N tokens
        self.error_after_tokens = error_after_tokens  # RemoteError after N tokens
        self.cached_tokens = cached_tokens
        self.delay_s = delay_s
        self.chunk_tokens = chunk_tokens
        self.final_finish = final_finish  # replaces the last output's finish reason
        self.end_without_finish = end_without_finish  # the last output has none (clean end)
        self.requests: list[dict[str, Any]] = []  # every request received
        self.active: set[str] = set()  # request ids being generated now
        self.cancelled: list[str] = []  # request ids whose caller went away
        self.alive = True
        self._killed = asyncio.Event()

    def kill(self) -> None:
        """Die like kill -9: every open stream breaks without its final frame."""
        self.alive = False
        self._killed.set()

    async def generate(self, request: dict[str, Any], request_id: str) -> AsyncIterator[dict]:
        if not self.alive:
            raise TransportError(f"connection refused by worker {self.instance_id:x}")
        self.requests.append(request)
        self.active.add(request_id)
        finished = False
        try:
            async for out in self._outputs(request):
                if not self.alive:
                    raise StreamIncompleteError("the worker died mid-stream")
                yield out
            finished = True
        finally:
            self.active.discard(request_id)
            if not finished and self.alive:
                self.cancelled.append(request_id)

    async def _outputs(self, request: dict[str, Any]) -> AsyncIterator[dict]:
        prompt = list(request["token_ids"])
        if (request.get("extra_args") or {}).get("task") == "embedding":
            # a deterministic 4-dimensional "embedding" of the prompt
            vector = [float(len(prompt)), float(sum(prompt) % 97), 0.5, -1.0]
            yield {
                "embedding": vector,
                "finish_reason": "stop",
                "usage": {"prompt_tokens": len(prompt)},
            }
            return
        stop = request.get("stop_conditions", {})
        max_tokens = stop.get("max_tokens") or 16
        min_tokens = stop.get("min_tokens") or 0
        eos = set() if stop.get("ignore_eos") else set(request.get("eos_token_ids", ()))
        eos |= set(stop.get("stop_token_ids") or ())
        source = self.script if self.script is not None else (prompt or [0])
        tokens = itertools.cycle(source)
        produced = 0
        while produced < max_tokens:
            if self.fail_after_tokens is not None and produced >= self.fail_after_tokens:
                self.kill()
                raise StreamIncompleteError("the worker died mid-stream")
            if self.error_after_tokens is not None and produced >= self.error_after_tokens:
                raise RemoteError("engine exploded", kind="internal", status=500)
            await (asyncio.sleep(self.delay_s) if self.delay_s else asyncio.sleep(0))
            if not self.alive:
                raise StreamIncompleteError("the worker died mid-stream")
            chunk: list[int] = []
            finish = None
            for tok in tokens:
                chunk.append(tok)
                produced += 1
                if tok in eos and produced > min_tokens:
                    finish = "eos"
                    break
                if produced >= max_tokens or len(chunk) >= self.chunk_tokens:
                    break
            if finish is None and produced >= max_tokens:
                finish = "length"
            out: dict[str, Any] = {"token_ids": chunk, "finish_reason": finish}
            if request.get("sampling_options", {}).get("logprobs") is not None:
                out["log_probs"] = [-0.25 * (i + 1) for i in range(len(chunk))]
            if finish is not None:
                if self.final_finish is not None:
                    out["finish_reason"] = finish = self.final_finish
                    out["error"] = f"scripted {finish}"
                if self.end_without_finish:
                    out["finish_reason"] = None
                out["usage"] = {
                    "prompt_tokens": len(prompt),
                    "completion_tokens": produced,
                    "cached_tokens": min(self.cached_tokens, len(prompt)),
                }
                yield out
                return
            yield out


class FakeEndpointClient:
    """The runtime's `EndpointClient` surface, over the workers of one endpoint."""

    def __init__(self, runtime: FakeRuntime, address: EndpointAddress) -> None:
        self._runtime = runtime
        self.address = address
        self._callbacks: list[Callable[[str, int], None]] = []
        self.closed = False

    async def start(self) -> None:
        self._runtime._clients.append(self)

    def instance_ids(self) -> list[int]:
        return [
            w.instance_id
            for w in self._runtime.workers.values()
            if w.address == self.address and w.alive
        ]

    def on_change(self, callback: Callable[[str, int], None]) -> None:
        self._callbacks.append(callback)

    def is_lost(self, instance_id: int) -> bool:
        return False  # the fake request plane never takes a worker out of routing

    def _notify(self, kind: str, instance_id: int) -> None:
        for cb in self._callbacks:
            cb(kind, instance_id)

    def generate(
        self, request: dict[str, Any], *, instance_id: int, request_id: str
    ) -> AsyncIterator[dict[str, Any]]:
        worker = self._runtime.workers.get(instance_id)
        if worker is None or worker.address != self.address:
            return _raising(NotFoundError(f"no instance {instance_id:x} at {self.address}"))
        return worker.generate(request, request_id)

    async def close(self) -> None:
        self.closed = True
        if self in self._runtime._clients:
            self._runtime._clients.remove(self)


async def _raising(exc: Exception) -> AsyncIterator[dict[str, Any]]:
    raise exc
    yield {}  # pragma: no cover - makes this an async generator


class _Subscriber:
    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.queue: asyncio.Queue[tuple[str, dict[str, Any]]] = asyncio.Queue()

    def __aiter__(self) -> _Subscriber:
        return self

    async def __anext__(self) -> tuple[str, dict[str, Any]]:
        return await self.queue.get()

    async def close(self) -> None:
        pass


class FakeRuntime:
    """Discovery + request plane + event plane in one process, for frontend tests."""

    def __init__(self) -> None:
        self.workers: dict[int, FakeWorker] = {}
        self._cards: dict[str, dict[str, Any]] = {}
        self._watchers: list[asyncio.Queue[WatchEvent]] = []
        self._subscribers: list[_Subscriber] = []
        self._clients: list[FakeEndpointClient] = []

    @staticmethod
    def card_key(worker: FakeWorker) -> str:
        a = worker.address
        return f"{MODEL_CARDS_ROOT}/{a.namespace}/{a.component}/{a.endpoint}/{worker.instance_id:x}"

    def add_worker(self, worker: FakeWorker) -> FakeWorker:
        self.workers[worker.instance_id] = worker
        for client in self._clients:
            if client.address == worker.address:
                client._notify("add", worker.instance_id)
        key = self.card_key(worker)
        self._cards[key] = worker.card.model_dump(mode="json")
        self._emit(WatchEvent("put", key, self._cards[key]))
        return worker

    def remove_worker(self, worker: FakeWorker) -> None:
        """Unregister `worker` (its lease expired or it shut down)."""
        self.workers.pop(worker.instance_id, None)
        key = self.card_key(worker)
        self._cards.pop(key, None)
        self._emit(WatchEvent("delete", key, None))
        for client in self._clients:
            if client.address == worker.address:
                client._notify("remove", worker.instance_id)

    def _emit(self, event: WatchEvent) -> None:
        for q in self._watchers:
            q.put_nowait(event)

    def client(self, address: EndpointAddress) -> FakeEndpointClient:
        return FakeEndpointClient(self, address)

    async def watch_model_cards(self, namespace: str | None = None) -> AsyncIterator[WatchEvent]:
        q: asyncio.Queue[WatchEvent] = asyncio.Queue()
        for key, value in self._cards.items():
            q.put_nowait(WatchEvent("put", key, value))
        self._watchers.append(q)
        try:
            while True:
                event = await q.get()
                if namespace is None or event.key.split("/")[2] == namespace:
                    yield event
        finally:
            self._watchers.remove(q)

    async def event_subscriber(self, topic_prefix: str) -> _Subscriber:
        sub = _Subscriber(topic_prefix)
        self._subscribers.append(sub)
        return sub

    def publish(self, topic: str, payload: dict[str, Any]) -> None:
        for sub in self._subscribers:
            if topic.startswith(sub.prefix):
                sub.queue.put_nowait((topic, payload))

    async def shutdown(self) -> None:
        for worker in self.workers.values():
            worker.kill()
