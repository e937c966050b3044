"""`SglangEngine`: SGLang's offline `sgl.Engine` behind our `Engine` interface, token ids in/out.

Built on SGLang's public async API: `Engine(server_args=...)`,
`await engine.async_generate(input_ids=..., sampling_params=..., stream=True, rid=...)`,
`engine.tokenizer_manager.abort_request(rid)`. KV events come from SGLang's ZMQ publisher
(`--kv-events-config`, the vLLM wire format). Tested against fakes of that API
(`dynamo.testing.fake_engines`); not yet exercised on a real SGLang engine.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import uuid
from collections.abc import AsyncIterator, Callable, Collection, Sequence
from typing import TYPE_CHECKING, Any

from dynamo.engines import adapter_common
from dynamo.engines.adapter_common import (
    ConfigErrorParser,
    OutputStream,
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
from dynamo.engines.vllm.kv_subscriber import (
    ZmqKvEventSubscriber,
    free_tcp_port,
    publisher_binds,
    subscriber_address,
)
from dynamo.protocols.engine import EngineOutput, EngineRequest, FinishReason
from dynamo.protocols.model_card import WorkerRole
from dynamo.runtime.config import RuntimeConfig, add_arguments, option, resolve
from dynamo.runtime.errors import ConfigError, UnavailableError
from dynamo.runtime.transport.base import RequestContext

log = logging.getLogger(__name__)

INSTALL_HINT = "pip install 'sglang[all]' (NVIDIA GPU)"
KV_EVENTS_TOPIC = "kv-events"


def import_sglang() -> Any:
    return import_engine("sglang", "SGLang", INSTALL_HINT)


def sampling_params(request: EngineRequest, context_length: int) -> dict[str, Any]:
    """SGLang's sampling-params dict for `request` (`sglang.srt.sampling` SamplingParams keys)."""
    sampling = request.get("sampling_options") or {}
    params = stop_options(
        request, context_length, max_key="max_new_tokens", min_key="min_new_tokens"
    )
    params.update(set_options(sampling, ("temperature", "top_p")))
    top_k = sampling.get("top_k")
    if top_k is not None:
        params["top_k"] = -1 if top_k <= 0 else top_k  # -1: disabled
    return params


def finish_reason(raw: Any, eos_token_ids: Collection[int]) -> FinishReason | None:
    """Ours for SGLang's `meta_info["finish_reason"]` (`{"type": ..., "matched": ...}`)."""
    if raw is None:
        return None
    kind = raw.get("type") if isinstance(raw, dict) else raw
    matched = raw.get("matched") if isinstance(raw, dict) else None
    return adapter_common.finish_reason(kind, matched, eos_token_ids) or "error"


