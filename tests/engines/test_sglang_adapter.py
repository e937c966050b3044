"""`SglangEngine` against fakes of SGLang's offline engine API at both ends of the supported
range (0.5.4 and 0.5.23; no GPU, no SGLang). The real packages: `tests/engines/real`."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import msgspec
import pytest

from dynamo.engines.sglang import SglangEngine, finish_reason, parse_sglang_args, sampling_params
from dynamo.engines.zmq_kv_events import external_hash
from dynamo.engines.zmq_kv_subscriber import free_tcp_port
from dynamo.protocols.engine import EngineOutput, EngineRequest
from dynamo.protocols.hashing import block_hashes
from dynamo.protocols.kv_events import KvStored
from dynamo.protocols.model_card import WorkerRole
from dynamo.runtime.errors import ConfigError, InvalidRequestError, PromptTooLongError
from dynamo.runtime.transport.base import RequestContext
from dynamo.testing.engine_sink import RecordingEngineSink
from dynamo.testing.fake_engines import EOS
from dynamo.testing.fake_sglang import (
    FakeServerArgs,
    FakeServerArgs054,
    FakeSglEngine,
    FakeSglEngine054,
)

Started = tuple[SglangEngine, RecordingEngineSink]
VERSIONS = {
    "0.5.4": (FakeServerArgs054, FakeSglEngine054),
    "0.5.23": (FakeServerArgs, FakeSglEngine),
}


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


async def start(version: str, publish_kv_events: bool = True, **args: Any) -> Started:
    """An engine built the way `python -m dynamo.sglang` builds it: `prepare()`, then start."""
    args_cls, engine_cls = VERSIONS[version]
    engine = SglangEngine(
        args_cls(**args), engine_factory=engine_cls, publish_kv_events=publish_kv_events
    )
    engine.prepare()
    sink = RecordingEngineSink()
    await engine.start(sink)
    return engine, sink


@pytest.fixture(params=sorted(VERSIONS))
async def started(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Started]:
    engine, sink = await start(
        request.param, model_path=str(tmp_path), page_size=4, context_length=64
    )
    yield engine, sink
    await engine.shutdown()


async def stored_after_requests(
    engine: SglangEngine, sink: RecordingEngineSink, prompts: list[list[int]]
) -> list[KvStored]:
    """The BlockStored events of `prompts`, sent in order once SUB has joined PUB."""
    warmup = [900 + i for i in range(engine._info.kv_block_size)]  # type: ignore[union-attr]
    for _ in range(200):  # PUB/SUB needs a moment to connect; resend new prompts until heard
        await collect(engine, req(warmup, max_tokens=1))
        try:
            await asyncio.wait_for(sink.arrived.wait(), 0.05)
            break
        except TimeoutError:
            warmup = [(t + 7) % 1000 for t in warmup]
    heard = len(sink.kv_events)
    for prompt in prompts:
        sink.arrived.clear()
        await collect(engine, req(prompt, max_tokens=1))
        await asyncio.wait_for(sink.arrived.wait(), 10)
    return [e.data for e in sink.kv_events[heard:] if isinstance(e.data, KvStored)]


async def test_engine_info_from_sglang(started: Started) -> None:
    engine, _ = started
    assert engine._info is not None
    assert (engine._info.kv_block_size, engine._info.total_kv_blocks) == (4, 64)
    assert engine._info.context_length == 64
    assert engine.server_args.skip_tokenizer_init is True
    assert engine._engine.server_args.skip_tokenizer_init is True
    # 0.5.23 reports the scheduler's figure; 0.5.4 none: SGLang's default, total tokens // 2
    assert engine._info.max_num_seqs == 128


@pytest.mark.parametrize("version", sorted(VERSIONS))
async def test_max_running_requests_as_configured(version: str, tmp_path: Path) -> None:
    engine, _ = await start(
        version, False, model_path=str(tmp_path), page_size=4, max_running_requests=5
    )
    await engine.shutdown()
    assert engine._info is not None and engine._info.max_num_seqs == 5


async def test_a_msgspec_server_args_is_replaced(tmp_path: Path) -> None:
    """SGLang 0.5.23's ServerArgs is a msgspec struct: `dataclasses.replace` refuses it."""
    engine, _ = await start("0.5.23", model_path=str(tmp_path))
    await engine.shutdown()
    assert isinstance(engine.server_args, msgspec.Struct)
    assert engine.server_args.skip_tokenizer_init is True
    assert json.loads(engine.server_args.kv_events_config)["publisher"] == "zmq"


