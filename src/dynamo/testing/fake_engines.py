"""Fakes of SGLang's Python engine API, for adapter tests without a GPU, and the toy model and
prefix cache the engine fakes share (TensorRT-LLM's fakes are in `dynamo.testing.fake_trtllm`).

They honour the signatures our adapters use (`sgl.Engine(server_args=...)`,
`async_generate(..., stream=True, rid=...)`, `tokenizer_manager.abort_request`, `ServerArgs`
`add_cli_args`/`from_cli_args`) and their output shapes. The "model" is deterministic: each
next token is the previous one + 1 (mod `VOCAB`).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import time
from collections.abc import AsyncIterator
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
