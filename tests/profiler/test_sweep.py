"""Candidates, concurrency ranges, selection and the rapid simulator."""

from __future__ import annotations

from dynamo.engines.mocker.timing import TimingModel
from dynamo.profiler.config import Sla
from dynamo.profiler.hardware import engine
from dynamo.profiler.measure import DecodePoint, PrefillPoint, steady_state
from dynamo.profiler.rapid import RapidMeasurer
from dynamo.profiler.select import select
from dynamo.profiler.sweep import concurrency_points, spread, tp_candidates

SLA = Sla(isl=3000, osl=150, ttft_ms=300.0, itl_ms=25.0)


def test_tp_candidates_are_powers_of_two_in_range() -> None:
    assert tp_candidates(1, 8) == [1, 2, 4, 8]
    assert tp_candidates(2, 6) == [2, 4]
    assert tp_candidates(3, 3) == []


def test_concurrency_points_and_spread() -> None:
    assert concurrency_points(256, 6) == [1, 52, 103, 154, 205, 256]
    assert concurrency_points(3, 6) == [1, 2, 3]
    assert concurrency_points(256, 1) == [256]
    assert spread(128, 1128, 3) == [128, 628, 1128]


def test_engines_scale_with_gpu_and_tp() -> None:
    one, two = engine("h100_sxm", 1), engine("h100_sxm", 2)
    assert (one.speedup_ratio, one.decode_speedup_ratio, one.max_kv_tokens) == (
        1.0,
        1.0,
        16384 * 64,
    )
    assert two.num_gpu_blocks == 2 * 16384
    assert round(two.speedup_ratio, 6) == 1.8  # 2 GPUs at 90 % all-reduce efficiency
    assert round(two.speedup_ratio * two.decode_speedup_ratio, 6) == 0.9


def test_rapid_prefill_is_the_timing_model() -> None:
    point = RapidMeasurer().prefill(engine("h100_sxm", 1), 3000)
    assert point.ttft_ms == TimingModel().prefill_s(3000) * 1000
    assert point.thpt_per_gpu == 3000 / point.ttft_ms * 1000


def test_rapid_decode_excludes_prefill_and_grows_with_load() -> None:
    m, eng = RapidMeasurer(), engine("h100_sxm", 1)
    low = m.decode(eng, 1000, 20, 1)
    high = m.decode(eng, 1000, 20, 64)
    # one request: every gap after the first token is one decode step at its KV usage
    assert 5.74 < low.itl_ms < 6.0
    assert high.itl_ms > low.itl_ms
    assert high.thpt_per_gpu > 30 * low.thpt_per_gpu
    assert high.kv_usage == 64 * 1010 / (16384 * 64)


def _d(gpus: int, c: int, itl: float, thpt: float) -> DecodePoint:
    return DecodePoint(gpus, 3000, 150, c, itl, thpt, 1 << 20)


def test_select_picks_the_highest_throughput_per_gpu_within_the_sla() -> None:
    prefill = [PrefillPoint(1, 3000, 66.0), PrefillPoint(2, 3000, 40.0)]
    decode = [_d(1, 100, 20.0, 5000), _d(1, 150, 26.0, 6000), _d(2, 200, 22.0, 5500)]
    chosen = select(prefill, decode, SLA)
    assert chosen.meets_sla and chosen.shortfall(SLA) == ""
    assert chosen.prefill.gpus == 1  # 45k tok/s/GPU beats TP2's 37.5k
    assert (chosen.decode.gpus, chosen.decode.concurrency) == (2, 200)  # 6000 misses the ITL


def test_an_unmeetable_sla_names_the_best_achievable_latencies() -> None:
    strict = Sla(isl=3000, osl=150, ttft_ms=10.0, itl_ms=2.0)
    chosen = select(
        [PrefillPoint(1, 3000, 66.0), PrefillPoint(2, 3000, 40.0)],
        [_d(1, 1, 5.9, 160), _d(2, 1, 6.5, 150)],
        strict,
    )
    assert not chosen.meets_sla
    assert chosen.shortfall(strict) == (
        "TTFT target 10 ms: best achievable 40.0 ms (TP2); "
        "ITL target 2 ms: best achievable 5.9 ms (TP1, concurrency 1)"
    )


def test_steady_state_counts_only_while_every_request_streams() -> None:
    # b starts 2 s late; while both stream, a's gaps are 1 s and b's 0.5 s
    a = [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]
    b = [2.0, 2.5, 3.0, 3.5, 4.0, 6.0]
    itl_s, tokens_per_s = steady_state([a, b])
    assert itl_s == (1.0 + 0.5) / 2
    assert tokens_per_s == (3 + 4) / 3.0  # gaps inside [2, 5] over its 3 s
    # a window too short for two tokens each falls back to the whole streams
    assert steady_state([[0.0, 1.0], [1.0, 3.0]]) == ((1.0 + 2.0) / 2, 2 / 3.0)


def test_steady_state_counts_tokens_not_chunks_when_chunks_carry_several() -> None:
    # a's 4 chunks carried 7 tokens (2 per gap): its ITL is half its chunk gap
    a = [0.0, 1.0, 2.0, 3.0]
    b = [0.0, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0]
    itl_s, tokens_per_s = steady_state([a, b], [7, 7])
    assert itl_s == (0.5 + 0.5) / 2
    assert tokens_per_s == (6 + 6) / 3.0
    # one token per chunk (the simulator) is the same as giving no counts
    assert steady_state([a, b], [4, 7]) == steady_state([a, b])
