"""`SglangEngine`: SGLang's offline `sgl.Engine` behind our `Engine` interface, token ids in/out.

Built on SGLang's public async API: `Engine(server_args=...)`,
`await engine.async_generate(input_ids=..., sampling_params=..., stream=True[, rid=...])`,
`engine.tokenizer_manager.abort_request(rid)`. KV events come from SGLang's ZMQ publisher
(`--kv-events-config`, the vLLM wire format). Supports SGLang 0.5.4 to 0.5.23; where those
differ, `sglang_compat` looks at the API itself. Contract-tested against the real packages
(`tests/engines/real/test_sglang_contract.py`) and against fakes of both ends of that range;
not yet run on a GPU.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import os
import uuid
from collections.abc import AsyncIterator, Callable, Collection, Sequence
from typing import TYPE_CHECKING, Any

from dynamo.engines import adapter_common, sglang_compat
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
from dynamo.engines.sglang_compat import CONTEXT_RESERVE_TOKENS, PageParents
from dynamo.engines.sglang_disagg import bootstrap_address, bootstrap_kwargs
from dynamo.engines.zmq_kv_subscriber import (
    ZmqKvEventSubscriber,
    free_tcp_port,
    subscriber_address,
)
from dynamo.protocols.engine import EngineOutput, EngineRequest, FinishReason
from dynamo.protocols.kv_events import KvCacheEvent, KvStored
from dynamo.protocols.model_card import BootstrapAddress, WorkerRole
from dynamo.protocols.parsers.flags import ParserFlags
from dynamo.runtime.config import RuntimeConfig, add_arguments, option, resolve
from dynamo.runtime.errors import ConfigError, UnavailableError
from dynamo.runtime.transport.base import RequestContext

log = logging.getLogger(__name__)

INSTALL_HINT = "pip install 'sglang[all]' (NVIDIA GPU)"


def import_sglang() -> Any:
    return import_engine("sglang", "SGLang", INSTALL_HINT)


def usable_context(context_length: int) -> int:
    """Prompt plus new tokens that every supported SGLang accepts for `context_length`."""
    return context_length - CONTEXT_RESERVE_TOKENS


def sampling_params(request: EngineRequest, context_length: int) -> dict[str, Any]:
    """SGLang's sampling-params dict for `request` (`sglang.srt.sampling` SamplingParams keys).

    The token budget stops one short of `context_length` (`usable_context`)."""
    sampling = request.get("sampling_options") or {}
    params = stop_options(
        request,
        usable_context(context_length),
        max_key="max_new_tokens",
        min_key="min_new_tokens",
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


def generate_kwargs(
    prompt: list[int],
    params: dict[str, Any],
    rid: str | None,
    bootstrap: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Our keyword arguments to `Engine.async_generate` (`rid` only where SGLang takes one;
    `bootstrap_host/port/room` on the legs of a disaggregated request)."""
    kwargs: dict[str, Any] = {"input_ids": prompt, "sampling_params": params, "stream": True}
    if rid is not None:
        kwargs["rid"] = rid
    kwargs.update(bootstrap or {})
    return kwargs


