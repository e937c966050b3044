"""Fakes of SGLang's offline engine API at both ends of the range we support, for adapter tests
without a GPU: `FakeServerArgs`/`FakeSglEngine` mirror SGLang 0.5.23, `FakeServerArgs054`/
`FakeSglEngine054` mirror 0.5.4. Each class names the upstream code it mirrors (module, class or
function, version); the contract tier (`tests/engines/real`) checks our calls against the real
packages themselves. The "model" is deterministic: each next token is the previous one + 1.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import threading
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import msgpack
import msgspec
import zmq

from dynamo.testing.fake_engines import EOS, next_token


def _add_common_cli_args(parser: argparse.ArgumentParser) -> None:
    """The flags both versions share, spelled as `ServerArgs.add_cli_args` spells them (the
    tensor/data-parallel sizes take only their long names and `--tp-size`/`--dp-size`)."""
    parser.add_argument("--model-path", "--model", type=str, required=True)
    parser.add_argument("--tokenizer-path", type=str, default=None)
    parser.add_argument("--served-model-name", type=str, default=None)
    parser.add_argument("--page-size", type=int, default=None)
    parser.add_argument("--tensor-parallel-size", "--tp-size", type=int, default=1)
    parser.add_argument("--data-parallel-size", "--dp-size", type=int, default=1)
    parser.add_argument("--context-length", type=int, default=None)
    parser.add_argument("--kv-events-config", type=str, default=None)
    parser.add_argument("--max-running-requests", type=int, default=None)
    parser.add_argument("--chunked-prefill-size", type=int, default=None)
    parser.add_argument("--trust-remote-code", action="store_true")
    parser.add_argument("--mem-fraction-static", type=float, default=None)
    parser.add_argument(
        "--disaggregation-mode", choices=["null", "prefill", "decode"], default="null"
    )
    parser.add_argument("--disaggregation-transfer-backend", default="mooncake")
    parser.add_argument("--disaggregation-bootstrap-port", type=int, default=8998)
    parser.add_argument("--host", type=str, default="127.0.0.1")
    parser.add_argument("--dist-init-addr", type=str, default=None)
    parser.add_argument("--nnodes", type=int, default=1)
    parser.add_argument("--node-rank", type=int, default=0)


# --- disaggregation: SGLang's bootstrap handshake, between engines of this process -----------
BOOTSTRAP_TIMEOUT_S = 5.0  # SGLang gives up on a room after its bootstrap timeout too


@dataclasses.dataclass
class _Room:
    """One request's KV handoff: the decode engine arrives (reserves pages), then the prefill
    engine writes the prompt's KV into them."""

    decode_arrived: asyncio.Event = dataclasses.field(default_factory=asyncio.Event)
    kv: asyncio.Future[list[int]] = dataclasses.field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


class FakeBootstrapServer:
    """Mirrors a prefill engine's bootstrap server (`sglang.srt.disaggregation`): decode
    engines reach it at `bootstrap_host:bootstrap_port` and meet the prefill by `bootstrap_room`.
    Servers live in `SERVERS`, by port (one machine)."""

    def __init__(self) -> None:
        self.rooms: dict[int, _Room] = {}

    def room(self, room: int) -> _Room:
        return self.rooms.setdefault(room, _Room())


SERVERS: dict[int, FakeBootstrapServer] = {}


def _check_page_size(page_size: int | None) -> None:
    if page_size is not None and page_size < 1:
        raise ValueError(f"page_size must be >= 1, got {page_size}")


# --- SGLang 0.5.23 ---------------------------------------------------------------------------
class FakeServerArgs(msgspec.Struct):
    """Mirrors `sglang.srt.server_args.ServerArgs` of SGLang 0.5.23, the subset we read: a
    msgspec struct (`msgspec.defstruct`), so `dataclasses.replace` refuses it; streaming mode
    is `incremental_streaming_output`; `--kv-events-config` takes a `bind` option."""

    model_path: str
    tokenizer_path: str | None = None
    served_model_name: str | None = None
    page_size: int | None = None
    tp_size: int = 1
    dp_size: int = 1
    context_length: int | None = None
    skip_tokenizer_init: bool = False
    kv_events_config: str | None = None
    max_running_requests: int | None = None
    chunked_prefill_size: int | None = None
    incremental_streaming_output: bool = False
    disaggregation_mode: str = "null"
    disaggregation_transfer_backend: str = "mooncake"
    disaggregation_bootstrap_port: int = 8998
    host: str = "127.0.0.1"
    dist_init_addr: str | None = None
    nnodes: int = 1
    node_rank: int = 0

    def __post_init__(self) -> None:
        _check_page_size(self.page_size)

    @staticmethod
    def add_cli_args(parser: argparse.ArgumentParser) -> None:
        _add_common_cli_args(parser)
        parser.add_argument("--incremental-streaming-output", action="store_true")

    @classmethod
    def from_cli_args(cls, args: argparse.Namespace) -> FakeServerArgs:
        args.tp_size, args.dp_size = args.tensor_parallel_size, args.data_parallel_size
        names = [n for n in cls.__struct_fields__ if n != "skip_tokenizer_init"]
        return cls(**{n: getattr(args, n) for n in names})


