"""`TrtllmEngine` against a fake of TensorRT-LLM's LLM API (no GPU, no TensorRT-LLM)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from dynamo.engines.trtllm import TrtllmEngine, parse_trtllm_args, sampling_kwargs
from dynamo.engines.trtllm_events import KvEventTranslator, StatsView
from dynamo.protocols.engine import EngineOutput, EngineRequest
from dynamo.protocols.hashing import block_hashes
from dynamo.protocols.kv_events import KvCacheEvent, KvCleared, KvRemoved, KvStored, StoredBlock
from dynamo.protocols.model_card import WorkerRole
from dynamo.runtime.errors import ConfigError
from dynamo.runtime.transport.base import RequestContext
from dynamo.testing.engine_sink import RecordingEngineSink
from dynamo.testing.fake_engines import EOS, FakeLLM, FakeRequestOutput, FakeSamplingParams

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


def make(tmp_path: Path, **kwargs: Any) -> TrtllmEngine:
    llm_kwargs = {
        "model": str(tmp_path),
        "backend": "pytorch",
        "max_seq_len": 256,
        "kv_cache_config": {"tokens_per_block": 4},
        **kwargs,
    }
    return TrtllmEngine(llm_kwargs, llm_factory=FakeLLM, sampling_params_cls=FakeSamplingParams)


@pytest.fixture
async def started(tmp_path: Path) -> AsyncIterator[Started]:
    engine, sink = make(tmp_path), RecordingEngineSink()
    await engine.start(sink)
    yield engine, sink
    await engine.shutdown()


async def test_start_enables_kv_events_and_token_mode(started: Started) -> None:
    engine, _ = started
    fake: FakeLLM = engine._llm
    assert fake.kv_cache_config == {
        "tokens_per_block": 4,
        "enable_block_reuse": True,
        "event_buffer_max_size": 1024,
    }
    assert fake.tokenizer is None  # skip_tokenizer_init=True
    assert engine._info is not None
    assert (engine._info.kv_block_size, engine._info.context_length) == (4, 256)


async def test_stream_deltas_usage_and_sampling(started: Started) -> None:
    engine, _ = started
    outs = await collect(engine, req([10, 11], max_tokens=3))
    assert [o["token_ids"] for o in outs] == [[12], [13], [14]]
    assert outs[-1]["finish_reason"] == "length"
    assert outs[-1]["usage"] == {"prompt_tokens": 2, "completion_tokens": 3, "cached_tokens": 0}
    params = engine._llm.results[0].params
    assert params == FakeSamplingParams(max_tokens=3, temperature=0.0, seed=7, detokenize=False)


async def test_eos_stop_and_cached_tokens(started: Started) -> None:
    engine, _ = started
    outs = await collect(engine, req([EOS - 1], max_tokens=10))
    assert outs[-1]["finish_reason"] == "eos"  # TRT-LLM: "stop" without a stop_reason
    outs = await collect(engine, req([30], max_tokens=10, stop_token_ids=[32]))
    assert outs[-1]["finish_reason"] == "stop"
    prompt = list(range(40, 49))
    await collect(engine, req(prompt, max_tokens=1))
    again = await collect(engine, req(prompt, max_tokens=1))
    assert again[-1]["usage"]["cached_tokens"] == 8


async def test_kv_events_and_stats_are_pumped(started: Started) -> None:
    engine, sink = started
    prompt = list(range(60, 69))
    await collect(engine, req(prompt, max_tokens=1))
    await asyncio.wait_for(sink.arrived.wait(), 5)
    (event,) = sink.kv_events
    assert isinstance(event.data, KvStored)
    assert [b.tokens_hash for b in event.data.blocks] == block_hashes(prompt, 4)
    for _ in range(100):
        if engine.metrics()[0].total_kv_blocks == 100:
            break
        await asyncio.sleep(0.01)
    m = engine.metrics()[0]
    assert (m.total_kv_blocks, m.active_kv_blocks) == (100, 2)
    assert sink.load_changes >= 1


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
                ctx.stop()
    finally:
        FakeRequestOutput.token_delay_s = 0.0
        fake: FakeLLM = engine._llm
        await engine.shutdown()
    assert outs[-1]["finish_reason"] == "cancelled"
    assert fake.results[0].aborted and fake.shut_down


async def test_invalid_llm_argument_is_a_config_error(tmp_path: Path) -> None:
    engine = make(tmp_path, no_such_option=1)
    with pytest.raises(ConfigError, match="LLM got invalid argument: no_such_option"):
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


def test_sampling_kwargs() -> None:
    assert sampling_kwargs(req([1] * 5, min_tokens=1, stop_token_ids=[3]), 8) == {
        "max_tokens": 3,
        "ignore_eos": False,
        "detokenize": False,
        "min_tokens": 1,
        "stop_token_ids": [3],
        "temperature": 0.0,
        "seed": 7,
    }


def test_parse_trtllm_args_with_extra_engine_args(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{}")
    yaml_file = tmp_path / "engine.yaml"
    yaml_file.write_text("max_seq_len: 4096\nkv_cache_config:\n  free_gpu_memory_fraction: 0.5\n")
    config, kwargs = parse_trtllm_args(
        [
            "--model-path",
            str(tmp_path),
            "--served-model-name",
            "qwen",
            "--extra-engine-args",
            str(yaml_file),
            "--disaggregation-mode",
            "prefill",
        ]
    )
    assert kwargs == {
        "max_seq_len": 4096,
        "kv_cache_config": {"free_gpu_memory_fraction": 0.5},
        "model": str(tmp_path),
        "tensor_parallel_size": 1,
        "backend": "pytorch",
    }
    assert config.served_model_name == "qwen" and config.role is WorkerRole.PREFILL


def test_parse_trtllm_args_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="--model-path is required"):
        parse_trtllm_args([])
    with pytest.raises(ConfigError, match="No such file or directory"):
        parse_trtllm_args(
            ["--model-path", "m", "--extra-engine-args", str(tmp_path / "no.yaml")],
            resolve_model_path=False,
        )
    bad = tmp_path / "bad.yaml"
    bad.write_text("- a list\n")
    with pytest.raises(ConfigError, match="expected a mapping of LLM arguments"):
        parse_trtllm_args(
            ["--model-path", "m", "--extra-engine-args", str(bad)], resolve_model_path=False
        )


def test_hub_repo_only_for_a_hub_id(tmp_path: Path) -> None:
    assert make(tmp_path).hub_repo is None
    assert make(tmp_path, model="Qwen/Qwen3-0.6B").hub_repo == "Qwen/Qwen3-0.6B"