class SglangEngine:
    """One `sgl.Engine` in this process.

    `server_args` is an `sglang.srt.server_args.ServerArgs` (see `parse_sglang_args`); the
    engine runs with `skip_tokenizer_init=True` (token ids in and out). `engine_factory`
    replaces `sglang.Engine` (tests pass a fake).

    Building an SGLang engine loads the model (minutes) and blocks. `prepare()` does it in the
    calling thread, before any runtime exists: `python -m dynamo.sglang` calls it first, on
    the main thread, as SGLang 0.5.4 requires (it installs signal handlers). `start()` builds
    the engine in a worker thread when `prepare()` was not called, so the event loop (lease
    keep-alive, health) keeps running; SGLang versions that install signal handlers only on
    the main thread (0.5.23) allow that.
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
        self._kv_config: dict[str, Any] | None = None
        self._subscriber: ZmqKvEventSubscriber | None = None
        self._info: EngineInfo | None = None
        self._eos_ids: frozenset[int] = frozenset()
        self._takes_rid = False
        self._parents = PageParents()
        self._inflight = 0
        self._closing = False
        mode = getattr(server_args, "disaggregation_mode", None)
        self.role = adapter_common.role_of_disaggregation_mode(mode)
        self.bootstrap: BootstrapAddress | None = None  # a prefill engine's, once started

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

    def prepare(self) -> None:
        """Build the SGLang engine now, in this thread (blocks for the model load)."""
        if self._engine is not None:
            raise RuntimeError("SglangEngine built twice")
        factory = self._factory or import_sglang().Engine
        changes: dict[str, Any] = {"skip_tokenizer_init": True}
        if self.publish_kv_events:
            try:
                cfg = sglang_compat.kv_events_config(
                    self.server_args.kv_events_config, free_tcp_port()
                )
            except ValueError as exc:
                raise ConfigError(str(exc)) from exc
            changes["kv_events_config"] = json.dumps(cfg)
            self._kv_config = cfg
        args = sglang_compat.replace_server_args(self.server_args, **changes)
        self.server_args = args
        try:
            self._engine = factory(server_args=args)
        except Exception as exc:  # SGLang reports bad arguments as many exception types
            raise ConfigError(f"SGLang engine failed to start: {exc}") from exc
        self._takes_rid = sglang_compat.accepts_rid(self._engine.async_generate)

    async def start(self, sink: EngineEventSink) -> EngineInfo:
        if self._info is not None:
            raise RuntimeError("SglangEngine.start called twice")
        if self._engine is None:
            await asyncio.to_thread(self.prepare)
        if self._kv_config is not None:
            self._subscriber = self._kv_subscriber(self._kv_config, sink)
            self._subscriber.start()
        try:
            info = await self._engine_info()
        except BaseException:
            await self._stop_subscriber()
            raise
        self._eos_ids = frozenset(_eos_ids(self._engine))
        if self.role is WorkerRole.PREFILL:
            self.bootstrap = bootstrap_address(self.server_args)
            info = dataclasses.replace(info, bootstrap=self.bootstrap)
            log.info(
                "SGLang prefill engine: bootstrap server at %s:%d",
                self.bootstrap.host,
                self.bootstrap.port,
            )
        self._info = info
        return info

    def _kv_subscriber(self, cfg: dict[str, Any], sink: EngineEventSink) -> ZmqKvEventSubscriber:
        endpoint = str(cfg.get("endpoint", "tcp://*:5557"))
        dp = int(getattr(self.server_args, "dp_size", 1) or 1)
        return ZmqKvEventSubscriber(
            [subscriber_address(endpoint, r) for r in range(dp)],
            _ParentRepairingSink(sink, self._parents),
            topic=str(cfg.get("topic", "")),
            bind=sglang_compat.subscriber_binds(cfg),
        )

    async def _engine_info(self) -> EngineInfo:
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
            max_num_seqs=sglang_compat.max_running_requests(
                await _internal_states(engine), args, int(total_tokens)
            ),
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
        prompt = validate_prompt(request, usable_context(info.context_length))
        params = sampling_params(request, info.context_length)
        eos = self._eos_ids | frozenset(request.get("eos_token_ids") or ())
        incremental = sglang_compat.incremental_streaming(self.server_args)
        out = OutputStream(len(prompt))
        # Without `rid` (SGLang < 0.5.7) SGLang names the request; its chunks carry the name.
        rid: str | None = None
        if self._takes_rid:
            rid = f"{request.get('request_id') or 'req'}-{uuid.uuid4().hex[:8]}"
        bootstrap = bootstrap_kwargs(request, self.role, self.bootstrap)
        kwargs = generate_kwargs(prompt, params, rid, bootstrap)
        if self._kv_config is not None:
            self._parents.learn(prompt, info.kv_block_size)

        def convert(chunk: Any) -> EngineOutput:
            nonlocal rid
            ids = list(chunk.get("output_ids") or [])
            meta = chunk.get("meta_info") or {}
            if rid is None and isinstance(meta.get("id"), str):
                rid = meta["id"]
            if bootstrap and not ids and not context.is_stopped():
                failed_handoff(meta.get("finish_reason"))
            return out.output(
                ids if incremental else out.new_tokens(ids),
                finish_reason(meta.get("finish_reason"), eos),
                cached_tokens=int(meta.get("cached_tokens") or 0),
            )

        self._inflight += 1
        try:
            stream = engine.async_generate(**kwargs)
            outputs = stream_outputs("SGLang", stream, context, out, convert)
            async with contextlib.aclosing(outputs) as outs:
                async for output in outs:
                    yield output
        finally:
            self._inflight -= 1
            if not out.finished and rid is not None:
                with contextlib.suppress(Exception):
                    engine.tokenizer_manager.abort_request(rid)


def failed_handoff(raw: Any) -> None:
    """Raise when SGLang aborted a disaggregated leg before its first token: its KV handoff
    failed (no prefill/decode peer at the bootstrap address, a timeout), so nothing will come."""
    if isinstance(raw, dict) and raw.get("type") == "abort":
        raise UnavailableError(f"SGLang aborted the disaggregated request: {raw.get('message')}")


class _ParentRepairingSink:
    """Passes KV events on, giving SGLang 0.5.4's parentless first pages their parent."""

    def __init__(self, sink: EngineEventSink, parents: PageParents) -> None:
        self._sink = sink
        self._parents = parents

    def kv_event(self, event: KvCacheEvent) -> None:
        data = event.data
        if isinstance(data, KvStored) and data.parent_hash is None and data.blocks:
            parent = self._parents.parent(data.blocks[0].block_hash)
            if parent is not None:
                event = dataclasses.replace(
                    event, data=dataclasses.replace(data, parent_hash=parent)
                )
        self._sink.kv_event(event)

    def load_changed(self) -> None:
        self._sink.load_changed()