# --- SGLang 0.5.4 ----------------------------------------------------------------------------
@dataclasses.dataclass
class FakeServerArgs054:
    """Mirrors `sglang.srt.server_args.ServerArgs` of SGLang 0.5.4, the subset we read: a
    dataclass; streaming mode is `stream_output`; no `bind` in `--kv-events-config`."""

    model_path: str
    tokenizer_path: str | None = None
    served_model_name: str | None = None
    page_size: int | None = None
    tp_size: int = 1
    dp_size: int = 1
    context_length: int | None = None
    skip_tokenizer_init: bool = False
    kv_events_config: str | None = None
    max_running_requests: int | None = None
    chunked_prefill_size: int | None = None
    stream_output: bool = False
    disaggregation_mode: str = "null"
    disaggregation_transfer_backend: str = "mooncake"
    disaggregation_bootstrap_port: int = 8998
    host: str = "127.0.0.1"
    dist_init_addr: str | None = None
    nnodes: int = 1
    node_rank: int = 0

    def __post_init__(self) -> None:
        _check_page_size(self.page_size)

    @staticmethod
    def add_cli_args(parser: argparse.ArgumentParser) -> None:
        _add_common_cli_args(parser)
        parser.add_argument("--stream-output", action="store_true")

    @classmethod
    def from_cli_args(cls, args: argparse.Namespace) -> FakeServerArgs054:
        args.tp_size, args.dp_size = args.tensor_parallel_size, args.data_parallel_size
        names = [f.name for f in dataclasses.fields(cls) if f.name != "skip_tokenizer_init"]
        return cls(**{n: getattr(args, n) for n in names})


class FakeTokenizerManager:
    """Mirrors `sglang.srt.managers.tokenizer_manager.TokenizerManager`: `context_len`,
    `eos_token_ids`, `abort_request(rid="", abort_all=False)` (0.5.4 and 0.5.23),
    `auto_create_handle_loop()` and `async get_internal_state()` (one dict per scheduler),
    answered only once the handle loop runs: 0.5.23's starts it, 0.5.4's does not
    (`tokenizer_communicator_mixin.get_internal_state`)."""

    def __init__(
        self, context_len: int, internal_state: dict[str, Any], starts_handle_loop: bool
    ) -> None:
        self.context_len = context_len
        self.eos_token_ids = [EOS]
        self.aborted: list[str] = []
        self.abort_events: dict[str, asyncio.Event] = {}
        self._internal_state = internal_state
        self._starts_handle_loop = starts_handle_loop
        self.handle_loop_running = False

    def auto_create_handle_loop(self) -> None:
        self.handle_loop_running = True

    def abort_request(self, rid: str = "", abort_all: bool = False) -> None:
        self.aborted.append(rid)
        event = self.abort_events.get(rid)
        if event is not None:
            event.set()

    async def get_internal_state(self) -> list[dict[str, Any]]:
        if self._starts_handle_loop:
            self.auto_create_handle_loop()
        if not self.handle_loop_running:
            await asyncio.Event().wait()  # nobody reads the scheduler's answer
        return [dict(self._internal_state)]


class _FakePrefixTree:
    """Page-aligned prompts stored so far (SGLang's radix cache, flattened)."""

    def __init__(self, page: int) -> None:
        self.page = page
        self.prefixes: set[tuple[int, ...]] = set()

    def insert(self, tokens: list[int]) -> tuple[int, int]:
        """(cached tokens, index of the first new page); stores every full page."""
        pages = len(tokens) // self.page
        cached = 0
        while cached < pages and tuple(tokens[: (cached + 1) * self.page]) in self.prefixes:
            cached += 1
        for i in range(cached, pages):
            self.prefixes.add(tuple(tokens[: (i + 1) * self.page]))
        return cached * self.page, cached