async def test_cumulative_output_ids_become_deltas(started: Started) -> None:
    engine, _ = started
    outs = await collect(engine, req([10, 11, 12], max_tokens=4))
    assert [o["token_ids"] for o in outs] == [[13], [14], [15], [16]]
    assert outs[-1]["finish_reason"] == "length"
    assert outs[-1]["usage"] == {"prompt_tokens": 3, "completion_tokens": 4, "cached_tokens": 0}
    fake = engine._engine
    assert fake.requests[0]["sampling_params"] == {
        "max_new_tokens": 4,
        "ignore_eos": False,
        "temperature": 0.0,
    }


async def test_our_rid_where_sglang_takes_one(tmp_path: Path) -> None:
    engine, _ = await start("0.5.23", False, model_path=str(tmp_path))
    fake = engine._engine
    try:
        await collect(engine, req([10], max_tokens=1))
    finally:
        await engine.shutdown()
    assert fake.requests[0]["rid"].startswith("r1-")


async def test_without_rid_sglang_names_the_request(tmp_path: Path) -> None:
    """SGLang 0.5.4's `async_generate` has no `rid`: passing one fails every request."""
    engine, _ = await start("0.5.4", False, model_path=str(tmp_path))
    fake = engine._engine
    try:
        outs = await collect(engine, req([10], max_tokens=2))
    finally:
        await engine.shutdown()
    assert [o["token_ids"] for o in outs] == [[11], [12]]
    assert not fake.requests[0]["rid"].startswith("r1-")


@pytest.mark.parametrize(
    ("version", "flag"),
    [("0.5.4", "stream_output"), ("0.5.23", "incremental_streaming_output")],
)
async def test_incremental_streaming_output(version: str, flag: str, tmp_path: Path) -> None:
    engine, _ = await start(version, False, model_path=str(tmp_path), **{flag: True})
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


async def test_no_max_tokens_fills_what_sglang_accepts(started: Started) -> None:
    """SGLang <= 0.5.9 refuses max_new_tokens + prompt >= context length."""
    engine, _ = started
    outs = await collect(engine, req(list(range(100, 160)), ignore_eos=True))
    assert engine._engine.requests[0]["sampling_params"]["max_new_tokens"] == 3
    assert outs[-1]["finish_reason"] == "length"
    assert outs[-1]["usage"]["completion_tokens"] == 3
    with pytest.raises(PromptTooLongError):
        await collect(engine, req(list(range(63))))


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
    stored = await stored_after_requests(engine, sink, [prompt])
    assert [b.tokens_hash for s in stored for b in s.blocks] == block_hashes(prompt, 4)


@pytest.mark.parametrize("version", sorted(VERSIONS))
async def test_a_prompt_extending_a_cached_one_links_to_it(version: str, tmp_path: Path) -> None:
    """SGLang 0.5.4 sends no parent for the first page of a new radix node."""
    engine, sink = await start(version, model_path=str(tmp_path), page_size=4)
    first = list(range(300, 308))
    try:
        stored = await stored_after_requests(engine, sink, [first, [*first, 1, 2, 3, 4]])
    finally:
        await engine.shutdown()
    pages = [b.block_hash for s in stored[:-1] for b in s.blocks]
    assert len(pages) == 2 and stored[0].parent_hash is None
    assert stored[-1].parent_hash == pages[-1]
    if version == "0.5.4":  # each page hashed alone
        assert pages[-1] == external_hash(hash(tuple(first[4:])))


