"""`TrtllmEngine`: TensorRT-LLM's LLM API (1.x) behind our `Engine` interface, token ids in/out.

`--backend pytorch` builds `tensorrt_llm.LLM` (the PyTorch backend's class in 1.x);
`--backend tensorrt` builds `tensorrt_llm._tensorrt_engine.LLM` where the installed release
still has the TensorRT engine backend. Requests go through `generate_async(token_ids,
sampling_params=SamplingParams(end_id=..., pad_id=..., return_perf_metrics=True, ...),
streaming=True)`; `get_kv_cache_events_async` and `get_stats_async` are polled only once the
engine has served a request (before that they assert / return nothing), and wait for the next
request instead of spinning once they run dry. Engine arguments come from
`--extra-engine-args file.yaml` (the `LLM` keyword arguments). Tested against fakes that mirror
the upstream code (`dynamo.testing.fake_trtllm`); not yet exercised on a real engine.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
import os
import threading
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from typing import TYPE_CHECKING, Any

from dynamo.engines.adapter_common import (
    OutputStream,
    build_sampling_params,
    finish_reason,
    import_engine,
    request_error,
    serving,
    set_options,
    stop_options,
    stream_outputs,
    validate_prompt,
)
from dynamo.engines.base import Engine, EngineEventSink, EngineInfo, EngineMetrics
from dynamo.engines.trtllm_args import BACKENDS
from dynamo.engines.trtllm_disagg import encode_params, leg_params
from dynamo.engines.trtllm_events import KvEventTranslator, StatsView
from dynamo.engines.trtllm_model import ModelFacts, read_model_facts
from dynamo.protocols.engine import EngineOutput, EngineRequest
from dynamo.protocols.model_card import WorkerRole
from dynamo.runtime.errors import (
    ConfigError,
    EngineShutdownError,
    KvTransferError,
    UnavailableError,
)
from dynamo.runtime.tasks import wait_event
from dynamo.runtime.transport.base import RequestContext

log = logging.getLogger(__name__)

INSTALL_HINT = "pip install tensorrt-llm (NVIDIA GPU; see NVIDIA's install guide)"
DEFAULT_TOKENS_PER_BLOCK = 32  # TensorRT-LLM's default KV block size
POLL_TIMEOUT_S = 2.0  # how long one stats / KV-event read waits for a record
IDLE_REPOLL_S = 5.0  # after a read came back empty: wait this long for a request, then re-read


def import_tensorrt_llm() -> Any:
    return import_engine("tensorrt_llm", "TensorRT-LLM", INSTALL_HINT)


def llm_class(trt: Any, backend: str) -> Callable[..., Any]:
    """The `LLM` class of `backend` in the installed TensorRT-LLM.

    In 1.x `tensorrt_llm.LLM` is the PyTorch backend's class; the TensorRT engine backend's is
    `tensorrt_llm._tensorrt_engine.LLM`, a module that releases without that backend lack.
    """
    if backend == "pytorch":
        return trt.LLM
    if backend != "tensorrt":
        raise ConfigError(f"unknown TensorRT-LLM backend {backend!r}: use one of {BACKENDS}")
    try:
        module = importlib.import_module("tensorrt_llm._tensorrt_engine")
    except ImportError as exc:
        raise ConfigError(
            "--backend tensorrt: this TensorRT-LLM has no TensorRT engine backend "
            f"(tensorrt_llm._tensorrt_engine: {exc}); use --backend pytorch"
        ) from exc
    return module.LLM


def sampling_kwargs(
    request: EngineRequest, context_length: int, facts: ModelFacts
) -> dict[str, Any]:
    """Keyword arguments of `tensorrt_llm.SamplingParams` for `request` (token output).

    `end_id`/`pad_id` come from the model's tokenizer (TensorRT-LLM without its own tokenizer
    refuses a request without them); the model's other EOS ids become stop tokens, and the
    per-request perf metrics are asked for because they carry the reused KV blocks.
    """
    sampling = request.get("sampling_options") or {}
    kwargs = stop_options(request, context_length, max_key="max_tokens", min_key="min_tokens")
    kwargs.update(end_id=facts.end_id, pad_id=facts.pad_id, detokenize=False)
    kwargs["return_perf_metrics"] = True
    extra_eos = [i for i in facts.eos_token_ids if i != facts.end_id]
    if extra_eos and not kwargs["ignore_eos"]:
        stops = list(kwargs.get("stop_token_ids") or [])
        kwargs["stop_token_ids"] = stops + [i for i in extra_eos if i not in stops]
    kwargs.update(set_options(sampling, ("temperature", "top_p", "top_k", "seed")))
    return kwargs


def cached_tokens(completion: Any, block_size: int, prompt_tokens: int) -> int:
    """Prompt tokens served from the KV cache: the reused blocks in the completion's
    `request_perf_metrics.kv_cache_metrics` (0 when the engine did not report them)."""
    perf = getattr(completion, "request_perf_metrics", None)
    reused = getattr(getattr(perf, "kv_cache_metrics", None), "num_reused_blocks", 0)
    return min(prompt_tokens, int(reused or 0) * block_size)


class TrtllmEngine:
    """One TensorRT-LLM `LLM` in this process.

    `llm_kwargs` are the `LLM` constructor's keyword arguments (`model`, `backend`,
    `tensor_parallel_size`, `kv_cache_config`, ...; see `parse_trtllm_args`). `llm_factory`
    and `sampling_params_cls` replace the `LLM` class and `SamplingParams` (tests pass fakes),
    `disaggregated_params_cls` the `DisaggregatedParams` a prefill or decode `role` uses (see
    `trtllm_disagg`).
    """

    def __init__(
        self,
        llm_kwargs: dict[str, Any],
        *,
        served_model_name: str | None = None,
        publish_kv_events: bool = True,
        llm_factory: Callable[..., Any] | None = None,
        sampling_params_cls: Callable[..., Any] | None = None,
        disaggregated_params_cls: Callable[..., Any] | None = None,
        role: WorkerRole = WorkerRole.AGGREGATED,
        poll_timeout_s: float = POLL_TIMEOUT_S,
        idle_repoll_s: float = IDLE_REPOLL_S,
    ) -> None:
        self.llm_kwargs = dict(llm_kwargs)
        self._served_name = served_model_name
        self.publish_kv_events = publish_kv_events
        self._factory = llm_factory
        self._sampling_cls = sampling_params_cls
        self._disagg_cls = disaggregated_params_cls
        self.role = role
        self._poll_timeout_s = poll_timeout_s
        self._idle_repoll_s = idle_repoll_s
        self._llm: Any = None
        self._info: EngineInfo | None = None
        self._facts: ModelFacts | None = None
        self._stats = StatsView()
        self._tasks: list[asyncio.Task[None]] = []
        self._served = asyncio.Event()  # set by the first request: the engine's readers exist
        self._wakeups: list[asyncio.Event] = []  # one per pump, set by every request
        self._in_flight = 0  # requests between generate_async and their last output
        self._closing = False

    @property
    def served_model_name(self) -> str:
        return self._served_name or str(self.llm_kwargs["model"])

    @property
    def model_dir(self) -> str:
        return str(self.llm_kwargs["model"])

    @property
    def hub_repo(self) -> str | None:
        """`model_dir` when it names a hub repo rather than a local directory."""
        return None if os.path.exists(self.model_dir) else self.model_dir

    async def start(self, sink: EngineEventSink) -> EngineInfo:
        if self._llm is not None:
            raise RuntimeError("TrtllmEngine.start called twice")
        kwargs = dict(self.llm_kwargs)
        backend = str(kwargs.pop("backend", None) or "pytorch")
        factory, sampling_cls = self._factory, self._sampling_cls
        if factory is None or sampling_cls is None:
            trt = import_tensorrt_llm()
            factory = factory or llm_class(trt, backend)
            sampling_cls = sampling_cls or trt.SamplingParams
        if self.role is not WorkerRole.AGGREGATED and self._disagg_cls is None:
            self._disagg_cls = importlib.import_module("tensorrt_llm.llmapi").DisaggregatedParams
        facts = await asyncio.to_thread(read_model_facts, self.model_dir)
        if self.publish_kv_events:
            # KV events need block reuse and an event buffer in the KV cache config.
            kv = dict(kwargs.get("kv_cache_config") or {})
            kv.setdefault("enable_block_reuse", True)
            kv.setdefault("event_buffer_max_size", 1024)
            kwargs["kv_cache_config"] = kv
        if backend == "pytorch":  # a TorchLlmArgs field; without it get_stats_async stays empty
            kwargs.setdefault("enable_iter_perf_stats", True)
        kwargs.setdefault("skip_tokenizer_init", True)  # token ids in and out
        # Model loading takes minutes: off the event loop (leases and health keep going).
        build = asyncio.ensure_future(asyncio.to_thread(factory, **kwargs))
        try:
            llm = await asyncio.shield(build)
        except asyncio.CancelledError:  # the thread goes on building: shut down what it builds
            build.add_done_callback(_shut_down_when_built)
            raise
        except Exception as exc:  # TRT-LLM validates its arguments with pydantic/ValueError
            raise ConfigError(f"TensorRT-LLM rejected the engine arguments: {exc}") from exc
        try:
            info = self._engine_info(llm, kwargs, facts)
        except BaseException:
            await asyncio.to_thread(llm.shutdown)
            raise
        self._llm, self._info, self._facts = llm, info, facts
        self._sampling_cls = sampling_cls
        self._tasks.append(asyncio.create_task(self._pump_stats(sink), name="trtllm-stats"))
        if self.publish_kv_events:
            translator = KvEventTranslator(info.kv_block_size)
            self._tasks.append(
                asyncio.create_task(self._pump_events(sink, translator), name="trtllm-kv-events")
            )
        return info

    @staticmethod
    def _engine_info(llm: Any, kwargs: dict[str, Any], facts: ModelFacts) -> EngineInfo:
        args = getattr(llm, "args", None)
        kv = kwargs.get("kv_cache_config") or {}
        block = int(
            kv.get("tokens_per_block")
            or getattr(args, "tokens_per_block", None)
            or DEFAULT_TOKENS_PER_BLOCK
        )
        # The PyTorch backend leaves args.max_seq_len None and derives it from the model.
        max_seq = (
            getattr(args, "max_seq_len", None)
            or kwargs.get("max_seq_len")
            or facts.max_position_embeddings
        )
        if not max_seq:
            raise ConfigError(
                "TensorRT-LLM did not report max_seq_len and the model's config.json has no "
                "max_position_embeddings: set max_seq_len in --extra-engine-args"
            )
        batch = getattr(args, "max_batch_size", None) or kwargs.get("max_batch_size")
        if kv.get("max_tokens"):
            total = int(kv["max_tokens"]) // block
        else:  # an upper bound until the first iteration stats report maxNumBlocks
            total = int(max_seq) * int(batch or 1) // block
        return EngineInfo(
            kv_block_size=block,
            total_kv_blocks=total,
            context_length=int(max_seq),
            max_num_seqs=int(batch) if batch else None,
            max_num_batched_tokens=getattr(args, "max_num_tokens", None),
        )

    async def _pump_stats(self, sink: EngineEventSink) -> None:
        read = self._poll("iteration stats", lambda t: self._llm.get_stats_async(t))
        async with contextlib.aclosing(read) as stats:
            async for stat in stats:
                if self._stats.update(stat):
                    sink.load_changed()

    async def _pump_events(self, sink: EngineEventSink, translator: KvEventTranslator) -> None:
        read = self._poll("KV events", lambda t: self._llm.get_kv_cache_events_async(t))
        async with contextlib.aclosing(read) as records:
            async for raw in records:
                for event in translator.translate(raw):
                    try:
                        sink.kv_event(event)
                    except Exception:
                        log.exception("KV event sink failed")

    async def _poll(self, what: str, reader: Callable[[float], Any]) -> AsyncGenerator[Any, None]:
        """Records of one of the engine's iteration readers, forever.

        Waits for the first request (before it TensorRT-LLM's KV-event reader asserts and its
        stats reader is empty). A reader that times out stays done until the next request, so
        an empty read waits for a request (or `idle_repoll_s`) rather than spinning; a failed
        read is logged and retried the same way.
        """
        wake = asyncio.Event()
        self._wakeups.append(wake)
        await self._served.wait()
        while True:
            wake.clear()
            got = False
            try:
                async for record in reader(self._poll_timeout_s):
                    got = True
                    yield record
            except AssertionError as exc:  # the engine's reader is not set up yet
                log.debug("TensorRT-LLM %s not ready: %s", what, exc)
            except Exception:
                log.exception("reading TensorRT-LLM %s failed; retrying", what)
            if not got:
                await wait_event(wake, self._idle_repoll_s)

    async def shutdown(self) -> None:
        self._closing = True
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        llm, self._llm = self._llm, None
        if llm is not None:
            await asyncio.to_thread(llm.shutdown)

    def metrics(self) -> list[EngineMetrics]:
        if self._info is None:
            return []
        s = self._stats
        # Iteration stats stop when the engine idles, the last one still counting the requests
        # it finished; every request goes through this adapter, so none in flight means idle.
        busy = self._in_flight > 0
        return [
            EngineMetrics(
                active_kv_blocks=s.used_blocks,
                total_kv_blocks=s.max_blocks or self._info.total_kv_blocks,
                running_requests=s.active_requests if busy else 0,
                waiting_requests=s.queued_requests if busy else 0,
                max_num_seqs=self._info.max_num_seqs or 0,
                prefix_cache_hit_rate=s.cache_hit_rate,
            )
        ]

    async def generate(
        self, request: EngineRequest, context: RequestContext
    ) -> AsyncIterator[EngineOutput]:
        made, cls, facts = self._llm, self._sampling_cls, self._facts
        started = (made, cls, facts) if made is not None and cls and facts else None
        (llm, sampling_cls, facts), info = serving(
            "TensorRT-LLM", self._closing, started, self._info
        )
        prompt = validate_prompt(request, info.context_length)
        kwargs = sampling_kwargs(request, info.context_length, facts)
        params = build_sampling_params(sampling_cls, **kwargs)
        disaggregated = leg_params(request, self.role, self._disagg_cls)
        prefill = self.role is WorkerRole.PREFILL
        eos = frozenset(facts.eos_token_ids) | frozenset(request.get("eos_token_ids") or ())
        out = OutputStream(len(prompt))
        block = info.kv_block_size

        def convert(res: Any) -> EngineOutput:
            completion = res.outputs[0]
            reason = finish_reason(completion.finish_reason, completion.stop_reason, eos)
            if reason is None and res.finished:
                reason = "stop"
            output = out.output(
                out.new_tokens(list(completion.token_ids)),
                reason,
                cached_tokens=cached_tokens(completion, block, len(prompt)),
            )
            if prefill and out.finished:  # the context-only result: what the decode leg needs
                output["disaggregated_params"] = encode_params(
                    getattr(completion, "disaggregated_params", None)
                )
            return output

        extra = {"disaggregated_params": disaggregated} if disaggregated is not None else {}
        try:
            result = llm.generate_async(prompt, sampling_params=params, streaming=True, **extra)
        except ValueError as exc:  # e.g. a prompt or budget the engine's own checks refuse
            raise request_error(exc, "TensorRT-LLM") from exc
        self._served.set()
        for wake in self._wakeups:
            wake.set()
        self._in_flight += 1
        yielded = False
        try:
            outputs = stream_outputs("TensorRT-LLM", _aiter(result), context, out, convert)
            async with contextlib.aclosing(outputs) as outs:
                async for output in outs:
                    yielded = True
                    yield output
        except UnavailableError as exc:
            if disaggregated is None or prefill or yielded or isinstance(exc, EngineShutdownError):
                raise
            # a generation-only request that failed before its first output: the KV never came
            raise KvTransferError(
                f"TensorRT-LLM could not take over the prefill worker's KV: {exc}"
            ) from exc
        finally:
            self._in_flight -= 1
            if not out.finished:
                with contextlib.suppress(Exception):
                    result.abort()


def _shut_down_when_built(build: asyncio.Future[Any]) -> None:
    """Shut down an engine whose start was cancelled while it was being built."""
    if build.cancelled() or build.exception() is not None:
        return
    llm = build.result()
    threading.Thread(target=llm.shutdown, name="trtllm-shutdown", daemon=True).start()


async def _aiter(result: Any) -> AsyncIterator[Any]:
    async for item in result:
        yield item


if TYPE_CHECKING:

    def _conforms(engine: TrtllmEngine) -> Engine:
        return engine
