"""Fakes of TensorRT-LLM's LLM API (the 1.x `llmapi`) for adapter tests without a GPU.

Each fake names the upstream code it mirrors, as of `UPSTREAM` (the version every "Mirrors"
below refers to; docs/engines.md lists the files read and what is proven where). The
"model" is deterministic: each next token is the previous one + 1 (mod `VOCAB`); it ends on
`SamplingParams.end_id` as the real engine does, not on a fixed token.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import types
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from dynamo.testing.fake_engines import VOCAB, FakePrefixCache, next_token

# Read in the public repository's sources of the 1.1/1.2 line (PyPI's newest: 1.2.1); the
# index they were read from maps no commit to a release tag (see docs/engines.md).
UPSTREAM = "NVIDIA/TensorRT-LLM 1.x (1.1/1.2 line), tensorrt_llm/llmapi and tensorrt_llm/executor"

# `LLM` keyword arguments by the args model that has them (tensorrt_llm/llmapi/llm_args.py):
# `BaseLlmArgs` fields the tests and recipes use, the PyTorch backend's `TorchLlmArgs` only, and
# the TensorRT backend's `TrtLlmArgs` only. The real pydantic models forbid unknown fields.
BASE_LLM_ARGS = frozenset(
    {
        "max_seq_len",
        "max_batch_size",
        "max_num_tokens",
        "max_beam_width",
        "kv_cache_config",
        "enable_chunked_prefill",
        "pipeline_parallel_size",
        "build_config",  # TensorRT's build settings; a deprecated placeholder in TorchLlmArgs
        "cache_transceiver_config",  # disaggregated serving: how KV moves between engines
    }
)
TORCH_ONLY_LLM_ARGS = frozenset(
    {
        "cuda_graph_config",
        "disable_overlap_scheduler",
        "enable_iter_perf_stats",
        "enable_iter_req_stats",
        "print_iter_log",
        "attn_backend",
        "torch_compile_config",
    }
)
TRT_ONLY_LLM_ARGS = frozenset(
    {"enable_tqdm", "workspace", "enable_build_cache", "fast_build", "calib_config"}
)

DEFAULT_MAX_BATCH_SIZE = 2048  # BaseLlmArgs.max_batch_size
DEFAULT_MAX_NUM_TOKENS = 8192  # BaseLlmArgs.max_num_tokens
DEFAULT_TOKENS_PER_BLOCK = 32  # KvCacheConfig.tokens_per_block
FAKE_MAX_NUM_BLOCKS = 100


@dataclasses.dataclass
class FakeSamplingParams:
    """Mirrors `tensorrt_llm.SamplingParams` (tensorrt_llm/sampling_params.py, a dataclass:
    unknown keywords raise TypeError). `end_id`/`pad_id` stay None unless given; the LLM
    fills them from its tokenizer, or refuses without one (see `FakeTorchLLM`)."""

    end_id: int | None = None
    pad_id: int | None = None
    max_tokens: int = 32
    min_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    seed: int | None = None
    stop_token_ids: list[int] | None = None
    ignore_eos: bool = False
    detokenize: bool = True
    return_perf_metrics: bool = False


@dataclasses.dataclass(slots=True, kw_only=True)
class FakeDisaggregatedParams:
    """Mirrors `tensorrt_llm.llmapi.DisaggregatedParams` (tensorrt_llm/disaggregated_params.py,
    a slotted keyword-only dataclass), the prefill/decode fields."""

    request_type: str | None = None
    first_gen_tokens: list[int] | None = None
    ctx_request_id: int | None = None
    opaque_state: bytes | None = None
    draft_tokens: list[int] | None = None


# The cache transceivers of the engines in this process: what a context-only request left for
# its generation-only request, by context request id (prompt, opaque state).
CONTEXTS: dict[int, tuple[list[int], bytes]] = {}
_next_ctx_id = iter(range(1, 1 << 62))


@dataclasses.dataclass
class FakeKvCacheMetrics:
    """Mirrors the bindings' `KvCacheMetrics` (`request_perf_metrics.kv_cache_metrics`)."""

    num_total_allocated_blocks: int = 0
    num_new_allocated_blocks: int = 0
    num_reused_blocks: int = 0
    num_missed_blocks: int = 0
    kv_cache_hit_rate: float = 0.0


@dataclasses.dataclass
class FakeRequestPerfMetrics:
    """Mirrors the bindings' `RequestPerfMetrics`: set on a completion output only when the
    request's `SamplingParams.return_perf_metrics` is True."""

    kv_cache_metrics: FakeKvCacheMetrics