INTERNAL_STATE_TIMEOUT_S = 30.0


async def _internal_states(engine: Any) -> list[dict[str, Any]]:
    """SGLang's `get_internal_state()` (one dict per scheduler), or [] where it is missing,
    fails or does not answer in time (then the caller falls back)."""
    manager = getattr(engine, "tokenizer_manager", None)
    get = getattr(manager, "get_internal_state", None)
    if get is None:
        return []
    # The scheduler's answers are read by SGLang's handle loop, which starts lazily; 0.5.23's
    # get_internal_state starts it itself, 0.5.4's does not.
    create_loop = getattr(manager, "auto_create_handle_loop", None)
    try:
        if create_loop is not None:
            create_loop()
        states = await asyncio.wait_for(get(), INTERNAL_STATE_TIMEOUT_S)
    except Exception as exc:
        log.warning("SGLang get_internal_state failed (%s): using the configured limits", exc)
        return []
    return [s for s in states or () if isinstance(s, dict)]


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
    parsers: ParserFlags = dataclasses.field(default_factory=ParserFlags)


def parse_sglang_args(
    argv: Sequence[str] | None = None,
    *,
    server_args_cls: Any = None,
    resolve_model_path: bool = True,
) -> tuple[SglangWorkerConfig, Any, WorkerRole]:
    """(our config, SGLang `ServerArgs`, role) from `python -m dynamo.sglang` flags.

    Role comes from SGLang's own `--disaggregation-mode prefill|decode|null`; a prefill
    engine's bootstrap server listens on `--disaggregation-bootstrap-port`.
    """
    if server_args_cls is None:
        import_sglang()
        from sglang.srt.server_args import ServerArgs

        server_args_cls = ServerArgs

    # SGLang's own parser takes abbreviations (the guide's `--tp 1` is `--tp-size`): so do we.
    parser = ConfigErrorParser(prog="python -m dynamo.sglang")
    add_arguments(parser, SglangWorkerConfig, title="Dynamo worker")
    add_arguments(parser, RuntimeConfig, title="Dynamo runtime")
    add_arguments(parser, ParserFlags, title="Dynamo output parsers")
    server_args_cls.add_cli_args(parser)
    ns = parser.parse_args(list(argv) if argv is not None else None)
    config = dataclasses.replace(
        resolve(SglangWorkerConfig, ns),
        runtime=resolve(RuntimeConfig, ns),
        parsers=resolve(ParserFlags, ns),
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
