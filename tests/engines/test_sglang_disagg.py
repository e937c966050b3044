"""SGLang's disaggregated legs: bootstrap addresses and rooms, and the handoff between a prefill
and a decode engine (fakes of SGLang's engine API, both legs at once as SGLang needs)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from dynamo.engines.sglang import SglangEngine
from dynamo.engines.sglang_disagg import bootstrap_address, bootstrap_kwargs
from dynamo.protocols.engine import EngineOutput, EngineRequest
from dynamo.protocols.model_card import BootstrapAddress, WorkerRole
from dynamo.runtime.errors import KvTransferError, UnavailableError
from dynamo.runtime.transport.base import RequestContext
from dynamo.testing import fake_sglang
from dynamo.testing.engine_sink import RecordingEngineSink
from dynamo.testing.fake_sglang import FakeServerArgs, FakeSglEngine

OWN = BootstrapAddress(host="10.0.0.7", port=8998)


def args(**kw: Any) -> SimpleNamespace:
    base = {"disaggregation_bootstrap_port": 8998, "dist_init_addr": None, "host": "127.0.0.1"}
    return SimpleNamespace(**{**base, **kw})


def req(tokens: list[int], params: dict[str, object] | None = None, **stop: Any) -> EngineRequest:
    r: dict[str, Any] = {
        "request_id": "r1",
        "model": "m",
        "token_ids": tokens,
        "stop_conditions": stop,
        "sampling_options": {},
    }
    if params is not None:
        r["disaggregated_params"] = params
    return r  # type: ignore[return-value]


def test_the_bootstrap_host_is_the_dist_init_host_else_the_bound_host_else_this_machine() -> None:
    assert bootstrap_address(args(dist_init_addr="node-a:5000")) == BootstrapAddress(
        host="node-a", port=8998
    )
    assert bootstrap_address(args(dist_init_addr="[fd00::1]:5000")).host == "fd00::1"
    assert bootstrap_address(args(host="10.1.2.3", disaggregation_bootstrap_port=9001)) == (
        BootstrapAddress(host="10.1.2.3", port=9001)
    )
    assert bootstrap_address(args(host="0.0.0.0"), local_host="10.9.9.9").host == "10.9.9.9"


def test_each_leg_gets_the_bootstrap_arguments_of_its_role() -> None:
    assert bootstrap_kwargs(req([1]), WorkerRole.AGGREGATED, None) == {}
    prefill = bootstrap_kwargs(req([1], {"bootstrap_room": 42}), WorkerRole.PREFILL, OWN)
    assert prefill == {"bootstrap_host": "10.0.0.7", "bootstrap_port": 8998, "bootstrap_room": 42}
    params = {"bootstrap_host": "10.0.0.7", "bootstrap_port": 8998, "bootstrap_room": 42}
    assert bootstrap_kwargs(req([1], params), WorkerRole.DECODE, None) == params


@pytest.mark.parametrize(
    ("role", "params", "error", "message"),
    [
        (WorkerRole.PREFILL, None, KvTransferError, "an SGLang prefill leg needs"),
        (WorkerRole.PREFILL, {"bootstrap_room": -1}, KvTransferError, "bootstrap_room must be"),
        (WorkerRole.DECODE, None, UnavailableError, "serves only disaggregated requests"),
        (WorkerRole.DECODE, {"bootstrap_room": 1}, KvTransferError, "bootstrap_host must be"),
        (
            WorkerRole.DECODE,
            {"bootstrap_host": "h", "bootstrap_port": 0, "bootstrap_room": 1},
            KvTransferError,
            "bootstrap_port must be a port number, got 0",
        ),
        (
            WorkerRole.DECODE,
            {"bootstrap_host": "h", "bootstrap_port": 1, "bootstrap_room": "1"},
            KvTransferError,
            "bootstrap_room must be an integer in \\[0, 2\\*\\*63\\), got '1'",
        ),
    ],
)
def test_bad_bootstrap_params_are_clear_errors(
    role: WorkerRole, params: dict[str, object] | None, error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        bootstrap_kwargs(req([1], params), role, OWN)


async def start(mode: str, tmp_path: Path, port: int = 8998) -> SglangEngine:
    engine = SglangEngine(
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
    engine.prepare()
    await engine.start(RecordingEngineSink())
    return engine


async def collect(engine: SglangEngine, r: EngineRequest) -> list[EngineOutput]:
    return [o async for o in engine.generate(r, RequestContext(r["request_id"]))]


async def test_a_prefill_engine_registers_its_bootstrap_address(tmp_path: Path) -> None:
    prefill = await start("prefill", tmp_path, port=9100)
    decode = await start("decode", tmp_path)
    try:
        assert prefill.role is WorkerRole.PREFILL and decode.role is WorkerRole.DECODE
        assert prefill._info is not None and decode._info is not None
        assert prefill._info.bootstrap == BootstrapAddress(host="127.0.0.1", port=9100)
        assert decode._info.bootstrap is None
    finally:
        await prefill.shutdown()
        await decode.shutdown()


async def test_both_legs_at_once_hand_the_kv_to_the_decode_engine(tmp_path: Path) -> None:
    prefill = await start("prefill", tmp_path)
    decode = await start("decode", tmp_path)
    prompt = list(range(10, 22))
    params = {"bootstrap_host": "127.0.0.1", "bootstrap_port": 8998, "bootstrap_room": 7}
    try:
        prefill_out, decode_out = await asyncio.gather(
            collect(prefill, req(prompt, {"bootstrap_room": 7}, max_tokens=1)),
            collect(decode, req(prompt, params, max_tokens=3)),
        )
        assert [t for o in decode_out for t in o.get("token_ids", [])] == [22, 23, 24]
        assert decode_out[-1]["usage"] == {
            "prompt_tokens": 12,
            "completion_tokens": 3,
            "cached_tokens": 12,  # all of the prompt came over as KV
        }
        assert prefill_out[-1]["usage"]["completion_tokens"] == 1
        fake_prefill, fake_decode = prefill._engine, decode._engine
        assert fake_prefill.requests[0]["bootstrap"] == ("127.0.0.1", 8998, 7)
        assert fake_decode.requests[0]["bootstrap"] == ("127.0.0.1", 8998, 7)
    finally:
        await prefill.shutdown()
        await decode.shutdown()


async def test_a_decode_leg_whose_prefill_never_comes_fails_instead_of_hanging(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(fake_sglang, "BOOTSTRAP_TIMEOUT_S", 0.05)
    prefill = await start("prefill", tmp_path)
    decode = await start("decode", tmp_path)
    params = {"bootstrap_host": "127.0.0.1", "bootstrap_port": 8998, "bootstrap_room": 8}
    try:
        with pytest.raises(UnavailableError, match="SGLang aborted the disaggregated request"):
            await collect(decode, req([1, 2, 3], params, max_tokens=3))
        other_port = {**params, "bootstrap_port": 8999}
        with pytest.raises(UnavailableError, match=r"no bootstrap server at 127\.0\.0\.1:8999"):
            await collect(decode, req([1, 2, 3], other_port, max_tokens=3))
        # a prefill leg alone (legs one after the other) times out the same way
        with pytest.raises(UnavailableError, match="KV transfer failed"):
            await collect(prefill, req([1, 2, 3], {"bootstrap_room": 9}, max_tokens=1))
    finally:
        await prefill.shutdown()
        await decode.shutdown()
