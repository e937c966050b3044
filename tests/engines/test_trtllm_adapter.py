"""`TrtllmEngine` against fakes that mirror TensorRT-LLM 1.x's LLM API (no GPU, no TensorRT-LLM)."""

from __future__ import annotations

import asyncio
import json
import shutil
import sys
import threading
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from dynamo.engines.trtllm import TrtllmEngine, sampling_kwargs
from dynamo.engines.trtllm_args import parse_trtllm_args
from dynamo.engines.trtllm_events import KvEventTranslator, StatsView
from dynamo.engines.trtllm_model import ModelFacts, read_model_facts
from dynamo.mocker.tinymodel import tiny_model_path
from dynamo.protocols.engine import EngineOutput, EngineRequest
from dynamo.protocols.hashing import block_hashes
from dynamo.protocols.kv_events import KvCacheEvent, KvCleared, KvRemoved, KvStored, StoredBlock
from dynamo.runtime.errors import ConfigError
from dynamo.runtime.transport.base import RequestContext
from dynamo.testing.engine_sink import RecordingEngineSink
from dynamo.testing.fake_trtllm import (
    FAKE_MAX_NUM_BLOCKS,
    FakeRequestOutput,
    FakeSamplingParams,
    FakeTorchLLM,
    FakeTrtEngineLLM,
    fake_tensorrt_llm_modules,
)

EOS = 2  # the tiny model's </s>
Started = tuple[TrtllmEngine, RecordingEngineSink]


def req(tokens: list[int], **stop: Any) -> EngineRequest:
    return {
        "request_id": "t1",
        "model": "m",
        "token_ids": tokens,
        "stop_conditions": stop,
        "sampling_options": {"temperature": 0.0, "seed": 7},
    }


async def collect(engine: TrtllmEngine, r: EngineRequest) -> list[EngineOutput]:
    return [o async for o in engine.generate(r, RequestContext(r["request_id"]))]


async def eventually(condition: Callable[[], bool]) -> None:
    for _ in range(500):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition not met within 5 s")


def model_dir(tmp_path: Path, **config: Any) -> Path:
    """A copy of the tiny model with `config` merged into its config.json (None deletes)."""
    root = tmp_path / "model"
    shutil.copytree(tiny_model_path(), root, ignore=shutil.ignore_patterns("*.py", "__pycache__"))
    data = json.loads((root / "config.json").read_text())
    data.update(config)
    (root / "config.json").write_text(json.dumps({k: v for k, v in data.items() if v is not None}))
    return root


def recording_factory(cls: type[Any] = FakeTorchLLM) -> tuple[Callable[..., Any], list[Any]]:
    made: list[Any] = []

    def factory(**kwargs: Any) -> Any:
        made.append(cls(**kwargs))
        return made[-1]

    return factory, made


def make(tmp_path: Path, factory: Callable[..., Any] = FakeTorchLLM, **kwargs: Any) -> TrtllmEngine:
    llm_kwargs = {
        "model": str(tiny_model_path()),
        "backend": "pytorch",
        "max_seq_len": 256,
        "kv_cache_config": {"tokens_per_block": 4},
        **kwargs,
    }
    return TrtllmEngine(
        llm_kwargs,
        llm_factory=factory,
        sampling_params_cls=FakeSamplingParams,
        poll_timeout_s=0.05,
        idle_repoll_s=60,
    )


@pytest.fixture
async def started(tmp_path: Path) -> AsyncIterator[Started]:
    engine, sink = make(tmp_path), RecordingEngineSink()
    await engine.start(sink)
    yield engine, sink
    await engine.shutdown()


async def test_start_enables_kv_events_iteration_stats_and_token_mode(started: Started) -> None:
    engine, _ = started
    fake: FakeTorchLLM = engine._llm
    assert fake.kv_cache_config == {
        "tokens_per_block": 4,
        "enable_block_reuse": True,
        "event_buffer_max_size": 1024,
    }
    assert fake.args.enable_iter_perf_stats is True
    assert fake.tokenizer is None  # skip_tokenizer_init=True
    assert fake.backend == "pytorch"
    assert engine._info is not None
    assert (engine._info.kv_block_size, engine._info.context_length) == (4, 256)


