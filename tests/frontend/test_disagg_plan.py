"""The pure half of disaggregated serving: where a prefill runs, and the two legs' requests."""

from __future__ import annotations

from dynamo.frontend.disagg import DisaggSettings, decode_request, plan_prefill, prefill_request
from dynamo.frontend.engine_client import continued
from dynamo.protocols.engine import EngineRequest

ALWAYS = DisaggSettings()
CONDITIONAL = DisaggSettings(conditional=True, max_local_prefill_tokens=100, max_prefill_queue=2)


def plan(settings: DisaggSettings, **kw: int) -> str | None:
    args = {"prefill_workers": 1, "prompt_tokens": 1000, "cached_tokens": 0, "prefill_inflight": 0}
    args.update(kw)
    return plan_prefill(settings, **args)


def test_without_conditional_disagg_every_prompt_goes_to_a_prefill_worker() -> None:
    assert plan(ALWAYS) is None
    assert plan(ALWAYS, prompt_tokens=3) is None
    assert plan(ALWAYS, cached_tokens=1000, prefill_inflight=99) is None
    assert plan(ALWAYS, prefill_workers=0) == "no_prefill_worker"


def test_conditional_disagg_keeps_short_uncached_prompts_on_the_decode_worker() -> None:
    assert plan(CONDITIONAL, prompt_tokens=100) == "short_uncached_prompt"
    assert plan(CONDITIONAL, prompt_tokens=101) is None
    assert plan(CONDITIONAL, prompt_tokens=5000, cached_tokens=4900) == "short_uncached_prompt"
    assert plan(CONDITIONAL, prompt_tokens=5000, cached_tokens=4899) is None


def test_conditional_disagg_prefills_locally_when_the_prefill_queue_is_long() -> None:
    assert plan(CONDITIONAL, prefill_inflight=1) is None
    assert plan(CONDITIONAL, prefill_inflight=2) == "prefill_queue_full"
    assert plan(CONDITIONAL, prefill_workers=2, prefill_inflight=3) is None
    assert plan(CONDITIONAL, prefill_workers=2, prefill_inflight=4) == "prefill_queue_full"
    assert plan(CONDITIONAL, prefill_workers=0) == "no_prefill_worker"


def test_the_prefill_leg_asks_for_one_token_and_the_decode_leg_carries_the_params() -> None:
    request: EngineRequest = {
        "request_id": "r1",
        "model": "m",
        "token_ids": [1, 2, 3],
        "stop_conditions": {"max_tokens": 50, "min_tokens": 10, "ignore_eos": True},
        "sampling_options": {"temperature": 0.5},
        "disaggregated_params": {"stale": True},
    }
    leg = prefill_request(request)
    assert leg == {
        "request_id": "r1",
        "model": "m",
        "token_ids": [1, 2, 3],
        "stop_conditions": {"max_tokens": 1, "min_tokens": None, "ignore_eos": True},
        "sampling_options": {"temperature": 0.5},
    }
    params: dict[str, object] = {"kv_transfer_params": {"engine": "mocker"}}
    decode = decode_request(request, params)
    assert decode["disaggregated_params"] == params
    assert decode["stop_conditions"]["max_tokens"] == 50
    assert request["disaggregated_params"] == {"stale": True}  # the original is untouched


def test_a_decode_leg_migrated_mid_stream_drops_the_params_of_the_worker_that_died() -> None:
    request: EngineRequest = {
        "request_id": "r1",
        "model": "m",
        "token_ids": [1, 2, 3],
        "stop_conditions": {"max_tokens": 5},
        "sampling_options": {},
        "disaggregated_params": {"kv_transfer_params": {}},
    }
    nxt = continued(request, [7, 8])
    assert nxt is not None
    assert "disaggregated_params" not in nxt
    assert nxt["token_ids"] == [1, 2, 3, 7, 8]
    assert nxt["stop_conditions"]["max_tokens"] == 3