@dataclasses.dataclass
class FakeCompletionOutput:
    """Mirrors `CompletionOutput` (tensorrt_llm/executor/result.py): cumulative `token_ids`,
    `finish_reason` one of 'stop' | 'length' | 'timeout' | 'cancelled', `stop_reason` the
    stop token id (None when the request ended on `end_id`)."""

    index: int
    token_ids: list[int] = dataclasses.field(default_factory=list)
    finish_reason: str | None = None
    stop_reason: int | str | None = None
    request_perf_metrics: FakeRequestPerfMetrics | None = None
    disaggregated_params: FakeDisaggregatedParams | None = None


class FakeRequestOutput:
    """Mirrors `RequestOutput` / `GenerationResult` (llmapi/llm.py, executor/result.py) in
    streaming mode: async-iterates over itself; `abort()` ends it with 'cancelled'.

    `time_out_after_tokens` stands for the executor's per-request time limit: the request
    then ends with 'timeout', as `_handle_sequence` maps `FinishReason.TIMED_OUT`.
    """

    token_delay_s = 0.0
    time_out_after_tokens: int | None = None

    def __init__(
        self,
        prompt: list[int],
        params: FakeSamplingParams,
        cached_blocks: int,
        disaggregated: FakeDisaggregatedParams | None = None,
        block_size: int = 1,
    ) -> None:
        self.prompt_token_ids = prompt
        self.params = params
        self.outputs = [FakeCompletionOutput(index=0)]
        self.finished = False
        self.aborted = False
        self._cached_blocks = cached_blocks
        self._disaggregated = disaggregated
        self._block = block_size

    def abort(self) -> None:
        self.aborted = True

    def __aiter__(self) -> AsyncIterator[FakeRequestOutput]:
        return self._steps()

    async def _steps(self) -> AsyncIterator[FakeRequestOutput]:
        out, params = self.outputs[0], self.params
        stops = set(params.stop_token_ids or [])
        disaggregated = self._disaggregated
        kind = disaggregated.request_type if disaggregated else None
        if disaggregated is not None and kind == "generation_only":
            self._load_context(disaggregated)  # the KV and the first token came from context
            out.token_ids = list(disaggregated.first_gen_tokens or [])
        while not self.finished:
            await asyncio.sleep(self.token_delay_s)
            if params.return_perf_metrics:
                metrics = FakeKvCacheMetrics(num_reused_blocks=self._cached_blocks)
                out.request_perf_metrics = FakeRequestPerfMetrics(metrics)
            if self.aborted:
                out.finish_reason, self.finished = "cancelled", True
                yield self
                return
            tok = next_token((out.token_ids or self.prompt_token_ids)[-1])
            out.token_ids = [*out.token_ids, tok]
            if tok == params.end_id and not params.ignore_eos:
                out.finish_reason, self.finished = "stop", True
            elif tok in stops:
                out.finish_reason, out.stop_reason, self.finished = "stop", tok, True
            elif len(out.token_ids) >= params.max_tokens:
                out.finish_reason, self.finished = "length", True
            elif self.time_out_after_tokens and len(out.token_ids) >= self.time_out_after_tokens:
                out.finish_reason, self.finished = "timeout", True
            if kind == "context_only":  # the context phase ends with its first token
                out.finish_reason, self.finished = "length", True
                out.disaggregated_params = self._save_context(tok)
            yield self

    def _save_context(self, first: int) -> FakeDisaggregatedParams:
        ctx_id = next(_next_ctx_id)
        state = f"kv-of-request-{ctx_id}".encode()
        CONTEXTS[ctx_id] = (list(self.prompt_token_ids), state)
        return FakeDisaggregatedParams(
            request_type="context_only",
            first_gen_tokens=[first],
            ctx_request_id=ctx_id,
            opaque_state=state,
        )

    def _load_context(self, params: Any) -> None:
        """What the generation side's transceiver checks; a failed transfer fails the request
        (TensorRT-LLM raises from the result)."""
        saved = CONTEXTS.pop(params.ctx_request_id, None)
        if saved is None or saved[1] != params.opaque_state:
            raise RuntimeError(f"KV transfer of context request {params.ctx_request_id} failed")
        if saved[0] != self.prompt_token_ids:
            raise RuntimeError("the context request's KV is for another prompt")
        self._cached_blocks = len(self.prompt_token_ids) // self._block


