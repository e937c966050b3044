"""`TrtllmEngine`: TensorRT-LLM's `LLM` API behind our `Engine` interface, token ids in/out.

Built on TensorRT-LLM's public LLM API: `LLM(model=..., **engine_args)`,
`llm.generate_async(token_ids, sampling_params=SamplingParams(...), streaming=True)` (an async
iterable `RequestOutput` with cumulative `outputs[0].token_ids` and `abort()`),
`llm.get_kv_cache_events_async(timeout)` and `llm.get_stats_async(timeout)`.
Engine arguments come from `--extra-engine-args file.yaml` (the `LLM` keyword arguments).
Tested against fakes of that API (`dynamo.testing.fake_engines`); not yet exercised on a real
TensorRT-LLM engine.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from dynamo.engines.adapter_common import (
    ConfigErrorParser,
    OutputStream,
    build_sampling_params,
    finish_reason,
    import_engine,
    role_of_disaggregation_mode,
    serving,
    set_options,
    stop_options,
    stream_outputs,
    validate_prompt,
)
from dynamo.engines.base import Engine, EngineEventSink, EngineInfo, EngineMetrics
from dynamo.engines.model_resolution import resolve_model
from dynamo.engines.trtllm_events import KvEventTranslator, StatsView
from dynamo.protocols.engine import EngineOutput, EngineRequest
from dynamo.protocols.model_card import WorkerRole
from dynamo.runtime.config import RuntimeConfig, add_arguments, option, resolve
from dynamo.runtime.errors import ConfigError, UnavailableError
from dynamo.runtime.transport.base import RequestContext

log = logging.getLogger(__name__)

INSTALL_HINT = "pip install tensorrt-llm (NVIDIA GPU; see NVIDIA's install guide)"
DEFAULT_TOKENS_PER_BLOCK = 32  # TensorRT-LLM's default KV block size
POLL_TIMEOUT_S = 2.0


def import_tensorrt_llm() -> Any:
    return import_engine("tensorrt_llm", "TensorRT-LLM", INSTALL_HINT)


def sampling_kwargs(request: EngineRequest, context_length: int) -> dict[str, Any]:
    """Keyword arguments of `tensorrt_llm.SamplingParams` for `request` (token output)."""
    sampling = request.get("sampling_options") or {}
    kwargs = stop_options(request, context_length, max_key="max_tokens", min_key="min_tokens")
    kwargs["detokenize"] = False
    kwargs.update(set_options(sampling, ("temperature", "top_p", "top_k", "seed")))
    return kwargs


class TrtllmEngine:
    """One TensorRT-LLM `LLM` in this process.

    `llm_kwargs` are the `LLM` constructor's keyword arguments (`model`, `backend`,
    `tensor_parallel_size`, `kv_cache_config`, ...; see `parse_trtllm_args`). `llm_factory`
    and `sampling_params_cls` replace `tensorrt_llm.LLM` / `SamplingParams` (tests pass fakes).
    """

    def __init__(
        self,
        llm_kwargs: dict[str, Any],
        *,
        served_model_name: str | None = None,
        publish_kv_events: bool = True,
        llm_factory: Callable[..., Any] | None = None,
        sampling_params_cls: Callable[..., Any] | None = None,
    ) -> None:
        self.llm_kwargs = dict(llm_kwargs)
        self._served_name = served_model_name
        self.publish_kv_events = publish_kv_events
        self._factory = llm_factory
        self._sampling_cls = sampling_params_cls
        self._llm: Any = None
        self._info: EngineInfo | None = None
        self._stats = StatsView()
        self._tasks: list[asyncio.Task[None]] = []
        self._eos_ids: frozenset[int] = frozenset()
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
        if self._factory is None or self._sampling_cls is None:
            trt = import_tensorrt_llm()
            self._factory = self._factory or trt.LLM
            self._sampling_cls = self._sampling_cls or trt.SamplingParams
        kwargs = dict(self.llm_kwargs)
        if self.publish_kv_events:
            # KV events need block reuse and an event buffer in the KV cache config.
            kv = dict(kwargs.get("kv_cache_config") or {})
            kv.setdefault("enable_block_reuse", True)
            kv.setdefault("event_buffer_max_size", 1024)
            kwargs["kv_cache_config"] = kv
        kwargs.setdefault("skip_tokenizer_init", True)  # token ids in and out
        self.llm_kwargs = kwargs
        try:
            self._llm = await asyncio.to_thread(self._factory, **kwargs)
        except Exception as exc:  # TRT-LLM validates its arguments with pydantic/ValueError
            raise ConfigError(f"TensorRT-LLM rejected the engine arguments: {exc}") from exc
        self._info = self._engine_info(kwargs)
        self._eos_ids = frozenset(_eos_ids(self._llm))
        self._tasks.append(asyncio.create_task(self._pump_stats(sink), name="trtllm-stats"))
        if self.publish_kv_events:
            translator = KvEventTranslator(self._info.kv_block_size)
            self._tasks.append(
                asyncio.create_task(self._pump_events(sink, translator), name="trtllm-kv-events")
            )
        return self._info

    def _engine_info(self, kwargs: dict[str, Any]) -> EngineInfo:
        args = getattr(self._llm, "args", None)
        kv = kwargs.get("kv_cache_config") or {}
        block = int(
            kv.get("tokens_per_block")
            or getattr(args, "tokens_per_block", None)
            or DEFAULT_TOKENS_PER_BLOCK
        )
        max_seq = getattr(args, "max_seq_len", None) or kwargs.get("max_seq_len")
        if not max_seq:
            raise UnavailableError("TensorRT-LLM did not report max_seq_len")
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
        while True:
            async for stat in self._llm.get_stats_async(timeout=POLL_TIMEOUT_S):
                if self._stats.update(stat):
                    sink.load_changed()
            await asyncio.sleep(0)

    async def _pump_events(self, sink: EngineEventSink, translator: KvEventTranslator) -> None:
        while True:
            async for raw in self._llm.get_kv_cache_events_async(timeout=POLL_TIMEOUT_S):
                for event in translator.translate(raw):
                    try:
                        sink.kv_event(event)
                    except Exception:
                        log.exception("KV event sink failed")
            await asyncio.sleep(0)

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
        return [
            EngineMetrics(
                active_kv_blocks=s.used_blocks,
                total_kv_blocks=s.max_blocks or self._info.total_kv_blocks,
                running_requests=s.active_requests,
                waiting_requests=s.queued_requests,
                max_num_seqs=self._info.max_num_seqs or 0,
                prefix_cache_hit_rate=s.cache_hit_rate,
            )
        ]

    async def generate(
        self, request: EngineRequest, context: RequestContext
    ) -> AsyncIterator[EngineOutput]:
        made, cls = self._llm, self._sampling_cls
        started = (made, cls) if made is not None and cls is not None else None
        (llm, sampling_cls), info = serving("TensorRT-LLM", self._closing, started, self._info)
        prompt = validate_prompt(request, info.context_length)
        kwargs = sampling_kwargs(request, info.context_length)
        params = build_sampling_params(sampling_cls, **kwargs)
        eos = self._eos_ids | frozenset(request.get("eos_token_ids") or ())
        out = OutputStream(len(prompt))

        def convert(res: Any) -> EngineOutput:
            completion = res.outputs[0]
            reason = finish_reason(completion.finish_reason, completion.stop_reason, eos)
            if reason is None and res.finished:
                reason = "stop"
            return out.output(
                out.new_tokens(list(completion.token_ids)),
                reason,
                cached_tokens=int(getattr(res, "cached_tokens", 0) or 0),
            )

        result = llm.generate_async(prompt, sampling_params=params, streaming=True)
        try:
            outputs = stream_outputs("TensorRT-LLM", _aiter(result), context, out, convert)
            async with contextlib.aclosing(outputs) as outs:
                async for output in outs:
                    yield output
        finally:
            if not out.finished:
                with contextlib.suppress(Exception):
                    result.abort()


async def _aiter(result: Any) -> AsyncIterator[Any]:
    async for item in result:
        yield item


def _eos_ids(llm: Any) -> list[int]:
    tokenizer = getattr(llm, "tokenizer", None)
    eos = getattr(tokenizer, "eos_token_id", None)
    return [int(eos)] if isinstance(eos, int) else []


@dataclasses.dataclass(frozen=True)
class TrtllmWorkerConfig:
    """`python -m dynamo.trtllm` flags (Dynamo's own and the engine's)."""

    model_path: str = option(help="local model directory, GGUF file or hub id", flag="--model-path")
    served_model_name: str | None = option(None, help="name clients use (default: --model-path)")
    extra_engine_args: str | None = option(
        None, help="YAML file of TensorRT-LLM `LLM` keyword arguments"
    )
    tensor_parallel_size: int = option(1, help="GPUs per engine (tensor parallelism)")
    backend: str = option("pytorch", help="TensorRT-LLM backend", choices=("pytorch", "tensorrt"))
    disaggregation_mode: str = option(
        "prefill_and_decode", help="role", choices=("prefill_and_decode", "prefill", "decode")
    )
    publish_events_and_metrics: bool = option(True, help="forward KV events and load metrics")
    endpoint: str | None = option(None, help="dyn://namespace.component.endpoint to serve")
    migration_limit: int = option(0, help="times a broken request may move to another worker")
    runtime: RuntimeConfig = dataclasses.field(default_factory=RuntimeConfig)

    @property
    def role(self) -> WorkerRole:
        return role_of_disaggregation_mode(self.disaggregation_mode)


def parse_trtllm_args(
    argv: Sequence[str] | None = None, *, resolve_model_path: bool = True
) -> tuple[TrtllmWorkerConfig, dict[str, Any]]:
    """(our config, `LLM` keyword arguments) from `python -m dynamo.trtllm` flags."""

    parser = ConfigErrorParser(prog="python -m dynamo.trtllm", allow_abbrev=False)
    add_arguments(parser, TrtllmWorkerConfig, title="worker")
    add_arguments(parser, RuntimeConfig, title="Dynamo runtime")
    ns = parser.parse_args(list(argv) if argv is not None else None)
    if ns.model_path is None:
        raise ConfigError("--model-path is required")
    config = dataclasses.replace(
        resolve(TrtllmWorkerConfig, ns), runtime=resolve(RuntimeConfig, ns)
    )
    kwargs: dict[str, Any] = {}
    if config.extra_engine_args:
        kwargs.update(load_engine_args_yaml(config.extra_engine_args))
    model = config.model_path
    if resolve_model_path:
        model = resolve_model(model).path
    kwargs.update(
        model=model, tensor_parallel_size=config.tensor_parallel_size, backend=config.backend
    )
    if config.served_model_name is None:
        config = dataclasses.replace(config, served_model_name=config.model_path)
    return config, kwargs


def load_engine_args_yaml(path: str) -> dict[str, Any]:
    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"--extra-engine-args {path}: {exc.strerror}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"--extra-engine-args {path}: invalid YAML: {exc}") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"--extra-engine-args {path}: expected a mapping of LLM arguments")
    return data


if TYPE_CHECKING:

    def _conforms(engine: TrtllmEngine) -> Engine:
        return engine