async def test_every_request_carries_end_id_and_pad_id_from_the_model(started: Started) -> None:
    # TensorRT-LLM without its tokenizer raises ValueError for a SamplingParams without end_id.
    engine, _ = started
    outs = await collect(engine, req([10, 11], max_tokens=3))
    assert [o["token_ids"] for o in outs] == [[12], [13], [14]]
    assert outs[-1]["finish_reason"] == "length"
    assert outs[-1]["usage"] == {"prompt_tokens": 2, "completion_tokens": 3, "cached_tokens": 0}
    assert engine._llm.results[0].params == FakeSamplingParams(
        end_id=EOS,
        pad_id=EOS,
        max_tokens=3,
        temperature=0.0,
        seed=7,
        detokenize=False,
        return_perf_metrics=True,
    )


async def test_eos_stop_token_and_cached_tokens_from_perf_metrics(started: Started) -> None:
    engine, _ = started
    outs = await collect(engine, req([EOS - 1], max_tokens=10))
    assert outs[-1]["finish_reason"] == "eos"  # "stop" on end_id, no stop_reason
    outs = await collect(engine, req([30], max_tokens=10, stop_token_ids=[32]))
    assert outs[-1]["finish_reason"] == "stop"
    prompt = list(range(40, 49))
    first = await collect(engine, req(prompt, max_tokens=1))
    again = await collect(engine, req(prompt, max_tokens=1))
    assert first[-1]["usage"]["cached_tokens"] == 0
    assert again[-1]["usage"]["cached_tokens"] == 8  # 2 reused blocks of 4


async def test_cancelled_and_timeout_finish_reasons_are_not_errors(started: Started) -> None:
    engine, _ = started
    FakeRequestOutput.time_out_after_tokens = 2
    try:
        outs = await collect(engine, req([100], max_tokens=10))
    finally:
        FakeRequestOutput.time_out_after_tokens = None
    assert [o["token_ids"] for o in outs] == [[101], [102]]
    assert outs[-1]["finish_reason"] == "cancelled"  # TensorRT-LLM's "timeout"


async def test_kv_event_reader_waits_for_the_first_request(started: Started) -> None:
    # TensorRT-LLM's get_kv_cache_events_async asserts until the first request.
    engine, sink = started
    fake: FakeTorchLLM = engine._llm
    await asyncio.sleep(0.1)
    assert fake.kv_event_calls == 0
    assert not any(task.done() for task in engine._tasks)
    prompt = list(range(60, 69))
    await collect(engine, req(prompt, max_tokens=1))
    await asyncio.wait_for(sink.arrived.wait(), 5)
    (event,) = sink.kv_events
    assert isinstance(event.data, KvStored)
    assert [b.tokens_hash for b in event.data.blocks] == block_hashes(prompt, 4)


async def test_kv_event_reader_survives_an_engine_that_is_not_ready(tmp_path: Path) -> None:
    engine, sink = make(tmp_path), RecordingEngineSink()
    await engine.start(sink)
    try:
        engine._served.set()  # as if a request had come: the engine's reader still asserts
        await eventually(lambda: engine._llm.kv_event_calls > 0)
        assert not any(task.done() for task in engine._tasks)
        await collect(engine, req(list(range(70, 74)), max_tokens=1))
        await asyncio.wait_for(sink.arrived.wait(), 5)
        assert len(sink.kv_events) == 1
    finally:
        await engine.shutdown()


async def test_stats_reader_does_not_spin_before_or_after_requests(started: Started) -> None:
    # get_stats_async is empty before the first request and after a read timed out.
    engine, sink = started
    fake: FakeTorchLLM = engine._llm
    await asyncio.sleep(0.2)
    assert fake.stats_calls == 0
    await collect(engine, req(list(range(80, 89)), max_tokens=1))
    await eventually(lambda: engine.metrics()[0].total_kv_blocks == FAKE_MAX_NUM_BLOCKS)
    await asyncio.sleep(0.3)  # six poll timeouts: a spinning reader polls thousands of times
    assert fake.stats_calls <= 2
    assert fake._iter_stats is not None and fake._iter_stats.polls <= 4
    assert sink.load_changes == 1
    assert engine._stats.active_requests == 1  # the last stats, taken while it ran
    m = engine.metrics()[0]
    assert (m.total_kv_blocks, m.active_kv_blocks, m.running_requests) == (100, 2, 0)


