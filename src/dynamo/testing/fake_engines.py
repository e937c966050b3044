"""Fakes of SGLang's and TensorRT-LLM's Python engine APIs, for adapter tests without a GPU.

They honour the signatures our adapters use (`sgl.Engine(server_args=...)`,
`async_generate(..., stream=True, rid=...)`, `tokenizer_manager.abort_request`, `ServerArgs`
`add_cli_args`/`from_cli_args`; `tensorrt_llm.LLM(model, **kwargs)`, `generate_async(inputs,
sampling_params, ..., streaming=True)` returning an async-iterable `RequestOutput` with
`abort()`, `get_kv_cache_events_async`, `get_stats_async`) and their output shapes. The
"model" is deterministic: each next token is the previous one + 1 (mod `VOCAB`).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import time
from collections.abc import AsyncIterator
from types import SimpleNamespace
from typing import Any

import msgpack
import zmq

from dynamo.protocols.hashing import block_hashes

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


# --- SGLang ------------------------------------------------------------------------------
@dataclasses.dataclass
class FakeServerArgs:
    """The subset of `sglang.srt.server_args.ServerArgs` the adapter reads."""

    model_path: str
    tokenizer_path: str | None = None
    served_model_name: str | None = None
    page_size: int | None = 1
    tp_size: int = 1
    dp_size: int = 1
    context_length: int | None = None
    skip_tokenizer_init: bool = False
    kv_events_config: str | None = None
    max_running_requests: int | None = None
    chunked_prefill_size: int | None = None
    incremental_streaming_output: bool = False
    disaggregation_mode: str = "null"

    def __post_init__(self) -> None:
        if self.page_size is not None and self.page_size < 1:
            raise ValueError(f"page_size must be >= 1, got {self.page_size}")

    @staticmethod
    def add_cli_args(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--model-path", "--model", type=str, required=True)
        parser.add_argument("--tokenizer-path", type=str, default=None)
        parser.add_argument("--served-model-name", type=str, default=None)
        parser.add_argument("--page-size", type=int, default=1)
        parser.add_argument("--tp-size", "--tp", type=int, default=1)
        parser.add_argument("--dp-size", "--dp", type=int, default=1)
        parser.add_argument("--context-length", type=int, default=None)
        parser.add_argument("--kv-events-config", type=str, default=None)
        parser.add_argument("--max-running-requests", type=int, default=None)
        parser.add_argument("--chunked-prefill-size", type=int, default=None)
        parser.add_argument("--incremental-streaming-output", action="store_true")
        parser.add_argument("--trust-remote-code", action="store_true")
        parser.add_argument(
            "--disaggregation-mode", choices=["null", "prefill", "decode"], default="null"
        )

    @classmethod
    def from_cli_args(cls, args: argparse.Namespace) -> FakeServerArgs:
        names = [f.name for f in dataclasses.fields(cls) if f.name != "skip_tokenizer_init"]
        return cls(**{n: getattr(args, n) for n in names})


class FakeTokenizerManager:
    def __init__(self, context_len: int) -> None:
        self.context_len = context_len
        self.eos_token_ids = [EOS]
        self.aborted: list[str] = []
        self.abort_events: dict[str, asyncio.Event] = {}

    def abort_request(self, rid: str = "", abort_all: bool = False) -> None:
        self.aborted.append(rid)
        event = self.abort_events.get(rid)
        if event is not None:
            event.set()


class FakeSglEngine:
    """`sgl.Engine(server_args=...)`: token streams, prefix cache, ZMQ KV events."""

    token_delay_s = 0.0

    def __init__(self, **kwargs: Any) -> None:
        args: FakeServerArgs = kwargs["server_args"]
        if not args.skip_tokenizer_init:
            raise ValueError("this fake serves token ids only (skip_tokenizer_init=True)")
        self.server_args = args
        self.page = args.page_size or 1
        context = args.context_length or 4096
        self.tokenizer_manager = FakeTokenizerManager(context)
        self.scheduler_info = {
            "max_total_num_tokens": 64 * self.page,
            "max_req_input_len": context - 1,
            "max_running_requests": args.max_running_requests or 8,
        }
        self.cache = FakePrefixCache(self.page)
        self.requests: list[dict[str, Any]] = []
        self.shut_down = False
        self._pub: zmq.Socket[bytes] | None = None
        self._topic = b""
        self._seq = 0
        if args.kv_events_config:
            cfg = json.loads(args.kv_events_config)
            self._ctx = zmq.Context()
            self._pub = self._ctx.socket(zmq.PUB)
            self._pub.bind(cfg["endpoint"])
            self._topic = cfg.get("topic", "").encode()

    async def async_generate(
        self,
        prompt: str | list[str] | None = None,
        sampling_params: dict[str, Any] | list[dict[str, Any]] | None = None,
        input_ids: list[int] | list[list[int]] | None = None,
        image_data: Any = None,
        return_logprob: bool | list[bool] | None = False,
        logprob_start_len: int | list[int] | None = None,
        top_logprobs_num: int | list[int] | None = None,
        token_ids_logprob: list[int] | list[list[int]] | None = None,
        lora_path: list[str | None] | None = None,
        custom_logit_processor: list[str] | str | None = None,
        return_hidden_states: bool = False,
        stream: bool = False,
        bootstrap_host: str | list[str] | None = None,
        bootstrap_port: int | list[int] | None = None,
        bootstrap_room: int | list[int] | None = None,
        data_parallel_rank: int | None = None,
        rid: str | list[str] | None = None,
    ) -> dict[str, Any] | AsyncIterator[dict[str, Any]]:
        if prompt is not None or input_ids is None:
            raise ValueError("this fake takes input_ids (skip_tokenizer_init=True)")
        if not isinstance(input_ids[0], int) or not isinstance(rid, str):
            raise ValueError("this fake takes one request at a time")
        ids: list[int] = [int(t) for t in input_ids]
        params = dict(sampling_params or {})  # type: ignore[arg-type]
        self.requests.append({"input_ids": ids, "sampling_params": params, "rid": rid})
        cached, stored = self.cache.lookup_and_store(ids)
        self._publish_stored(stored)
        gen = self._stream(ids, params, rid, cached)
        if stream:
            return gen
        chunks = [chunk async for chunk in gen]
        return chunks[-1]

    async def _stream(
        self, ids: list[int], params: dict[str, Any], rid: str, cached: int
    ) -> AsyncIterator[dict[str, Any]]:
        aborted = self.tokenizer_manager.abort_events.setdefault(rid, asyncio.Event())
        out: list[int] = []
        stops = set(params.get("stop_token_ids") or [])
        eos = set() if params.get("ignore_eos") else {EOS}
        limit = int(params.get("max_new_tokens", 128))
        finish: dict[str, Any] | None = None
        while finish is None:
            await asyncio.sleep(self.token_delay_s)
            if aborted.is_set():
                finish = {"type": "abort", "message": "aborted"}
                break
            tok = next_token((out or ids)[-1])
            out.append(tok)
            if tok in eos or tok in stops:
                finish = {"type": "stop", "matched": tok}
            elif len(out) >= limit:
                finish = {"type": "length", "length": limit}
            chunk_ids = [tok] if self.server_args.incremental_streaming_output else list(out)
            yield {"output_ids": chunk_ids, "meta_info": self._meta(rid, ids, out, cached, finish)}
        if finish is not None and finish["type"] == "abort":
            yield {
                "output_ids": [] if self.server_args.incremental_streaming_output else out,
                "meta_info": self._meta(rid, ids, out, cached, finish),
            }

    @staticmethod
    def _meta(rid: str, ids: list[int], out: list[int], cached: int, finish: Any) -> dict:
        return {
            "id": rid,
            "finish_reason": finish,
            "prompt_tokens": len(ids),
            "completion_tokens": len(out),
            "cached_tokens": cached,
        }

    def _publish_stored(self, blocks: list[list[int]]) -> None:
        if self._pub is None or not blocks:
            return
        tokens = [t for b in blocks for t in b]
        # SGLang's older array form: [tag, block_hashes, parent, token_ids, block_size, lora_id]
        event = ["BlockStored", block_hashes(tokens, self.page), None, tokens, self.page, None]
        payload = msgpack.packb([time.time(), [event], 0])
        self._pub.send_multipart([self._topic, self._seq.to_bytes(8, "big"), payload])
        self._seq += 1

    def shutdown(self) -> None:
        self.shut_down = True
        if self._pub is not None:
            self._pub.close(linger=0)
            self._ctx.term()
            self._pub = None


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