class FakeSglEngine:
    """Mirrors `sglang.srt.entrypoints.engine.Engine` of SGLang 0.5.23: `Engine(**kwargs)` with
    `server_args=`, `async_generate` (with `rid`), scheduler facts in
    `_scheduler_init_result.scheduler_infos`, KV events as tagged msgpack maps with chained
    hashes and the parent's hash (`sglang.srt.mem_cache.events`), a `bind` option honoured;
    and the tokenizer manager's length check (`_validate_one_request`: new + prompt > context)."""

    token_delay_s = 0.0
    # `_validate_one_request`: refuses new + prompt >= context (True) or > context (False).
    strict_context_check = False
    starts_handle_loop = True  # `get_internal_state` starts SGLang's handle loop itself

    def __init__(self, **kwargs: Any) -> None:
        args = kwargs["server_args"]
        if not args.skip_tokenizer_init:
            raise ValueError("this fake serves token ids only (skip_tokenizer_init=True)")
        self.server_args = args
        self.page = args.page_size or 1
        self.context = args.context_length or 4096
        self.max_total_num_tokens = 64 * self.page
        self.tokenizer_manager = FakeTokenizerManager(
            self.context, self._internal_state(), starts_handle_loop=self.starts_handle_loop
        )
        self._set_scheduler_info(
            {
                "status": "ready",
                "max_total_num_tokens": self.max_total_num_tokens,
                "max_req_input_len": self.context - 1,
            }
        )
        self.built_on = threading.current_thread()
        self.tree = _FakePrefixTree(self.page)
        self.requests: list[dict[str, Any]] = []
        self.shut_down = False
        self._pub: zmq.Socket[bytes] | None = None
        self._topic = b""
        self._seq = 0
        if args.kv_events_config:
            self._open_publisher(json.loads(args.kv_events_config))
        self.mode = args.disaggregation_mode
        if self.mode == "prefill":
            port = args.disaggregation_bootstrap_port
            if port in SERVERS:
                raise ValueError(f"bootstrap port {port} is in use")
            SERVERS[port] = self.bootstrap_server = FakeBootstrapServer()

    def _internal_state(self) -> dict[str, Any]:
        limit = self.server_args.max_running_requests or self.max_total_num_tokens // 2
        return {"effective_max_running_requests_per_dp": limit}

    def _set_scheduler_info(self, info: dict[str, Any]) -> None:
        self._scheduler_init_result = argparse.Namespace(scheduler_infos=[info])

    def _open_publisher(self, cfg: dict[str, Any]) -> None:
        self._ctx = zmq.Context()
        self._pub = self._ctx.socket(zmq.PUB)
        endpoint = cfg["endpoint"]
        bind = cfg.get("bind")
        if bind is None:  # SGLang's heuristic: bind wildcard and ipc/inproc endpoints
            bind = "*" in endpoint or endpoint.startswith(("ipc://", "inproc://"))
        if bind:
            self._pub.bind(endpoint.replace("tcp://*:", "tcp://127.0.0.1:"))
        else:
            self._pub.connect(endpoint)
        self._topic = cfg.get("topic", "").encode()

    async def async_generate(
        self,
        prompt: Any = None,
        sampling_params: Any = None,
        input_ids: Any = None,
        image_data: Any = None,
        audio_data: Any = None,
        video_data: Any = None,
        mm_hashes: Any = None,
        mm_content_hashes: Any = None,
        return_logprob: Any = False,
        logprob_start_len: Any = None,
        top_logprobs_num: Any = None,
        token_ids_logprob: Any = None,
        lora_path: Any = None,
        custom_logit_processor: Any = None,
        require_reasoning: bool = False,
        return_hidden_states: Any = False,
        return_routed_experts: bool = False,
        routed_experts_start_len: int = 0,
        stream: bool = False,
        bootstrap_host: Any = None,
        bootstrap_port: Any = None,
        bootstrap_room: Any = None,
        routed_dp_rank: int | None = None,
        disagg_prefill_dp_rank: int | None = None,
        kv_hints: dict[str, Any] | None = None,
        data_parallel_rank: int | None = None,
        external_trace_header: dict[str, Any] | None = None,
        rid: Any = None,
        session_params: dict[str, Any] | None = None,
        priority: int | None = None,
        session_id: str | None = None,
        *,
        cache_salt: Any = None,
    ) -> dict[str, Any] | AsyncIterator[dict[str, Any]]:
        bootstrap = (bootstrap_host, bootstrap_port, bootstrap_room)
        return await self._generate(input_ids, sampling_params, stream, rid, prompt, bootstrap)

    async def _generate(
        self,
        input_ids: Any,
        sampling_params: Any,
        stream: bool,
        rid: Any,
        prompt: Any,
        bootstrap: tuple[Any, Any, Any] = (None, None, None),
    ) -> dict[str, Any] | AsyncIterator[dict[str, Any]]:
        if prompt is not None or input_ids is None:
            raise ValueError("this fake takes input_ids (skip_tokenizer_init=True)")
        if not isinstance(input_ids[0], int) or isinstance(rid, list):
            raise ValueError("this fake takes one request at a time")
        rid = rid if isinstance(rid, str) else uuid.uuid4().hex  # SGLang names it otherwise
        ids: list[int] = [int(t) for t in input_ids]
        params = dict(sampling_params or {})
        self._validate(len(ids), params.get("max_new_tokens"))
        self.requests.append(
            {"input_ids": ids, "sampling_params": params, "rid": rid, "bootstrap": bootstrap}
        )
        gen = self._disaggregated(ids, params, rid, bootstrap)
        if stream:
            return gen
        chunks = [chunk async for chunk in gen]
        return chunks[-1]

    def _validate(self, prompt_tokens: int, max_new_tokens: int | None) -> None:
        if prompt_tokens >= self.context:
            raise ValueError(
                f"The input ({prompt_tokens} tokens) is longer than the model's context "
                f"length ({self.context} tokens)."
            )
        if max_new_tokens is None:
            return
        total = max_new_tokens + prompt_tokens
        if total >= self.context if self.strict_context_check else total > self.context:
            raise ValueError(
                f"Requested token count exceeds the model's maximum context length of "
                f"{self.context} tokens. You requested a total of {total} tokens: "
                f"{prompt_tokens} tokens from the input messages and {max_new_tokens} "
                "tokens for the completion."
            )

    def _incremental(self) -> bool:
        return bool(self.server_args.incremental_streaming_output)

    async def _disaggregated(
        self, ids: list[int], params: dict[str, Any], rid: str, bootstrap: tuple[Any, Any, Any]
    ) -> AsyncIterator[dict[str, Any]]:
        """The handoff of a prefill or decode engine, then the stream (aborted when the
        handoff fails, as SGLang aborts a request whose KV transfer failed)."""
        host, port, room = bootstrap
        cached = 0
        try:
            if self.mode == "prefill":
                if room is None:
                    raise RuntimeError("a prefill-mode request needs a bootstrap_room")
                handoff = self.bootstrap_server.room(room)
                await asyncio.wait_for(handoff.decode_arrived.wait(), BOOTSTRAP_TIMEOUT_S)
                handoff.kv.set_result(list(ids))
                del self.bootstrap_server.rooms[room]
            elif self.mode == "decode":
                server = SERVERS.get(port) if host else None
                if server is None or room is None:
                    raise RuntimeError(f"no bootstrap server at {host}:{port}")
                handoff = server.room(room)
                handoff.decode_arrived.set()
                kv = await asyncio.wait_for(handoff.kv, BOOTSTRAP_TIMEOUT_S)
                if kv != ids:
                    raise RuntimeError("the prefill engine sent the KV of another prompt")
                cached = len(kv)  # every prompt token arrived as KV: none is computed here
        except (RuntimeError, TimeoutError) as exc:
            finish = {"type": "abort", "message": f"KV transfer failed: {exc or 'timeout'}"}
            yield {"output_ids": [], "meta_info": self._meta(rid, ids, [], 0, finish)}
            return
        local_cached, first_new = self.tree.insert(ids)
        self._publish_stored(ids, first_new)
        async for chunk in self._stream(ids, params, rid, max(cached, local_cached)):
            yield chunk

    async def _stream(
        self, ids: list[int], params: dict[str, Any], rid: str, cached: int
    ) -> AsyncIterator[dict[str, Any]]:
        aborted = self.tokenizer_manager.abort_events.setdefault(rid, asyncio.Event())
        incremental = self._incremental()
        out: list[int] = []
        stops = set(params.get("stop_token_ids") or [])
        eos = set() if params.get("ignore_eos") else {EOS}
        limit = int(params.get("max_new_tokens", 128))
        finish: dict[str, Any] | None = None
        while finish is None:
            await asyncio.sleep(self.token_delay_s)
            if aborted.is_set():
                finish = {"type": "abort", "message": "aborted"}
                yield {
                    "output_ids": [] if incremental else out,
                    "meta_info": self._meta(rid, ids, out, cached, finish),
                }
                return
            tok = next_token((out or ids)[-1])
            out.append(tok)
            if tok in eos or tok in stops:
                finish = {"type": "stop", "matched": tok}
            elif len(out) >= limit:
                finish = {"type": "length", "length": limit}
            chunk_ids = [tok] if incremental else list(out)
            yield {"output_ids": chunk_ids, "meta_info": self._meta(rid, ids, out, cached, finish)}

    @staticmethod
    def _meta(rid: str, ids: list[int], out: list[int], cached: int, finish: Any) -> dict:
        return {
            "id": rid,
            "finish_reason": finish,
            "prompt_tokens": len(ids),
            "completion_tokens": len(out),
            "cached_tokens": cached,
        }

    def _stored_events(self, ids: list[int], first_new: int) -> list[Any]:
        """One BlockStored per new page, each naming the previous page as its parent."""
        events: list[Any] = []
        page = self.page
        for i in range(first_new, len(ids) // page):
            parent = hash(tuple(ids[: i * page])) if i else None
            events.append(
                {
                    "type": "BlockStored",
                    "block_hashes": [hash(tuple(ids[: (i + 1) * page]))],
                    "parent_block_hash": parent,
                    "token_ids": ids[i * page : (i + 1) * page],
                    "block_size": page,
                    "lora_id": None,
                    "medium": "GPU",
                }
            )
        return events

    def _publish_stored(self, ids: list[int], first_new: int) -> None:
        events = self._stored_events(ids, first_new)
        if self._pub is None or not events:
            return
        payload = msgpack.packb([time.time(), events, 0])
        self._pub.send_multipart([self._topic, self._seq.to_bytes(8, "big"), payload])
        self._seq += 1

    def shutdown(self) -> None:
        self.shut_down = True
        if self.mode == "prefill":
            SERVERS.pop(self.server_args.disaggregation_bootstrap_port, None)
        if self._pub is not None:
            self._pub.close(linger=0)
            self._ctx.term()
            self._pub = None


class FakeSglEngine054(FakeSglEngine):
    """Mirrors `sglang.srt.entrypoints.engine.Engine` of SGLang 0.5.4 where it differs:
    `async_generate` has no `rid` (SGLang names each request; chunks carry the name in
    `meta_info["id"]`); the constructor installs a signal handler, so it must run on the main
    thread (`_set_envs_and_config`); `scheduler_info` lacks `max_running_requests` and
    `get_internal_state` returns the unset server argument; the length check refuses
    new + prompt >= context; KV events (`RadixCache._record_store_event`) are arrays, each page
    hashed alone, and the first page of every new radix node has no parent."""

    strict_context_check = True
    starts_handle_loop = False

    def __init__(self, **kwargs: Any) -> None:
        if threading.current_thread() is not threading.main_thread():
            raise ValueError("signal only works in main thread of the main interpreter")
        super().__init__(**kwargs)

    def _internal_state(self) -> dict[str, Any]:
        return {"max_running_requests": self.server_args.max_running_requests}

    def _set_scheduler_info(self, info: dict[str, Any]) -> None:
        del info["status"]
        self.scheduler_info = info

    def _open_publisher(self, cfg: dict[str, Any]) -> None:
        super()._open_publisher({k: v for k, v in cfg.items() if k != "bind"})

    def _incremental(self) -> bool:
        return bool(self.server_args.stream_output)

    async def async_generate(  # type: ignore[override]
        self,
        prompt: Any = None,
        sampling_params: Any = None,
        input_ids: Any = None,
        image_data: Any = None,
        audio_data: Any = None,
        video_data: Any = None,
        return_logprob: Any = False,
        logprob_start_len: Any = None,
        top_logprobs_num: Any = None,
        token_ids_logprob: Any = None,
        lora_path: Any = None,
        custom_logit_processor: Any = None,
        return_hidden_states: bool = False,
        stream: bool = False,
        bootstrap_host: Any = None,
        bootstrap_port: Any = None,
        bootstrap_room: Any = None,
        data_parallel_rank: int | None = None,
    ) -> dict[str, Any] | AsyncIterator[dict[str, Any]]:
        bootstrap = (bootstrap_host, bootstrap_port, bootstrap_room)
        return await self._generate(input_ids, sampling_params, stream, None, prompt, bootstrap)

    def _stored_events(self, ids: list[int], first_new: int) -> list[Any]:
        events: list[Any] = []
        page = self.page
        parent: int | None = None  # 0.5.4 sends none for a node's first page
        for i in range(first_new, len(ids) // page):
            tokens = ids[i * page : (i + 1) * page]
            block = hash(tuple(tokens))
            events.append(["BlockStored", [block], parent, tokens, page, None])
            parent = block
        return events
