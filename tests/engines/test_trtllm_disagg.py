"""TensorRT-LLM's disaggregated legs: context-only on the prefill worker, generation-only on
the decode worker, the params between them as wire data (fakes of TensorRT-LLM 1.x's LLM API),
and the frontend's two legs over both engines."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from typing import Any

import pytest

from dynamo.engines.trtllm import TrtllmEngine
from dynamo.engines.trtllm_disagg import encode_params, leg_params, require_cache_transceiver
from dynamo.frontend.disagg import DisaggRequest, DisaggRouter, DisaggSettings
from dynamo.frontend.engine_client import RoutedModel
from dynamo.mocker.tinymodel import tiny_model_path
from dynamo.protocols.engine import EngineOutput, EngineRequest
from dynamo.protocols.model_card import WorkerRole
from dynamo.router.base import WorkerInfo
from dynamo.router.policies import RoundRobinPolicy
from dynamo.runtime.errors import ConfigError, KvTransferError
from dynamo.runtime.transport.base import RequestContext
from dynamo.testing.engine_sink import RecordingEngineSink
from dynamo.testing.fake_trtllm import FakeDisaggregatedParams, FakeSamplingParams, FakeTorchLLM

PREFILL, DECODE, AGG = WorkerRole.PREFILL, WorkerRole.DECODE, WorkerRole.AGGREGATED
TRANSCEIVER = {"cache_transceiver_config": {"backend": "DEFAULT"}}
WIRE = {
    "request_type": "context_only",
    "first_gen_tokens": [57],
    "ctx_request_id": 5,
    "opaque_state": base64.b64encode(b"state").decode(),
    "draft_tokens": None,
}


def req(tokens: list[int], params: dict[str, object] | None = None, **stop: Any) -> EngineRequest:
    r: dict[str, Any] = {
        "request_id": "t1",
        "model": "m",
        "token_ids": tokens,
        "stop_conditions": stop,
        "sampling_options": {"temperature": 0.0},
    }
    if params is not None:
        r["disaggregated_params"] = params
    return r  # type: ignore[return-value]


def test_a_disaggregated_worker_needs_a_cache_transceiver() -> None:
    require_cache_transceiver({}, AGG)
    require_cache_transceiver(TRANSCEIVER, PREFILL)
    for role, cfg in ((PREFILL, {}), (DECODE, {"cache_transceiver_config": {}})):
        with pytest.raises(ConfigError, match=f"a {role.value} worker needs TensorRT-LLM's cache"):
            require_cache_transceiver(cfg, role)


def test_the_legs_get_context_only_and_generation_only_params() -> None:
    assert leg_params(req([1]), PREFILL, FakeDisaggregatedParams) == FakeDisaggregatedParams(
        request_type="context_only"
    )
    assert leg_params(req([1]), DECODE, FakeDisaggregatedParams) is None  # aggregated
    assert leg_params(req([1], WIRE), DECODE, FakeDisaggregatedParams) == FakeDisaggregatedParams(
        request_type="generation_only",
        first_gen_tokens=[57],
        ctx_request_id=5,
        opaque_state=b"state",
    )


def test_the_context_result_goes_on_the_wire_with_its_opaque_state_in_base64() -> None:
    result = FakeDisaggregatedParams(
        request_type="context_only", first_gen_tokens=[57], ctx_request_id=5, opaque_state=b"state"
    )
    assert encode_params(result) == WIRE


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ("stale", "disaggregated_params must be an object"),
        ({**WIRE, "first_gen_tokens": []}, "first_gen_tokens must be a non-empty list"),
        ({**WIRE, "ctx_request_id": "5"}, "ctx_request_id must be an integer, got '5'"),
        ({**WIRE, "opaque_state": "%%"}, "opaque_state is not valid base64"),
        ({**WIRE, "draft_tokens": ["a"]}, "draft_tokens must be a list of token ids"),
    ],
)
def test_malformed_params_are_kv_transfer_errors(params: object, message: str) -> None:
    with pytest.raises(KvTransferError, match=message):
        leg_params(req([1], params), DECODE, FakeDisaggregatedParams)  # type: ignore[arg-type]


def test_an_aggregated_worker_refuses_params_it_cannot_load() -> None:
    with pytest.raises(KvTransferError, match="not a decode worker"):
        leg_params(req([1], WIRE), AGG, FakeDisaggregatedParams)


async def engine(role: WorkerRole) -> TrtllmEngine:
    e = TrtllmEngine(
        {
            "model": str(tiny_model_path()),
            "backend": "pytorch",
            "max_seq_len": 256,
            "kv_cache_config": {"tokens_per_block": 4},
            **TRANSCEIVER,
        },
        llm_factory=FakeTorchLLM,
        sampling_params_cls=FakeSamplingParams,
        disaggregated_params_cls=FakeDisaggregatedParams,
        role=role,
        publish_kv_events=False,
        poll_timeout_s=0.05,
        idle_repoll_s=60,
    )
    await e.start(RecordingEngineSink())
    return e


async def collect(e: TrtllmEngine, r: EngineRequest) -> list[EngineOutput]:
    return [o async for o in e.generate(r, RequestContext(r["request_id"]))]


def tokens(outputs: list[EngineOutput]) -> list[int]:
    return [t for o in outputs for t in o.get("token_ids", [])]


async def test_the_decode_engine_continues_from_the_prefill_engines_first_token() -> None:
    prefill, decode = await engine(PREFILL), await engine(DECODE)
    prompt = list(range(40, 52))
    try:
        first = await collect(prefill, req(prompt, max_tokens=1))
        assert tokens(first) == [52]
        params = first[-1]["disaggregated_params"]
        assert params["request_type"] == "context_only" and params["first_gen_tokens"] == [52]
        out = await collect(decode, req(prompt, params, max_tokens=4))
        assert tokens(out) == [52, 53, 54, 55]  # the first token came with the KV
        assert out[-1]["usage"]["cached_tokens"] == 12  # the whole prompt arrived as KV
        sent = decode._llm.results[0]._disaggregated
        assert (
            sent.request_type == "generation_only"
            and sent.ctx_request_id == params["ctx_request_id"]
        )
        # the same params again: that KV was taken already, the decode worker says so
        with pytest.raises(KvTransferError, match="could not take over the prefill worker's KV"):
            await collect(decode, req(prompt, params, max_tokens=4))
    finally:
        await prefill.shutdown()
        await decode.shutdown()


class EngineClient:
    def __init__(self, e: TrtllmEngine) -> None:
        self.engine = e

    def instance_ids(self) -> list[int]:
        return [1]

    async def generate(
        self, request: dict[str, Any], *, instance_id: int, request_id: str
    ) -> AsyncIterator[dict[str, Any]]:
        async for out in self.engine.generate(request, RequestContext(request_id)):  # type: ignore[arg-type]
            yield dict(out)


def pool(instance_id: int, e: TrtllmEngine) -> RoutedModel:
    routed = RoutedModel("m", RoundRobinPolicy())
    routed.add_worker(WorkerInfo(instance_id=instance_id, kv_block_size=4), EngineClient(e))
    return routed


async def test_the_frontend_runs_the_context_leg_then_the_generation_leg() -> None:
    prefill, decode = await engine(PREFILL), await engine(DECODE)
    try:
        r = DisaggRequest(
            req(list(range(40, 52)), max_tokens=3), pool(9, decode), pool(1, prefill), 4
        )
        out = [o async for o in DisaggRouter(DisaggSettings(enforce=True)).generate(r)]
        assert tokens(out) == [52, 53, 54]
        assert out[-1]["usage"]["cached_tokens"] == 12
        assert [x.params.max_tokens for x in prefill._llm.results] == [1]
    finally:
        await prefill.shutdown()
        await decode.shutdown()
