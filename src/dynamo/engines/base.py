"""The one async interface every engine (mocker, vLLM, SGLang, TRT-LLM) implements.

Token ids + sampling + stop conditions go in; token ids, finish reason and usage come out.
KV events and load changes are pushed to a sink the worker provides.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from dynamo.protocols.engine import EngineOutput, EngineRequest
from dynamo.protocols.kv_events import KvCacheEvent
from dynamo.protocols.model_card import BootstrapAddress
from dynamo.runtime.transport.base import RequestContext


@dataclass(frozen=True, slots=True)
class EngineInfo:
    """Facts a started engine reports; the worker copies them into its model card."""

    kv_block_size: int
    total_kv_blocks: int
    context_length: int
    max_num_seqs: int | None = None
    max_num_batched_tokens: int | None = None
    data_parallel_size: int = 1
    structured_output: bool = False  # honours `sampling_options.guided_decoding`
    bootstrap: BootstrapAddress | None = None  # a bootstrap-style prefill engine's address


@dataclass(frozen=True, slots=True)
class EngineMetrics:
    """A snapshot of engine load (published as `LoadMetrics` by the worker)."""

    active_kv_blocks: int
    total_kv_blocks: int
    running_requests: int
    waiting_requests: int
    max_num_seqs: int
    active_prefill_tokens: int = 0
    prefix_cache_hit_rate: float = 0.0
    dp_rank: int = 0


class EngineEventSink(Protocol):
    def kv_event(self, event: KvCacheEvent) -> None:
        """A KV cache event happened (stored / removed / cleared); ids are monotonic."""

    def load_changed(self) -> None:
        """Load changed noticeably; the worker may publish metrics now."""


class Engine(Protocol):
    async def start(self, sink: EngineEventSink) -> EngineInfo:
        """Bring the engine up; raise ConfigError with the engine's message on bad arguments."""

    def generate(
        self, request: EngineRequest, context: RequestContext
    ) -> AsyncIterator[EngineOutput]:
        """Stream outputs; the last one has `finish_reason` and `usage`.

        Stops (finish_reason "cancelled") when `context` is stopped or the iterator is closed.
        Raises PromptTooLongError for a prompt the engine can never hold.
        """

    def metrics(self) -> list[EngineMetrics]:
        """Current load, one entry per data-parallel rank."""

    async def shutdown(self) -> None: ...


@runtime_checkable
class HealthCheckedEngine(Protocol):
    """An engine that can tell whether it is still alive (its worker registers the check with
    the runtime: `/health` and the watchdog ask it)."""

    async def check_health(self) -> str | None:
        """None while the engine can serve; else why not, in one line (a dead engine core, a
        stopped step loop). Quick and side-effect free: it is asked every few seconds."""
