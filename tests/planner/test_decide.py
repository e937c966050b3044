"""The decision function alone: Dynamo's formulas and the fixes for their #10528, #9294, #4420."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest

from dynamo.planner.config import PlannerConfig
from dynamo.planner.decide import (
    Forecast,
    Inputs,
    RoleLoad,
    Traffic,
    decide,
    decide_load,
    prefill_utilization,
    queue_inflow_tps,
)
from dynamo.planner.profile import load_profile, mocker_profile
from dynamo.runtime.errors import ConfigError

PROFILE = load_profile(Path(__file__).parent / "data" / "profile")
# tokens/s of one prefill worker at ISL 1024 (70 ms TTFT), busy enough to leave room for
# queueing within the 300 ms TTFT target
PREFILL_CAP_1024 = 1024 / 0.070 * prefill_utilization(70.0, 300.0)


def config(**kw: Any) -> PlannerConfig:
    base: dict[str, Any] = {
        "environment": "local",
        "throughput_adjustment_interval_seconds": 10,
        "ttft_ms": 300.0,
        "itl_ms": 40.0,
        "max_gpu_budget": -1,
        "enable_load_scaling": False,
    }
    return PlannerConfig(**{**base, **kw})


def inputs(**kw: Any) -> Inputs:
    base: dict[str, Any] = {
        "now_s": 1000.0,
        "live": {"prefill": 1, "decode": 1},
        "profile": PROFILE,
    }
    return Inputs(**{**base, **kw})


def prefill_need(requests: float, isl: float = 1024) -> float:
    return requests * isl / 10 / PREFILL_CAP_1024


def test_prefill_replicas_follow_dynamos_formula() -> None:
    cfg = config(mode="prefill")
    for requests in (100, 300, 900):
        d = decide(cfg, inputs(live={"prefill": 1}, forecast=Forecast(requests, 1024, 100)))
        expected = max(1, math.ceil(prefill_need(requests)))
        assert d.targets == {"prefill": expected}, d.summary()


def test_decode_replicas_follow_the_profile_at_the_itl_target() -> None:
    cfg = config(mode="decode")
    context = 1024 + 100 / 2
    per_worker, feasible = PROFILE.decode.best_throughput_per_gpu(40.0, context)
    assert feasible
    requests = 3.5 * per_worker * 10 / 100  # 3.5 workers of output tokens
    d = decide(cfg, inputs(live={"decode": 1}, forecast=Forecast(requests, 1024, 100)))
    assert d.targets == {"decode": 4}


def test_prefill_correction_only_lowers_demand_but_queued_tokens_count() -> None:
    cfg = config(mode="prefill")
    forecast = Forecast(200, 1024, 100)  # 1.6 workers of prompt tokens
    fast = Traffic(200, isl=1024, osl=100, ttft_ms=28.0)  # 0.4 x the profiled 70 ms
    assert decide(cfg, inputs(live={"prefill": 2}, forecast=forecast, traffic=fast)).targets == {
        "prefill": 1
    }
    # their #10528: a burst queues on the workers; the backlog is demand too
    backlog = {"prefill": RoleLoad(workers=2, queued_prefill_tokens=PREFILL_CAP_1024 * 10)}
    d = decide(cfg, inputs(live={"prefill": 2}, forecast=forecast, load=backlog))
    assert d.targets == {"prefill": math.ceil(prefill_need(200) + 2)}
    assert "queued" in d.summary()


def test_ttft_over_target_from_queueing_adds_a_prefill_worker() -> None:
    cfg = config(mode="prefill")
    slow = Traffic(100, isl=1024, osl=100, ttft_ms=2500.0)  # the engine alone does 70 ms
    d = decide(cfg, inputs(live={"prefill": 1}, forecast=Forecast(100, 1024, 100), traffic=slow))
    assert d.targets == {"prefill": 2}
    assert "TTFT 2500ms > 300ms target" in d.summary()
    # a scale-up within the last interval: that TTFT is from requests queued before it
    recent = inputs(
        live={"prefill": 1},
        forecast=Forecast(100, 1024, 100),
        traffic=slow,
        last_scale_up_s={"prefill": 995.0},
    )
    d = decide(cfg, recent)
    assert d.targets == {"prefill": 1}
    assert "prefill scaled up 5s ago: not adding on its stale TTFT" in d.summary()
    # the workers' queue has drained since: those requests queued earlier, no more workers
    for queued, target in ((0.0, 1), (50_000.0, 2)):
        now_load = {"prefill": RoleLoad(workers=1, queued_prefill_tokens=queued)}
        d = decide(
            cfg,
            inputs(
                live={"prefill": 1},
                forecast=Forecast(100, 1024, 100),
                traffic=slow,
                load=now_load,
            ),
        )
        assert d.targets == {"prefill": target}, d.summary()
    assert (
        "the prefill queue has drained: not adding on its stale TTFT"
        in decide(
            cfg,
            inputs(
                live={"prefill": 1},
                forecast=Forecast(100, 1024, 100),
                traffic=slow,
                load={"prefill": RoleLoad(workers=1)},
            ),
        ).summary()
    )
    # an ISL the engine cannot prefill within the target is not a queue: no blind scale-up
    huge = Traffic(1, isl=4096, osl=100, ttft_ms=400.0)  # profiled: 300 ms > 200 ms target
    d = decide(
        config(mode="prefill", ttft_ms=200.0),
        inputs(live={"prefill": 1}, forecast=Forecast(1, 4096, 100), traffic=huge),
    )
    assert d.targets == {"prefill": 1}


def test_no_two_to_one_oscillation_at_steady_load() -> None:
    cfg = config(mode="prefill")
    # their #9294: 0.9 workers of load at 2 workers; 1 worker would run at 90 %: stay at 2
    steady = Forecast(PREFILL_CAP_1024 * 0.9 * 10 / 1024, 1024, 100)
    for _ in range(5):
        assert decide(cfg, inputs(live={"prefill": 2}, forecast=steady)).targets == {"prefill": 2}
    # at 0.7 workers one worker has its headroom (0.7 / 0.8 <= 1): go to 1
    light = Forecast(PREFILL_CAP_1024 * 0.7 * 10 / 1024, 1024, 100)
    assert decide(cfg, inputs(live={"prefill": 2}, forecast=light)).targets == {"prefill": 1}


def test_cooldown_after_a_scale_up() -> None:
    cfg = config(mode="prefill", scale_down_cooldown_intervals=2)
    idle = Forecast(0, 1024, 100)
    d = decide(cfg, inputs(live={"prefill": 3}, forecast=idle, last_scale_up_s={"prefill": 990.0}))
    assert d.targets == {"prefill": 3}
    assert "prefill: scale-down waits 10s more" in d.summary()
    d = decide(cfg, inputs(live={"prefill": 3}, forecast=idle, last_scale_up_s={"prefill": 980.0}))
    assert d.targets == {"prefill": 1}


def test_decisions_start_from_the_live_replicas() -> None:
    # their #4420: someone scaled the workers by hand to 4; the planner sizes from 4, not from
    # the 1 it asked for before
    cfg = config(mode="prefill")
    d = decide(cfg, inputs(live={"prefill": 4}, forecast=Forecast(0, 1024, 100)))
    assert (d.live, d.targets, d.changed) == ({"prefill": 4}, {"prefill": 1}, True)


def test_minimum_and_step_limit() -> None:
    cfg = config(mode="prefill", min_endpoint=2, max_throughput_scaling_replicas=3)
    assert decide(cfg, inputs(live={"prefill": 2}, forecast=Forecast(0, 1024, 100))).targets == {
        "prefill": 2
    }
    big = Forecast(100_000, 1024, 100)
    assert decide(cfg, inputs(live={"prefill": 2}, forecast=big)).targets == {"prefill": 5}


def test_gpu_budget_scales_both_roles_down_proportionally() -> None:
    cfg = config(max_gpu_budget=6, prefill_engine_num_gpu=1, decode_engine_num_gpu=2)
    big = Forecast(2000, 1024, 100)  # lots of prefill and decode
    d = decide(cfg, inputs(forecast=big))
    used = d.targets["prefill"] + 2 * d.targets["decode"]
    assert used <= 6 and d.targets["prefill"] >= 1 and d.targets["decode"] >= 1
    assert "capped by --max-gpu-budget 6" in d.summary()


def test_budget_below_minimums_holds() -> None:
    cfg = config(max_gpu_budget=1, min_endpoint=1)
    d = decide(cfg, inputs(forecast=Forecast(1000, 1024, 100)))
    assert d.hold and not d.changed
    assert d.targets == {"prefill": 1, "decode": 1}
    assert d.reasons == (
        "--max-gpu-budget 1 is below the minimums (1 per role = 2 GPUs): not scaling",
    )


def test_nothing_observed_holds() -> None:
    d = decide(config(), inputs())
    assert d.hold and d.reasons == ("no traffic observed yet and no worker load: holding",)


def test_missing_live_role_holds() -> None:
    d = decide(config(), inputs(live={"decode": 1}))
    assert d.hold and d.reasons == ("no live replica count for prefill",)


def test_without_profile_load_scaling_still_acts() -> None:
    cfg = config(enable_load_scaling=True)
    load = {
        "prefill": RoleLoad(workers=1, queued_prefill_tokens=50_000),
        "decode": RoleLoad(workers=1, kv_usage=0.95),
    }
    d = decide(cfg, inputs(profile=None, forecast=Forecast(10, 1024, 100), load=load))
    assert d.targets == {"prefill": 2, "decode": 2}
    assert "throughput scaling off: no profile data" in d.reasons


def test_load_signal_vetoes_a_descent() -> None:
    cfg = config(enable_load_scaling=True, mode="decode")
    busy = {"decode": RoleLoad(workers=3, kv_usage=0.7)}  # between 0.5 and 0.9: stay
    d = decide(cfg, inputs(live={"decode": 3}, forecast=Forecast(0, 1024, 100), load=busy))
    assert d.targets == {"decode": 3}
    idle = {"decode": RoleLoad(workers=3, kv_usage=0.1)}
    d = decide(cfg, inputs(live={"decode": 3}, forecast=Forecast(0, 1024, 100), load=idle))
    assert d.targets == {"decode": 2}  # one at a time from the load signal


def test_agg_mode_adds_prefill_and_decode_time() -> None:
    cfg = config(mode="agg")
    requests = 100.0
    d = decide(cfg, inputs(live={"decode": 1}, forecast=Forecast(requests, 1024, 100)))
    per_worker, _ = PROFILE.decode.best_throughput_per_gpu(40.0, 1074)
    need = prefill_need(requests) + requests * 100 / 10 / per_worker
    assert d.targets == {"decode": math.ceil(need)}


@pytest.mark.parametrize("no_correction", [False, True])
def test_decode_correction(no_correction: bool) -> None:
    cfg = config(mode="decode", no_correction=no_correction)
    # observed ITL twice what the profile predicts: plan for half the ITL target
    expected_itl = PROFILE.decode.itl_at_concurrency(10 * 2.0 / 10, 1024 + 50)
    traffic = Traffic(10, isl=1024, osl=100, itl_ms=2 * expected_itl, request_duration_s=2.0)
    d = decide(cfg, inputs(live={"decode": 1}, forecast=Forecast(10, 1024, 100), traffic=traffic))
    if no_correction:
        assert d.decode_correction is None
    else:
        assert d.decode_correction == pytest.approx(2.0)


def test_prefill_utilization_leaves_room_for_queueing() -> None:
    # M/D/1: TTFT = S + rho S / (2 (1 - rho)); at the returned rho it equals the target
    for service_ms, target_ms in ((70.0, 300.0), (160.0, 300.0), (32.0, 300.0)):
        rho = prefill_utilization(service_ms, target_ms)
        ttft = service_ms + rho * service_ms / (2 * (1 - rho))
        assert ttft == pytest.approx(target_ms)
    assert prefill_utilization(400.0, 300.0) == 1.0  # no worker count meets it: size by load


def test_load_check_between_decisions_only_adds() -> None:
    cfg = config(enable_load_scaling=True, max_gpu_budget=3)
    busy = {
        "prefill": RoleLoad(workers=1, queued_prefill_tokens=50_000),
        "decode": RoleLoad(workers=1, kv_usage=0.2),  # below the down threshold: no descent here
    }
    d = decide_load(cfg, inputs(load=busy))
    assert d.targets == {"prefill": 2, "decode": 1}
    assert d.summary().startswith("scale [prefill 1->2, decode 1->1]: prefill queue 50000")
    both_busy = {**busy, "prefill": RoleLoad(workers=2, queued_prefill_tokens=50_000)}
    full = decide_load(cfg, inputs(live={"prefill": 2, "decode": 1}, load=both_busy))
    assert not full.changed
    assert full.reasons == ("load calls for more workers; at --max-gpu-budget 3",)
    # the second worker is still starting (1 of 2 reports): the queue waits for it
    starting = decide_load(
        config(enable_load_scaling=True), inputs(live={"prefill": 2, "decode": 1}, load=busy)
    )
    assert not starting.changed
    calm = decide_load(cfg, inputs(load={"decode": RoleLoad(workers=1, kv_usage=0.1)}))
    assert not calm.changed and calm.reasons == ("load within thresholds",)


def test_queue_inflow_is_growth_plus_what_saturated_workers_clear() -> None:
    before = RoleLoad(workers=1, queued_prefill_tokens=10_000)
    after = RoleLoad(workers=2, queued_prefill_tokens=15_000)  # 30k in all, 1 s later
    assert queue_inflow_tps(before, after, 1.0, 5_000) == pytest.approx(25_000)
    idle = RoleLoad(workers=1, queued_prefill_tokens=0)
    assert queue_inflow_tps(idle, after, 1.0, 5_000) is None  # not saturated all along
    assert queue_inflow_tps(None, after, 1.0, 5_000) is None
    # a queue that formed since the last snapshot: growth plus what the workers clear, on ask
    formed = queue_inflow_tps(idle, after, 1.0, 5_000, since_empty=True)
    assert formed == pytest.approx(30_000 + 5_000)
    assert queue_inflow_tps(idle, idle, 1.0, 5_000, since_empty=True) is None  # no queue now


def test_only_the_workers_that_hold_the_queue_count_as_clearing() -> None:
    # after a burst: one old worker holds a 20k backlog, three new ones sit idle beside it;
    # the backlog drained 5k in the last second, so nothing new arrived at the role
    before = RoleLoad(workers=4, queued_prefill_tokens=25_000 / 4, queued_workers=1)
    after = RoleLoad(workers=4, queued_prefill_tokens=20_000 / 4, queued_workers=1)
    assert queue_inflow_tps(before, after, 1.0, 5_000) == pytest.approx(0.0)
    # not knowing which workers queue, every reporting worker counts (the older estimate)
    unknown = RoleLoad(workers=4, queued_prefill_tokens=20_000 / 4)
    assert queue_inflow_tps(before, unknown, 1.0, 5_000) == pytest.approx(15_000)


def test_a_queue_that_formed_is_cleared_at_the_batched_rate() -> None:
    # a burst's onset: 12k tokens queued on one worker that was idle a second ago; it
    # batches them, clearing (here) 9k tok/s at that queue length instead of 5k
    idle = RoleLoad(workers=1, queued_prefill_tokens=0, queued_workers=0)
    onset = RoleLoad(workers=1, queued_prefill_tokens=12_000, queued_workers=1)
    rates: list[float] = []

    def batched(tokens: float) -> float:
        rates.append(tokens)
        return 9_000.0

    formed = queue_inflow_tps(idle, onset, 1.0, 5_000, since_empty=True, batched_tps=batched)
    assert formed == pytest.approx(12_000 + 9_000) and rates == [12_000]
    # a standing queue keeps the single-prompt rate (the mean over unequal queues overstates)
    standing = RoleLoad(workers=1, queued_prefill_tokens=15_000, queued_workers=1)
    grown = queue_inflow_tps(onset, standing, 1.0, 5_000, since_empty=True, batched_tps=batched)
    assert grown == pytest.approx(3_000 + 5_000) and rates == [12_000]
    # never below the single-prompt rate
    slow = queue_inflow_tps(idle, onset, 1.0, 5_000, since_empty=True, batched_tps=lambda _: 1.0)
    assert slow == pytest.approx(12_000 + 5_000)


def test_a_burst_is_met_in_one_load_check_sized_to_its_inflow() -> None:
    cfg = config(enable_load_scaling=True, max_gpu_budget=16)
    profile = mocker_profile(0.2)
    busy = {"prefill": RoleLoad(workers=1, queued_prefill_tokens=50_000)}
    per_worker = profile.prefill.throughput_per_gpu(1000)
    busy_share = prefill_utilization(profile.prefill.ttft(1000), cfg.ttft_ms)
    d = decide_load(
        cfg,
        Inputs(
            now_s=0.0,
            live={"prefill": 1, "decode": 1},
            load=busy,
            profile=profile,
            forecast=Forecast(10, 1000, 100),
            prefill_inflow_tps=24_000,
        ),
    )
    assert d.targets["prefill"] == math.ceil(24_000 / (per_worker * busy_share)) > 2
    assert any("queue grows: 24000 tok/s" in r for r in d.reasons)
    # its requests reach decode next: 24 req/s x 100 tokens, sized before decode's ITL shows it
    decode_per_worker, _ = profile.decode.best_throughput_per_gpu(cfg.itl_ms, 1000 + 50)
    assert d.targets["decode"] == math.ceil(2_400 / decode_per_worker) > 1


def test_arrivals_beyond_the_live_workers_size_prefill_and_decode_at_once() -> None:
    # a x8 burst reaching the frontends: 48 requests of 1000 tokens in the last 2 s, while one
    # prefill worker serves and its queue does not show it yet (no load reported at all)
    cfg = config(enable_load_scaling=True, max_gpu_budget=16)
    profile = mocker_profile(0.2)
    capacity = profile.prefill.throughput_per_gpu(1000) * prefill_utilization(
        profile.prefill.ttft(1000), cfg.ttft_ms
    )

    def check(live: int, count: float, window_s: float = 2.0) -> Any:
        return decide_load(
            cfg,
            Inputs(
                now_s=0.0,
                live={"prefill": live, "decode": 1},
                profile=profile,
                forecast=Forecast(30, 1000, 100),
                arrivals=(count, window_s),
            ),
        )

    burst = check(1, 48)
    need = math.ceil(24_000 / capacity)
    assert burst.targets["prefill"] == need > 3, burst.summary()
    assert any(
        r.startswith("arrivals 24.0 req/s (48 in 2.0s) = 24000 tok/s") for r in burst.reasons
    )
    decode_per_worker, _ = profile.decode.best_throughput_per_gpu(cfg.itl_ms, 1000 + 50)
    assert burst.targets["decode"] == math.ceil(2_400 / decode_per_worker)
    # workers already live (starting ones included) for that rate: nothing more
    assert not check(need, 48).changed
    # a noisy 2 s of a load the live workers carry: its lower bound (count less two standard
    # deviations) is within their capacity, so no worker is added on one lucky draw
    steady = math.floor(2 * capacity / 1000)  # requests in 2 s that one worker carries
    noisy = steady + math.sqrt(steady)  # one standard deviation above
    assert not check(1, noisy).changed
    # no arrivals known, or no profile: nothing from this signal
    assert not check(1, 0).changed
    no_profile = decide_load(
        cfg, Inputs(now_s=0.0, live={"prefill": 1, "decode": 1}, arrivals=(48, 2.0))
    )
    assert not no_profile.changed


def test_a_formed_queue_counts_the_prompts_its_workers_now_run() -> None:
    # an engine that batches moved 8 of the burst's prompts into its running step at once:
    # the queue shows 3k tokens, but 11k arrived since it was empty (1 prompt ran before)
    idle = RoleLoad(workers=1, queued_prefill_tokens=0, queued_workers=0, running_requests=1)
    onset = RoleLoad(workers=1, queued_prefill_tokens=3_000, queued_workers=1, running_requests=9)
    plain = queue_inflow_tps(idle, onset, 1.0, 5_000, since_empty=True)
    counted = queue_inflow_tps(idle, onset, 1.0, 5_000, since_empty=True, prompt_tokens=1000)
    assert plain == pytest.approx(3_000 + 5_000)
    assert counted == pytest.approx(3_000 + 8 * 1000 + 5_000)
    # a standing queue is measured by its growth alone, as before
    standing = RoleLoad(
        workers=1, queued_prefill_tokens=4_000, queued_workers=1, running_requests=9
    )
    grown = queue_inflow_tps(onset, standing, 1.0, 5_000, since_empty=True, prompt_tokens=1000)
    assert grown == pytest.approx(1_000 + 5_000)


def test_forecast_margin_sizes_for_poisson_noise_above_the_forecast() -> None:
    # 225 requests forecast: two standard deviations are 30 more, and one more worker
    plain = decide(config(), inputs(forecast=Forecast(225, 1024, 128)))
    margin = decide(config(forecast_margin_sigmas=2.0), inputs(forecast=Forecast(225, 1024, 128)))
    assert plain.targets["prefill"] == math.ceil(prefill_need(225)) == 2
    assert margin.targets["prefill"] == math.ceil(prefill_need(255)) == 3
    assert any(f"prefill {255 * 1024 / 10:.0f} tok/s" in r for r in margin.reasons)
    with pytest.raises(ConfigError, match="--forecast-margin-sigmas"):
        config(forecast_margin_sigmas=-1.0)


def test_rising_margin_applies_only_while_the_load_rises() -> None:
    # the default --rising-margin-sigmas 2: a steady forecast of 225 is sized as it is,
    # a rising one for two standard deviations more (255), and one more worker
    cfg = config()
    steady = decide(cfg, inputs(forecast=Forecast(225, 1024, 128)))
    rising = decide(cfg, inputs(forecast=Forecast(225, 1024, 128, rising=True)))
    assert steady.targets["prefill"] == math.ceil(prefill_need(225)) == 2
    assert rising.targets["prefill"] == math.ceil(prefill_need(255)) == 3
    assert any("forecast 225 + 2 sigma (the load rises)" in r for r in rising.reasons)
    assert not any("sigma" in r for r in steady.reasons)
    # the larger margin wins: --forecast-margin-sigmas 3 all the time, rising or not
    wide = config(forecast_margin_sigmas=3.0)
    for flag in (False, True):
        d = decide(wide, inputs(forecast=Forecast(225, 1024, 128, rising=flag)))
        assert any(f"prefill {270 * 1024 / 10:.0f} tok/s" in r for r in d.reasons)
    # 0 turns it off
    off = decide(
        config(rising_margin_sigmas=0.0), inputs(forecast=Forecast(225, 1024, 128, rising=True))
    )
    assert off.targets["prefill"] == 2
    with pytest.raises(ConfigError, match="--rising-margin-sigmas"):
        config(rising_margin_sigmas=-0.5)
