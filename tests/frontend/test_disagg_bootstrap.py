"""The frontend's bootstrap-style disaggregation (SGLang): both legs at once, the decode leg
naming the chosen prefill worker's bootstrap address and the prefill leg's room. The workers
are SGLang adapters over fakes of SGLang's engine API, behind in-process endpoint clients."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from dynamo.engines.sglang import SglangEngine
from dynamo.frontend.disagg import DisaggRequest, DisaggRouter, DisaggSettings
from dynamo.frontend.engine_client import RoutedModel
from dynamo.protocols.engine import EngineOutput, EngineRequest
from dynamo.protocols.model_card import BootstrapAddress
from dynamo.router.base import WorkerInfo
from dynamo.router.policies import RoundRobinPolicy
from dynamo.runtime.errors import RemoteError, UnavailableError
from dynamo.runtime.transport.base import RequestContext
from dynamo.testing import fake_sglang
from dynamo.testing.engine_sink import RecordingEngineSink
from dynamo.testing.fake_sglang import FakeServerArgs, FakeSglEngine


class EngineClient:
    """An endpoint client that calls one engine in this process."""

    def __init__(self, instance_id: int, engine: SglangEngine | None) -> None:
        self.instance_id = instance_id
        self.engine = engine

    def instance_ids(self) -> list[int]:
        return [self.instance_id]

    async def generate(
        self, request: dict[str, Any], *, instance_id: int, request_id: str
    ) -> AsyncIterator[dict[str, Any]]:
        if self.engine is None:
            raise RemoteError("the prefill worker failed")
        async for out in self.engine.generate(request, RequestContext(request_id)):  # type: ignore[arg-type]
            yield dict(out)


async def engine(mode: str, tmp_path: Path, port: int = 8998) -> SglangEngine:
    e = SglangEngine(
        FakeServerArgs(
            model_path=str(tmp_path),
            page_size=4,
            context_length=64,
            disaggregation_mode=mode,
            disaggregation_bootstrap_port=port,
        ),
        engine_factory=FakeSglEngine,
        publish_kv_events=False,
    )
    e.prepare()
    await e.start(RecordingEngineSink())
    return e


def pool(*workers: tuple[int, SglangEngine | None, Any]) -> RoutedModel:
    routed = RoutedModel("m", RoundRobinPolicy())
    for instance_id, eng, bootstrap in workers:
        info = WorkerInfo(instance_id=instance_id, kv_block_size=4)
        routed.add_worker(info, EngineClient(instance_id, eng), bootstrap=bootstrap)
    return routed


def request(tokens: list[int], max_tokens: int) -> EngineRequest:
    return {
        "request_id": "r1",
        "model": "m",
        "token_ids": tokens,
        "stop_conditions": {"max_tokens": max_tokens},
        "sampling_options": {},
    }


async def run(router: DisaggRouter, r: DisaggRequest) -> list[EngineOutput]:
    return [o async for o in router.generate(r)]


async def test_both_legs_go_out_at_once_with_the_chosen_workers_bootstrap_and_one_room(
    tmp_path: Path,
) -> None:
    p1 = await engine("prefill", tmp_path, port=9201)
    p2 = await engine("prefill", tmp_path, port=9202)
    decode = await engine("decode", tmp_path)
    prefills = pool((1, p1, p1.bootstrap), (2, p2, p2.bootstrap))
    router = DisaggRouter(DisaggSettings())
    try:
        assert prefills.uses_bootstrap
        for _ in range(2):  # round-robin: one request through each prefill worker
            r = DisaggRequest(request(list(range(10, 22)), 3), pool((9, decode, None)), prefills, 4)
            outputs = await run(router, r)
            assert [t for o in outputs for t in o.get("token_ids", [])] == [22, 23, 24]
            assert outputs[-1]["usage"]["cached_tokens"] == 12
        seen_by_decode = [q["bootstrap"] for q in decode._engine.requests]
        rooms = [q["bootstrap"][2] for q in (p1._engine.requests + p2._engine.requests)]
        assert [b[:2] for b in seen_by_decode] == [("127.0.0.1", 9201), ("127.0.0.1", 9202)]
        assert [b[2] for b in seen_by_decode] == rooms
        assert rooms[0] != rooms[1]
        assert [q["sampling_params"]["max_new_tokens"] for q in p1._engine.requests] == [1]
    finally:
        for e in (p1, p2, decode):
            await e.shutdown()


async def test_a_prefill_leg_that_fails_fails_the_request_instead_of_hanging(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(fake_sglang, "BOOTSTRAP_TIMEOUT_S", 30.0)  # the decode would wait long
    decode = await engine("decode", tmp_path)
    dead = fake_sglang.FakeBootstrapServer()
    fake_sglang.SERVERS[9300] = dead  # its address answers, but its engine fails the leg
    prefills = pool((1, None, BootstrapAddress(host="127.0.0.1", port=9300)))
    router = DisaggRouter(DisaggSettings())
    try:
        r = DisaggRequest(request([1, 2, 3, 4, 5], 3), pool((9, decode, None)), prefills, 4)
        with pytest.raises(UnavailableError, match="the prefill leg failed before the KV"):
            await run(router, r)
        assert decode._engine.tokenizer_manager.aborted  # the decode leg was cancelled
    finally:
        fake_sglang.SERVERS.pop(9300, None)
        await decode.shutdown()


async def test_without_a_prefill_worker_an_sglang_decode_worker_answers_unavailable(
    tmp_path: Path,
) -> None:
    decode = await engine("decode", tmp_path)
    router = DisaggRouter(DisaggSettings())
    try:
        r = DisaggRequest(request([1, 2, 3], 3), pool((9, decode, None)), pool(), 4)
        with pytest.raises(UnavailableError, match="serves only disaggregated requests"):
            await run(router, r)
    finally:
        await decode.shutdown()


async def test_a_client_that_goes_away_cancels_both_legs(tmp_path: Path) -> None:
    prefill = await engine("prefill", tmp_path, port=9401)
    decode = await engine("decode", tmp_path)
    prefill._engine.token_delay_s = 5.0  # its leg is still running when the client leaves
    decode._engine.token_delay_s = 0.01
    router = DisaggRouter(DisaggSettings())
    try:
        r = DisaggRequest(
            request(list(range(10, 22)), 40),
            pool((9, decode, None)),
            pool((1, prefill, prefill.bootstrap)),
            4,
        )
        stream = router.generate(r)
        first = await anext(stream)
        assert first.get("token_ids") == [22]
        await stream.aclose()  # type: ignore[attr-defined]
        assert len(prefill._engine.tokenizer_manager.aborted) == 1
        assert len(decode._engine.tokenizer_manager.aborted) == 1
    finally:
        await prefill.shutdown()
        await decode.shutdown()


async def test_conditional_disagg_never_keeps_a_prefill_on_an_sglang_decode_worker(
    tmp_path: Path,
) -> None:
    prefill = await engine("prefill", tmp_path, port=9501)
    decode = await engine("decode", tmp_path)
    settings = DisaggSettings(conditional=True, max_local_prefill_tokens=1000)
    try:
        r = DisaggRequest(
            request([1, 2, 3, 4, 5], 2),  # short: would stay on the decode worker elsewhere
            pool((9, decode, None)),
            pool((1, prefill, prefill.bootstrap)),
            4,
        )
        outputs = [o async for o in DisaggRouter(settings).generate(r)]
        assert [t for o in outputs for t in o.get("token_ids", [])] == [6, 7]
        assert len(prefill._engine.requests) == 1
    finally:
        await prefill.shutdown()
        await decode.shutdown()
