"""`SglangEngine` against a fake of SGLang's offline engine API (no GPU, no SGLang)."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from dynamo.engines.sglang import SglangEngine, finish_reason, parse_sglang_args, sampling_params
from dynamo.protocols.engine import EngineOutput, EngineRequest
from dynamo.protocols.hashing import block_hashes
from dynamo.protocols.kv_events import KvStored
from dynamo.protocols.model_card import WorkerRole
from dynamo.runtime.errors import ConfigError, InvalidRequestError, PromptTooLongError
from dynamo.runtime.transport.base import RequestContext
from dynamo.testing.engine_sink import RecordingEngineSink
from dynamo.testing.fake_engines import EOS, FakeServerArgs, FakeSglEngine

Started = tuple[SglangEngine, RecordingEngineSink]


def req(tokens: list[int], **stop: Any) -> EngineRequest:
    return {
        "request_id": "r1",
        "model": "m",
        "token_ids": tokens,
        "stop_conditions": stop,
        "sampling_options": {"temperature": 0.0},
    }


async def collect(engine: SglangEngine, r: EngineRequest) -> list[EngineOutput]:
    return [o async for o in engine.generate(r, RequestContext(r["request_id"]))]


@pytest.fixture
async def started(tmp_path: Path) -> AsyncIterator[Started]:
    args = FakeServerArgs(model_path=str(tmp_path), page_size=4, context_length=64)
    engine = SglangEngine(args, engine_factory=FakeSglEngine)
    sink = RecordingEngineSink()
    await engine.start(sink)
    yield engine, sink
    await engine.shutdown()


async def test_engine_info_from_sglang(started: Started) -> None:
    engine, _ = started
    assert engine._info is not None
    assert (engine._info.kv_block_size, engine._info.total_kv_blocks) == (4, 64)
    assert engine._info.context_length == 64
    assert engine.server_args.skip_tokenizer_init is True
    fake: FakeSglEngine = engine._engine
    assert fake.server_args.skip_tokenizer_init is True


async def test_cumulative_output_ids_become_deltas(started: Started) -> None:
    engine, _ = started
    outs = await collect(engine, req([10, 11, 12], max_tokens=4))
    assert [o["token_ids"] for o in outs] == [[13], [14], [15], [16]]
    assert outs[-1]["finish_reason"] == "length"
    assert outs[-1]["usage"] == {"prompt_tokens": 3, "completion_tokens": 4, "cached_tokens": 0}
    fake: FakeSglEngine = engine._engine
    assert fake.requests[0]["sampling_params"] == {
        "max_new_tokens": 4,
        "ignore_eos": False,
        "temperature": 0.0,
    }
    assert fake.requests[0]["rid"].startswith("r1-")


async def test_incremental_streaming_output(tmp_path: Path) -> None:
    args = FakeServerArgs(
        model_path=str(tmp_path), page_size=4, context_length=64, incremental_streaming_output=True
    )
    engine = SglangEngine(args, engine_factory=FakeSglEngine, publish_kv_events=False)
    await engine.start(RecordingEngineSink())
    try:
        outs = await collect(engine, req([10], max_tokens=3))
    finally:
        await engine.shutdown()
    assert [o["token_ids"] for o in outs] == [[11], [12], [13]]
    assert outs[-1]["usage"]["completion_tokens"] == 3


async def test_eos_and_stop_tokens(started: Started) -> None:
    engine, _ = started
    outs = await collect(engine, req([EOS - 1], max_tokens=10))
    assert outs[-1]["finish_reason"] == "eos" and outs[-1]["token_ids"] == [EOS]
    outs = await collect(engine, req([20], max_tokens=10, stop_token_ids=[23]))
    assert outs[-1]["finish_reason"] == "stop"
    assert [t for o in outs for t in o["token_ids"]] == [21, 22, 23]


async def test_repeated_prompt_reports_cached_tokens(started: Started) -> None:
    engine, _ = started
    prompt = list(range(100, 110))  # two full pages of 4
    first = await collect(engine, req(prompt, max_tokens=1))
    second = await collect(engine, req(prompt, max_tokens=1))
    assert first[-1]["usage"]["cached_tokens"] == 0
    assert second[-1]["usage"]["cached_tokens"] == 8


async def test_kv_events_arrive_over_zmq_with_our_hashes(started: Started) -> None:
    engine, sink = started
    cfg = json.loads(engine.server_args.kv_events_config)
    assert cfg["endpoint"].startswith("tcp://*:") and cfg["publisher"] == "zmq"
    prompt = list(range(200, 212))
    stored: list[int] = []
    for _ in range(100):  # PUB/SUB needs a moment to connect; resend new prompts until heard
        await collect(engine, req(prompt, max_tokens=1))
        try:
            await asyncio.wait_for(sink.arrived.wait(), 0.05)
            break
        except TimeoutError:
            prompt = [t + 12 for t in prompt]
    for e in sink.kv_events:
        assert isinstance(e.data, KvStored)
        stored += [b.tokens_hash for b in e.data.blocks]
    assert stored == block_hashes(prompt, 4)


async def test_cancel_aborts_the_sglang_request(tmp_path: Path) -> None:
    args = FakeServerArgs(model_path=str(tmp_path), page_size=4, context_length=10_000)
    engine = SglangEngine(args, engine_factory=FakeSglEngine, publish_kv_events=False)
    await engine.start(RecordingEngineSink())
    fake: FakeSglEngine = engine._engine
    fake.token_delay_s = 0.001
    ctx = RequestContext("c")
    outs: list[EngineOutput] = []
    try:
        async for out in engine.generate(req([5], max_tokens=5000, ignore_eos=True), ctx):
            outs.append(out)
            if len(outs) == 2:
                ctx.stop()
    finally:
        await engine.shutdown()
    assert outs[-1]["finish_reason"] == "cancelled"
    assert fake.tokenizer_manager.aborted == [fake.requests[0]["rid"]]
    assert fake.shut_down


async def test_prompt_checks(started: Started) -> None:
    engine, _ = started
    with pytest.raises(PromptTooLongError):
        await collect(engine, req(list(range(64))))
    with pytest.raises(InvalidRequestError, match="max_tokens must be an integer >= 1"):
        await collect(engine, req([1], max_tokens=0))


async def test_bad_server_args_are_config_errors(tmp_path: Path) -> None:
    def failing(**kwargs: Any) -> Any:
        raise RuntimeError("Not enough memory. Please try to increase --mem-fraction-static.")

    engine = SglangEngine(FakeServerArgs(model_path=str(tmp_path)), engine_factory=failing)
    with pytest.raises(ConfigError, match="SGLang engine failed to start: Not enough memory"):
        await engine.start(RecordingEngineSink())


def test_sampling_params_and_finish_reasons() -> None:
    r = req([1, 2], max_tokens=100, min_tokens=2, stop_token_ids=[9], ignore_eos=True)
    r["sampling_options"] = {"top_p": 0.5, "top_k": 0}
    assert sampling_params(r, 10) == {
        "max_new_tokens": 8,
        "ignore_eos": True,
        "min_new_tokens": 2,
        "stop_token_ids": [9],
        "top_p": 0.5,
        "top_k": -1,
    }
    assert finish_reason(None, {2}) is None
    assert finish_reason({"type": "stop", "matched": 2}, {2}) == "eos"
    assert finish_reason({"type": "stop", "matched": "###"}, {2}) == "stop"
    assert finish_reason({"type": "length", "length": 3}, {2}) == "length"
    assert finish_reason({"type": "abort"}, {2}) == "cancelled"


def test_parse_sglang_args(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{}")
    config, args, role = parse_sglang_args(
        [
            "--model-path",
            str(tmp_path),
            "--page-size",
            "16",
            "--tp",
            "2",
            "--disaggregation-mode",
            "decode",
            "--namespace",
            "ns1",
            "--migration-limit",
            "2",
        ],
        server_args_cls=FakeServerArgs,
    )
    assert dataclasses.asdict(args)["page_size"] == 16 and args.tp_size == 2
    assert args.served_model_name == str(tmp_path)
    assert role is WorkerRole.DECODE
    assert config.runtime.namespace == "ns1" and config.migration_limit == 2
    with pytest.raises(ConfigError, match="unrecognized arguments: --bogus"):
        parse_sglang_args(
            ["--model-path", "x", "--bogus"],
            server_args_cls=FakeServerArgs,
            resolve_model_path=False,
        )
    with pytest.raises(ConfigError, match="SGLang rejected the server arguments: page_size"):
        parse_sglang_args(
            ["--model-path", "x", "--page-size", "0"],
            server_args_cls=FakeServerArgs,
            resolve_model_path=False,
        )


def test_hub_repo_only_for_a_hub_id(tmp_path: Path) -> None:
    local = SglangEngine(FakeServerArgs(model_path=str(tmp_path)), engine_factory=FakeSglEngine)
    assert local.hub_repo is None
    hub = SglangEngine(FakeServerArgs(model_path="Qwen/Qwen3-0.6B"), engine_factory=FakeSglEngine)
    assert hub.hub_repo == "Qwen/Qwen3-0.6B"