async def test_cancel_aborts_the_trtllm_request(tmp_path: Path) -> None:
    engine = make(tmp_path, max_seq_len=100_000)
    await engine.start(RecordingEngineSink())
    FakeRequestOutput.token_delay_s = 0.001
    ctx = RequestContext("c")
    outs: list[EngineOutput] = []
    try:
        async for out in engine.generate(req([5], max_tokens=50_000, ignore_eos=True), ctx):
            outs.append(out)
            if len(outs) == 2:
                await eventually(lambda: engine.metrics()[0].running_requests == 1)
                ctx.stop()
    finally:
        FakeRequestOutput.token_delay_s = 0.0
        fake: FakeTorchLLM = engine._llm
        await engine.shutdown()
    assert outs[-1]["finish_reason"] == "cancelled"
    assert fake.results[0].aborted and fake.shut_down
    assert engine._in_flight == 0


async def test_default_pytorch_config_takes_the_context_length_from_the_model(
    tmp_path: Path,
) -> None:
    engine = make(tmp_path, max_seq_len=None)
    info = await engine.start(RecordingEngineSink())
    try:
        assert engine._llm.args.max_seq_len is None  # what the PyTorch backend reports
        assert info.context_length == 131072  # the tiny model's max_position_embeddings
    finally:
        await engine.shutdown()


async def test_a_failed_start_shuts_the_engine_down(tmp_path: Path) -> None:
    factory, made = recording_factory()
    engine = make(
        tmp_path,
        factory,
        model=str(model_dir(tmp_path, max_position_embeddings=None)),
        max_seq_len=None,
    )
    with pytest.raises(ConfigError, match="set max_seq_len in --extra-engine-args"):
        await engine.start(RecordingEngineSink())
    (llm,) = made
    assert llm.shut_down
    assert engine._tasks == [] and engine._llm is None


async def test_a_start_cancelled_during_model_loading_shuts_the_engine_down(
    tmp_path: Path,
) -> None:
    loading, release = threading.Event(), threading.Event()
    made: list[FakeTorchLLM] = []

    def slow_factory(**kwargs: Any) -> FakeTorchLLM:
        loading.set()
        release.wait(10)
        made.append(FakeTorchLLM(**kwargs))
        return made[-1]

    engine = make(tmp_path, slow_factory)
    start = asyncio.create_task(engine.start(RecordingEngineSink()))
    await asyncio.to_thread(loading.wait, 10)
    start.cancel()
    with pytest.raises(asyncio.CancelledError):
        await start
    release.set()
    await eventually(lambda: bool(made) and made[0].shut_down)
    assert engine._llm is None and engine._tasks == []


async def test_invalid_llm_argument_is_a_config_error(tmp_path: Path) -> None:
    engine = make(tmp_path, no_such_option=1)
    with pytest.raises(ConfigError, match=r"invalid arguments: \['no_such_option'\]"):
        await engine.start(RecordingEngineSink())


async def test_a_tensorrt_only_argument_with_the_pytorch_backend_is_a_config_error(
    tmp_path: Path,
) -> None:
    engine = make(tmp_path, fast_build=True)
    with pytest.raises(ConfigError, match=r"specific to TensorRT backend .*\['fast_build'\]"):
        await engine.start(RecordingEngineSink())


@pytest.mark.parametrize(
    ("backend", "cls"), [("pytorch", FakeTorchLLM), ("tensorrt", FakeTrtEngineLLM)]
)
async def test_backend_picks_the_llm_class(
    monkeypatch: pytest.MonkeyPatch, backend: str, cls: type[Any]
) -> None:
    for name, module in fake_tensorrt_llm_modules().items():
        monkeypatch.setitem(sys.modules, name, module)
    _, kwargs = parse_trtllm_args(
        ["--model-path", str(tiny_model_path()), "--backend", backend], resolve_model_path=False
    )
    engine = TrtllmEngine(kwargs, poll_timeout_s=0.05, idle_repoll_s=60)
    info = await engine.start(RecordingEngineSink())
    try:
        assert type(engine._llm) is cls
        # enable_iter_perf_stats is a PyTorch-backend field (TrtLlmArgs would refuse it)
        assert engine._llm.args.enable_iter_perf_stats is (backend == "pytorch")
        assert engine._llm.stats_enabled
        assert info.context_length == 131072
        outs = await collect(engine, req([EOS - 1], max_tokens=4))
        assert outs[-1]["finish_reason"] == "eos"
    finally:
        await engine.shutdown()