class FakeIterationResult:
    """Mirrors `IterationResult` (tensorrt_llm/executor/result.py): JSON records from a queue,
    each `__anext__` waiting at most the timeout; a timeout marks it done, and a done result
    ends every later iteration at once until a new request calls `mark_undone`."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[str] = asyncio.Queue()
        self._done = False
        self._timeout: float | None = 2
        self.polls = 0  # __anext__ calls, so tests can tell a waiting reader from a spinning one

    def set_timeout(self, timeout: float | None) -> None:
        self._timeout = timeout

    def mark_undone(self) -> None:
        self._done = False

    def __aiter__(self) -> FakeIterationResult:
        return self

    async def __anext__(self) -> Any:
        self.polls += 1
        if self._done:
            raise StopAsyncIteration
        try:
            data = await asyncio.wait_for(self.queue.get(), self._timeout)
        except TimeoutError:
            self._done = True
            raise StopAsyncIteration from None
        return json.loads(data)


async def _empty() -> AsyncIterator[Any]:
    """Mirrors `empty_async_iterable` (tensorrt_llm/executor/executor.py)."""
    empty: tuple[Any, ...] = ()
    for item in empty:
        yield item


@dataclasses.dataclass
class FakeTokenizer:
    eos_token_id: int
    pad_token_id: int | None = None


class _FakeBaseLLM:
    """Mirrors `BaseLLM` (tensorrt_llm/llmapi/llm.py) with its `GenerationExecutor`
    (tensorrt_llm/executor/executor.py): the iteration results behind `get_stats_async` and
    `get_kv_cache_events_async` exist only after the first `generate_async`
    (`_maybe_initialize_iteration_results`); before that the stats are an empty iterable and
    the KV events an AssertionError."""

    ACCEPTED: frozenset[str] = BASE_LLM_ARGS

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
        unknown = sorted(set(kwargs) - self.ACCEPTED)
        if unknown:  # pydantic's extra="forbid" on the LlmArgs models
            raise ValueError(f"LLM got invalid arguments: {unknown}")
        kv = dict(kwargs.get("kv_cache_config") or {})
        self.kv_cache_config = kv
        self.block = int(kv.get("tokens_per_block", DEFAULT_TOKENS_PER_BLOCK))
        self.args = types.SimpleNamespace(
            model=model,
            max_seq_len=self._max_seq_len(model, kwargs.get("max_seq_len")),
            max_batch_size=kwargs.get("max_batch_size", DEFAULT_MAX_BATCH_SIZE),
            max_num_tokens=kwargs.get("max_num_tokens", DEFAULT_MAX_NUM_TOKENS),
            enable_iter_perf_stats=bool(kwargs.get("enable_iter_perf_stats", False)),
        )
        self.stats_enabled = self._stats_enabled(self.args)
        self.tokenizer = None if skip_tokenizer_init else FakeTokenizer(_config_eos(model))
        self.cache = FakePrefixCache(self.block)
        self.results: list[FakeRequestOutput] = []
        self._iter_stats: FakeIterationResult | None = None
        self._iter_kv_events: FakeIterationResult | None = None
        self._event_id = 0
        self.stats_calls = 0
        self.kv_event_calls = 0
        self.shut_down = False

    def _max_seq_len(self, model: str, given: int | None) -> int | None:
        return given

    def _stats_enabled(self, args: Any) -> bool:
        return bool(args.enable_iter_perf_stats)

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
        params = self._prepare_sampling_params(sampling_params)
        if self._iter_stats is None or self._iter_kv_events is None:
            self._iter_stats, self._iter_kv_events = FakeIterationResult(), FakeIterationResult()
        self._iter_stats.mark_undone()
        self._iter_kv_events.mark_undone()
        prompt = list(inputs)
        cached, stored = self.cache.lookup_and_store(prompt)
        if stored and self.kv_cache_config.get("event_buffer_max_size"):
            self._publish_stored(stored)
        result = FakeRequestOutput(
            prompt, params, cached // self.block, disaggregated_params, block_size=self.block
        )
        self.results.append(result)
        if self.stats_enabled:
            self._iter_stats.queue.put_nowait(self._stats_record())
        return result

    def _prepare_sampling_params(self, params: FakeSamplingParams | None) -> FakeSamplingParams:
        """`BaseLLM._prepare_sampling_params`: `end_id` from the tokenizer, or an error."""
        params = params or FakeSamplingParams()
        if params.end_id is None:
            if self.tokenizer is None:
                raise ValueError(
                    "tokenizer is required to reset end_id if it is None, or you can "
                    "explicitly specify the end_id for sampling_params"
                )
            params.end_id = self.tokenizer.eos_token_id
            params.pad_id = self.tokenizer.pad_token_id or params.end_id
        return params

    def _publish_stored(self, stored: list[list[int]]) -> None:
        assert self._iter_kv_events is not None
        blocks = [
            {
                "type": "stored_block",
                "block_hash": 1000 + self._event_id * 100 + i,
                "tokens": [{"type": "unique_token", "token_id": t} for t in b],
            }
            for i, b in enumerate(stored)
        ]
        data = {"type": "stored", "parent_hash": None, "blocks": blocks}
        event = {"event_id": self._event_id, "data": data}
        self._iter_kv_events.queue.put_nowait(json.dumps(event))
        self._event_id += 1

    def _stats_record(self) -> str:
        return json.dumps(
            {
                "numActiveRequests": sum(not r.finished for r in self.results),
                "numQueuedRequests": 0,
                "kvCacheStats": {
                    "maxNumBlocks": FAKE_MAX_NUM_BLOCKS,
                    "usedNumBlocks": len(self.cache.seen),
                    "cacheHitRate": 0.0,
                },
            }
        )

    def get_stats_async(self, timeout: float | None = 2) -> Any:
        """`BaseLLM.get_stats_async` -> `GenerationExecutor.aget_stats`."""
        self.stats_calls += 1
        if self._iter_stats is None:
            return _empty()
        self._iter_stats.set_timeout(timeout)
        return self._iter_stats

    def get_kv_cache_events_async(self, timeout: float | None = 2) -> Any:
        """`BaseLLM.get_kv_cache_events_async` -> `GenerationExecutor.aget_kv_events`."""
        self.kv_event_calls += 1
        if self._iter_kv_events is None:
            raise AssertionError("KV Event IterationResult is not properly instantiated.")
        self._iter_kv_events.set_timeout(timeout)
        return self._iter_kv_events

    def shutdown(self) -> None:
        self.shut_down = True


class FakeTorchLLM(_FakeBaseLLM):
    """Mirrors `tensorrt_llm.LLM` = `_TorchLLM` (llmapi/llm.py), the PyTorch backend: pops
    `backend`, rejects TensorRT-only fields (`_validate_args_for_torch_backend`), leaves
    `args.max_seq_len` None unless given (the PyTorch executor derives it internally), and
    reports iteration stats only with `enable_iter_perf_stats=True` (`TorchLlmArgs`)."""

    ACCEPTED = BASE_LLM_ARGS | TORCH_ONLY_LLM_ARGS

    def __init__(self, model: str, *args: Any, **kwargs: Any) -> None:
        self.backend = kwargs.pop("backend", "pytorch")
        trt_only = sorted(set(kwargs) & TRT_ONLY_LLM_ARGS)
        if trt_only:
            raise ValueError(
                "The following arguments are specific to TensorRT backend and cannot be used "
                f"with PyTorch backend: {trt_only}."
            )
        super().__init__(model, *args, **kwargs)


class FakeTrtEngineLLM(_FakeBaseLLM):
    """Mirrors `tensorrt_llm._tensorrt_engine.LLM` = `_TrtLLM` (llmapi/llm.py), the TensorRT
    engine backend: `TrtLlmArgs` (no PyTorch-only fields such as `enable_iter_perf_stats`; the
    C++ executor always reports iteration stats); its build fills `max_seq_len` from the
    model's `max_position_embeddings` when not given."""

    ACCEPTED = BASE_LLM_ARGS | TRT_ONLY_LLM_ARGS

    def _stats_enabled(self, args: Any) -> bool:
        return True

    def _max_seq_len(self, model: str, given: int | None) -> int | None:
        if given:
            return given
        config = _read_config(model)
        return int(config.get("max_position_embeddings") or 2048)


