"""Fakes of TensorRT-LLM's Python engine API (SGLang's: `fake_sglang`), for adapter tests
without a GPU.

They honour the signatures our adapters use (`tensorrt_llm.LLM(model, **kwargs)`,
`generate_async(inputs, sampling_params, ..., streaming=True)` returning an async-iterable
`RequestOutput` with `abort()`, `get_kv_cache_events_async`, `get_stats_async`) and their
output shapes. The "model" is deterministic: each next token is the previous one + 1 (mod `VOCAB`).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import AsyncIterator
from types import SimpleNamespace
from typing import Any

VOCAB = 1000
EOS = 2


class FakePrefixCache:
    """Full blocks seen before, keyed by their token prefix (what a real engine reuses)."""

    def __init__(self, block_size: int) -> None:
        self.block_size = block_size
        self.seen: set[tuple[int, ...]] = set()

    def lookup_and_store(self, prompt: list[int]) -> tuple[int, list[list[int]]]:
        """(cached prompt tokens, newly stored blocks) for `prompt`."""
        bs, cached, new = self.block_size, 0, []
        for i in range(len(prompt) // bs):
            prefix = tuple(prompt[: (i + 1) * bs])
            if prefix in self.seen and cached == i * bs:
                cached += bs
            elif prefix not in self.seen:
                self.seen.add(prefix)
                new.append(list(prefix[-bs:]))
        return cached, new


def next_token(previous: int) -> int:
    return (previous + 1) % VOCAB


# --- TensorRT-LLM -------------------------------------------------------------------------
@dataclasses.dataclass
class FakeSamplingParams:
    """The subset of `tensorrt_llm.SamplingParams` the adapter sets (unknown kwargs fail)."""

    max_tokens: int = 32
    min_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    seed: int | None = None
    stop_token_ids: list[int] | None = None
    ignore_eos: bool = False
    detokenize: bool = True
    end_id: int | None = None


class FakeCompletionOutput(SimpleNamespace):
    index: int
    token_ids: list[int]
    finish_reason: str | None
    stop_reason: int | str | None


class FakeRequestOutput:
    """`tensorrt_llm.RequestOutput` in streaming mode: async-iterates over itself."""

    token_delay_s = 0.0

    def __init__(self, prompt: list[int], params: FakeSamplingParams, cached: int) -> None:
        self.prompt_token_ids = prompt
        self.params = params
        self.outputs = [
            FakeCompletionOutput(index=0, token_ids=[], finish_reason=None, stop_reason=None)
        ]
        self.finished = False
        self.aborted = False
        self.cached_tokens = cached

    def abort(self) -> None:
        self.aborted = True

    async def __aiter__(self) -> AsyncIterator[FakeRequestOutput]:
        out = self.outputs[0]
        eos = set() if self.params.ignore_eos else {EOS}
        stops = set(self.params.stop_token_ids or [])
        while not self.finished:
            await asyncio.sleep(self.token_delay_s)
            if self.aborted:
                out.finish_reason, self.finished = "cancelled", True
                yield self
                return
            tok = next_token((out.token_ids or self.prompt_token_ids)[-1])
            out.token_ids = [*out.token_ids, tok]
            if tok in eos:
                out.finish_reason, self.finished = "stop", True
            elif tok in stops:
                out.finish_reason, out.stop_reason, self.finished = "stop", tok, True
            elif len(out.token_ids) >= self.params.max_tokens:
                out.finish_reason, self.finished = "length", True
            yield self


class FakeLLM:
    """`tensorrt_llm.LLM(model, **kwargs)` with token ids in and out."""

    VALID = {
        "backend",
        "kv_cache_config",
        "max_seq_len",
        "max_batch_size",
        "max_num_tokens",
        "enable_chunked_prefill",
        "cuda_graph_config",
    }

    def __init__(
        self,
        model: str,
        tokenizer: Any = None,
        tokenizer_mode: str = "auto",
        skip_tokenizer_init: bool = False,
        trust_remote_code: bool = False,
        tensor_parallel_size: int = 1,
        dtype: str = "auto",
        revision: str | None = None,
        tokenizer_revision: str | None = None,
        **kwargs: Any,
    ) -> None:
        for key in kwargs:
            if key not in self.VALID:
                raise ValueError(f"LLM got invalid argument: {key}")
        kv = dict(kwargs.get("kv_cache_config") or {})
        self.kv_cache_config = kv
        self.block = int(kv.get("tokens_per_block", 32))
        self.args = SimpleNamespace(
            model=model,
            max_seq_len=kwargs.get("max_seq_len", 2048),
            max_batch_size=kwargs.get("max_batch_size", 8),
            max_num_tokens=kwargs.get("max_num_tokens", 8192),
        )
        self.tokenizer = None if skip_tokenizer_init else SimpleNamespace(eos_token_id=EOS)
        self.cache = FakePrefixCache(self.block)
        self.results: list[FakeRequestOutput] = []
        self._events: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._event_id = 0
        self._stats: asyncio.Queue[str] = asyncio.Queue()
        self.shut_down = False

    def generate_async(
        self,
        inputs: Any,
        sampling_params: FakeSamplingParams | None = None,
        lora_request: Any = None,
        prompt_adapter_request: Any = None,
        streaming: bool = False,
        kv_cache_retention_config: Any = None,
        disaggregated_params: Any = None,
        _postproc_params: Any = None,
        scheduling_params: Any = None,
        cache_salt: str | None = None,
    ) -> FakeRequestOutput:
        prompt = list(inputs)
        cached, stored = self.cache.lookup_and_store(prompt)
        if stored and self.kv_cache_config.get("event_buffer_max_size"):
            self._events.put_nowait(
                {
                    "event_id": self._event_id,
                    "data": {
                        "type": "stored",
                        "parent_hash": None,
                        "blocks": [
                            {
                                "type": "stored_block",
                                "block_hash": 1000 + i,
                                "tokens": [{"type": "unique_token", "token_id": t} for t in b],
                            }
                            for i, b in enumerate(stored)
                        ],
                    },
                }
            )
            self._event_id += 1
        result = FakeRequestOutput(prompt, sampling_params or FakeSamplingParams(), cached)
        self.results.append(result)
        self._stats.put_nowait(
            json.dumps(
                {
                    "numActiveRequests": sum(not r.finished for r in self.results),
                    "numQueuedRequests": 0,
                    "kvCacheStats": {
                        "maxNumBlocks": 100,
                        "usedNumBlocks": len(self.cache.seen),
                        "cacheHitRate": 0.0,
                    },
                }
            )
        )
        return result

    async def get_kv_cache_events_async(
        self,
        timeout: float | None = 2,  # noqa: ASYNC109 - TRT-LLM's own signature
    ) -> AsyncIterator[Any]:
        try:
            yield await asyncio.wait_for(self._events.get(), timeout)
        except TimeoutError:
            return
        while not self._events.empty():
            yield self._events.get_nowait()

    async def get_stats_async(
        self,
        timeout: float | None = 2,  # noqa: ASYNC109 - TRT-LLM's own signature
    ) -> AsyncIterator[Any]:
        try:
            yield await asyncio.wait_for(self._stats.get(), timeout)
        except TimeoutError:
            return

    def shutdown(self) -> None:
        self.shut_down = True