async def test_tensorrt_backend_missing_from_the_install_is_a_config_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name, module in fake_tensorrt_llm_modules(tensorrt_engine=False).items():
        monkeypatch.setitem(sys.modules, name, module)
    monkeypatch.setitem(sys.modules, "tensorrt_llm._tensorrt_engine", None)
    engine = TrtllmEngine({"model": str(tiny_model_path()), "backend": "tensorrt"})
    with pytest.raises(
        ConfigError, match=r"has no TensorRT engine backend .*use --backend pytorch"
    ):
        await engine.start(RecordingEngineSink())


def test_translator_handles_all_event_kinds() -> None:
    tr = KvEventTranslator(block_size=2)
    stored = {
        "event_id": 9,
        "data": {
            "type": "stored",
            "parent_hash": -1,
            "blocks": [
                {
                    "type": "stored_block",
                    "block_hash": 5,
                    "tokens": [
                        {"type": "unique_token", "token_id": 1},
                        {"type": "unique_token", "token_id": 2},
                    ],
                },
                {"type": "stored_block", "block_hash": 6, "tokens": [{"token_id": 3}]},  # partial
            ],
        },
    }
    assert tr.translate(stored) == [
        KvCacheEvent(0, KvStored(2**64 - 1, (StoredBlock(5, block_hashes([1, 2], 2)[0]),)))
    ]
    assert tr.translate('{"event_id": 1, "data": {"type": "removed", "block_hashes": [5]}}') == [
        KvCacheEvent(1, KvRemoved((5,)))
    ]
    assert tr.translate({"event_id": 2, "data": {"type": "created"}}) == []
    assert tr.translate({"data": {"type": "cleared"}, "attention_dp_rank": 1}) == [
        KvCacheEvent(2, KvCleared(), 1)
    ]
    assert tr.translate({"nonsense": 1}) == []


def test_stats_view() -> None:
    s = StatsView()
    assert s.update(
        '{"numActiveRequests": 2, "kvCacheStats": {"usedNumBlocks": 5, '
        '"maxNumBlocks": 50, "cacheHitRate": 0.25}}'
    )
    assert (s.active_requests, s.used_blocks, s.max_blocks, s.cache_hit_rate) == (2, 5, 50, 0.25)
    assert not s.update({"numActiveRequests": 2})


def test_sampling_kwargs_send_the_other_eos_ids_as_stop_tokens() -> None:
    facts = ModelFacts(end_id=2, pad_id=0, eos_token_ids=(2, 7), max_position_embeddings=None)
    assert sampling_kwargs(req([1] * 5, min_tokens=1, stop_token_ids=[3]), 8, facts) == {
        "max_tokens": 3,
        "ignore_eos": False,
        "end_id": 2,
        "pad_id": 0,
        "detokenize": False,
        "return_perf_metrics": True,
        "min_tokens": 1,
        "stop_token_ids": [3, 7],
        "temperature": 0.0,
        "seed": 7,
    }
    assert "stop_token_ids" not in sampling_kwargs(req([1], ignore_eos=True), 8, facts)


def test_model_facts_of_the_tiny_model() -> None:
    assert read_model_facts(tiny_model_path()) == ModelFacts(
        end_id=2, pad_id=2, eos_token_ids=(2,), max_position_embeddings=131072
    )


def test_model_facts_with_a_generation_config_and_a_pad_token(tmp_path: Path) -> None:
    root = model_dir(tmp_path, pad_token_id=0)
    (root / "generation_config.json").write_text('{"eos_token_id": [2, 9]}')
    assert read_model_facts(root) == ModelFacts(
        end_id=2, pad_id=0, eos_token_ids=(2, 9), max_position_embeddings=131072
    )


def test_model_facts_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"no tokenizer\.json"):
        read_model_facts(tmp_path)
    (tmp_path / "tokenizer.json").write_text("{not json")
    with pytest.raises(ConfigError, match="cannot load the tokenizer"):
        read_model_facts(tmp_path)


def test_hub_repo_only_for_a_hub_id(tmp_path: Path) -> None:
    assert make(tmp_path).hub_repo is None
    assert make(tmp_path, model="Qwen/Qwen3-0.6B").hub_repo == "Qwen/Qwen3-0.6B"