def _read_config(model: str) -> dict[str, Any]:
    path = Path(model) / "config.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def _config_eos(model: str) -> int:
    eos = _read_config(model).get("eos_token_id")
    return int(eos[0] if isinstance(eos, list) else eos) if eos is not None else VOCAB - 1


def fake_tensorrt_llm_modules(*, tensorrt_engine: bool = True) -> dict[str, types.ModuleType]:
    """`sys.modules` entries for a `tensorrt_llm` package made of these fakes (with or without
    the `_tensorrt_engine` module, which newer releases removed with the TensorRT backend)."""
    package = types.ModuleType("tensorrt_llm")
    package.LLM = FakeTorchLLM  # type: ignore[attr-defined]
    package.SamplingParams = FakeSamplingParams  # type: ignore[attr-defined]
    package.__version__ = "1.2.1"  # type: ignore[attr-defined]
    llmapi = types.ModuleType("tensorrt_llm.llmapi")
    llmapi.DisaggregatedParams = FakeDisaggregatedParams  # type: ignore[attr-defined]
    package.llmapi = llmapi  # type: ignore[attr-defined]
    modules = {"tensorrt_llm": package, "tensorrt_llm.llmapi": llmapi}
    if tensorrt_engine:
        engine = types.ModuleType("tensorrt_llm._tensorrt_engine")
        engine.LLM = FakeTrtEngineLLM  # type: ignore[attr-defined]
        package._tensorrt_engine = engine  # type: ignore[attr-defined]
        modules["tensorrt_llm._tensorrt_engine"] = engine
    return modules