async def test_kv_events_bind_option_is_honoured(tmp_path: Path) -> None:
    """0.5.23's `bind: true` makes SGLang bind a concrete address; we must connect."""
    cfg = {"publisher": "zmq", "endpoint": f"tcp://127.0.0.1:{free_tcp_port()}", "bind": True}
    engine, sink = await start(
        "0.5.23", model_path=str(tmp_path), page_size=4, kv_events_config=json.dumps(cfg)
    )
    try:
        stored = await stored_after_requests(engine, sink, [list(range(400, 404))])
    finally:
        await engine.shutdown()
    assert [b.tokens_hash for s in stored for b in s.blocks] == block_hashes(
        [400, 401, 402, 403], 4
    )


async def test_start_builds_the_engine_off_the_event_loop(tmp_path: Path) -> None:
    """A model load must not stall the loop (lease keep-alive, health) while it runs."""
    loop_ran = threading.Event()

    def slow_engine(**kwargs: Any) -> FakeSglEngine:
        if not loop_ran.wait(30):  # the loop sets it, unless the loop waits for us
            raise RuntimeError("the event loop was blocked while the engine was built")
        return FakeSglEngine(**kwargs)

    async def tick() -> None:
        await asyncio.sleep(0)
        loop_ran.set()

    engine = SglangEngine(
        FakeServerArgs(model_path=str(tmp_path)),
        engine_factory=slow_engine,
        publish_kv_events=False,
    )
    ticker = asyncio.create_task(tick())
    await engine.start(RecordingEngineSink())
    await ticker
    await engine.shutdown()
    assert engine._info is not None


async def test_start_off_the_main_thread_needs_sglang_to_allow_it(tmp_path: Path) -> None:
    """SGLang 0.5.4 installs signal handlers while building: `prepare()` on the main thread."""
    engine = SglangEngine(
        FakeServerArgs054(model_path=str(tmp_path)), engine_factory=FakeSglEngine054
    )
    with pytest.raises(ConfigError, match="SGLang engine failed to start: signal only works"):
        await engine.start(RecordingEngineSink())


@pytest.mark.parametrize("version", sorted(VERSIONS))
async def test_cancel_aborts_the_sglang_request(version: str, tmp_path: Path) -> None:
    engine, _ = await start(version, False, model_path=str(tmp_path), context_length=10_000)
    fake = engine._engine
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
        engine.prepare()
    bad = FakeServerArgs(model_path=str(tmp_path), kv_events_config="{not json")
    engine = SglangEngine(bad, engine_factory=FakeSglEngine)
    with pytest.raises(ConfigError, match="--kv-events-config is not JSON"):
        engine.prepare()


def test_sampling_params_and_finish_reasons() -> None:
    r = req([1, 2], max_tokens=100, min_tokens=2, stop_token_ids=[9], ignore_eos=True)
    r["sampling_options"] = {"top_p": 0.5, "top_k": 0}
    assert sampling_params(r, 10) == {
        "max_new_tokens": 7,
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


@pytest.mark.parametrize("version", sorted(VERSIONS))
def test_parse_sglang_args(version: str, tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{}")
    config, args, role = parse_sglang_args(
        [
            "--model-path",
            str(tmp_path),
            "--page-size",
            "16",
            "--tp",  # the guide's spelling: SGLang's parser takes it for --tp-size
            "2",
            "--disaggregation-mode",
            "decode",
            "--namespace",
            "ns1",
            "--migration-limit",
            "2",
            "--dyn-tool-call-parser",
            "qwen3_coder",
            "--dyn-reasoning-parser",
            "qwen3",
        ],
        server_args_cls=VERSIONS[version][0],
    )
    assert config.parsers.card_fields() == {
        "tool_call_parser": "qwen3_coder",
        "reasoning_parser": "qwen3",
    }
    assert (args.page_size, args.tp_size) == (16, 2)
    assert args.served_model_name == str(tmp_path)
    assert role is WorkerRole.DECODE
    assert config.runtime.namespace == "ns1" and config.migration_limit == 2


def test_parse_sglang_args_errors() -> None:
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