class SglangEngine:
    """One `sgl.Engine` in this process.

    `server_args` is an `sglang.srt.server_args.ServerArgs` (see `parse_sglang_args`); the
    engine runs with `skip_tokenizer_init=True` (token ids in and out). `engine_factory`
    replaces `sglang.Engine` (tests pass a fake).
    """

    def __init__(
        self,
        server_args: Any,
        *,
        publish_kv_events: bool = True,
        engine_factory: Callable[..., Any] | None = None,
    ) -> None:
        self.server_args = server_args
        self.publish_kv_events = publish_kv_events
        self._factory = engine_factory
        self._engine: Any = None
        self._subscriber: ZmqKvEventSubscriber | None = None
        self._info: EngineInfo | None = None
        self._eos_ids: frozenset[int] = frozenset()
        self._inflight = 0
        self._closing = False

    @property
    def served_model_name(self) -> str:
        return str(self.server_args.served_model_name or self.server_args.model_path)

    @property
    def model_dir(self) -> str:
        return str(self.server_args.model_path)

    @property
    def hub_repo(self) -> str | None:
        """`model_dir` when it names a hub repo rather than a local directory."""
        return None if os.path.exists(self.model_dir) else self.model_dir

    async def start(self, sink: EngineEventSink) -> EngineInfo:
        if self._engine is not None:
            raise RuntimeError("SglangEngine.start called twice")
        factory = self._factory or import_sglang().Engine
        args = dataclasses.replace(self.server_args, skip_tokenizer_init=True)
        subscriber = None
        if self.publish_kv_events:
            args, subscriber = self._kv_events(args, sink)
        self.server_args = args
        if subscriber is not None:
            subscriber.start()
            self._subscriber = subscriber
        try:
            self._engine = factory(server_args=args)
        except Exception as exc:  # SGLang reports bad arguments as many exception types
            await self._stop_subscriber()
            raise ConfigError(f"SGLang engine failed to start: {exc}") from exc
        self._info = self._engine_info()
        self._eos_ids = frozenset(_eos_ids(self._engine))
        return self._info

    def _kv_events(self, args: Any, sink: EngineEventSink) -> tuple[Any, ZmqKvEventSubscriber]:
        raw = args.kv_events_config
        if raw:
            cfg = json.loads(raw) if isinstance(raw, str) else dict(raw)
        else:
            # A wildcard endpoint: SGLang's publisher binds it; we connect on loopback.
            cfg = {
                "publisher": "zmq",
                "endpoint": f"tcp://*:{free_tcp_port()}",
                "topic": KV_EVENTS_TOPIC,
            }
            args = dataclasses.replace(args, kv_events_config=json.dumps(cfg))
        endpoint = str(cfg.get("endpoint", "tcp://*:5557"))
        dp = int(getattr(args, "dp_size", 1) or 1)
        addresses = [subscriber_address(endpoint, r) for r in range(dp)]
        subscriber = ZmqKvEventSubscriber(
            addresses, sink, topic=str(cfg.get("topic", "")), bind=not publisher_binds(endpoint)
        )
        return args, subscriber

    def _engine_info(self) -> EngineInfo:
        engine, args = self._engine, self.server_args
        info = getattr(engine, "scheduler_info", None)
        if not info:
            result = getattr(engine, "_scheduler_init_result", None)
            infos = getattr(result, "scheduler_infos", None) or [{}]
            info = infos[0]
        page = int(args.page_size or 1)
        total_tokens = info.get("max_total_num_tokens")
        if not total_tokens:
            raise UnavailableError("SGLang did not report max_total_num_tokens")
        context = getattr(engine.tokenizer_manager, "context_len", None) or info.get(
            "max_req_input_len"
        )
        return EngineInfo(
            kv_block_size=page,
            total_kv_blocks=int(total_tokens) // page,
            context_length=int(context),
            max_num_seqs=info.get("max_running_requests") or args.max_running_requests,
            max_num_batched_tokens=args.chunked_prefill_size,
            data_parallel_size=int(getattr(args, "dp_size", 1) or 1),
        )

    async def _stop_subscriber(self) -> None:
        if self._subscriber is not None:
            await self._subscriber.stop()
            self._subscriber = None

    async def shutdown(self) -> None:
        self._closing = True
        await self._stop_subscriber()
        engine, self._engine = self._engine, None
        if engine is not None:
            engine.shutdown()

    def metrics(self) -> list[EngineMetrics]:
        """Best effort: requests in flight through this adapter (SGLang's scheduler load is not
        exposed by its offline API)."""
        if self._info is None:
            return []
        return [
            EngineMetrics(
                active_kv_blocks=0,
                total_kv_blocks=self._info.total_kv_blocks,
                running_requests=self._inflight,
                waiting_requests=0,
                max_num_seqs=self._info.max_num_seqs or 0,
            )
        ]

    async def generate(
        self, request: EngineRequest, context: RequestContext
    ) -> AsyncIterator[EngineOutput]:
        engine, info = serving("SGLang", self._closing, self._engine, self._info)
        prompt = validate_prompt(request, info.context_length)
        params = sampling_params(request, info.context_length)
        eos = self._eos_ids | frozenset(request.get("eos_token_ids") or ())
        rid = f"{request.get('request_id') or 'req'}-{uuid.uuid4().hex[:8]}"
        incremental = bool(getattr(self.server_args, "incremental_streaming_output", False))
        out = OutputStream(len(prompt))

        def convert(chunk: Any) -> EngineOutput:
            ids = list(chunk.get("output_ids") or [])
            meta = chunk.get("meta_info") or {}
            return out.output(
                ids if incremental else out.new_tokens(ids),
                finish_reason(meta.get("finish_reason"), eos),
                cached_tokens=int(meta.get("cached_tokens") or 0),
            )

        self._inflight += 1
        try:
            stream = engine.async_generate(
                input_ids=prompt, sampling_params=params, stream=True, rid=rid
            )
            outputs = stream_outputs("SGLang", stream, context, out, convert)
            async with contextlib.aclosing(outputs) as outs:
                async for output in outs:
                    yield output
        finally:
            self._inflight -= 1
            if not out.finished:
                with contextlib.suppress(Exception):
                    engine.tokenizer_manager.abort_request(rid)


def _eos_ids(engine: Any) -> list[int]:
    ids = getattr(getattr(engine, "tokenizer_manager", None), "eos_token_ids", None)
    return [int(i) for i in ids] if ids else []


@dataclasses.dataclass(frozen=True)
class SglangWorkerConfig:
    """Dynamo's own flags of an SGLang worker (SGLang's are in its ServerArgs)."""

    endpoint: str | None = option(None, help="dyn://namespace.component.endpoint to serve")
    publish_kv_events: bool = option(True, help="forward SGLang's KV cache events to the router")
    migration_limit: int = option(0, help="times a broken request may move to another worker")
    runtime: RuntimeConfig = dataclasses.field(default_factory=RuntimeConfig)


def parse_sglang_args(
    argv: Sequence[str] | None = None,
    *,
    server_args_cls: Any = None,
    resolve_model_path: bool = True,
) -> tuple[SglangWorkerConfig, Any, WorkerRole]:
    """(our config, SGLang `ServerArgs`, role) from `python -m dynamo.sglang` flags.

    Role comes from SGLang's own `--disaggregation-mode prefill|decode|null`.
    """
    if server_args_cls is None:
        import_sglang()
        from sglang.srt.server_args import ServerArgs

        server_args_cls = ServerArgs

    parser = ConfigErrorParser(prog="python -m dynamo.sglang", allow_abbrev=False)
    add_arguments(parser, SglangWorkerConfig, title="Dynamo worker")
    add_arguments(parser, RuntimeConfig, title="Dynamo runtime")
    server_args_cls.add_cli_args(parser)
    ns = parser.parse_args(list(argv) if argv is not None else None)
    config = dataclasses.replace(
        resolve(SglangWorkerConfig, ns), runtime=resolve(RuntimeConfig, ns)
    )
    if resolve_model_path:
        requested = str(ns.model_path)
        resolved = resolve_model(requested)
        if getattr(ns, "tokenizer_path", None) in (None, requested):
            ns.tokenizer_path = resolved.path
        ns.model_path = resolved.path
        if not getattr(ns, "served_model_name", None):
            ns.served_model_name = requested
    try:
        server_args = server_args_cls.from_cli_args(ns)
    except Exception as exc:
        raise ConfigError(f"SGLang rejected the server arguments: {exc}") from exc
    role = role_of_disaggregation_mode(getattr(server_args, "disaggregation_mode", "null"))
    return config, server_args, role


if TYPE_CHECKING:

    def _conforms(engine: SglangEngine) -> Engine:
        return engine
