"""Candidates, concurrency ranges, selection and the rapid simulator."""

from __future__ import annotations

from dynamo.engines.mocker.timing import TimingModel
from dynamo.profiler.config import Sla
from dynamo.profiler.hardware import engine
from dynamo.profiler.measure import DecodePoint, PrefillPoint, steady_state
from dynamo.profiler.overhead import NONE, ServingOverhead
from dynamo.profiler.rapid import RapidMeasurer
from dynamo.profiler.select import TIE_TOLERANCE, decode_at_sla, select
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


def test_rapid_prefill_is_the_timing_model_plus_the_serving_overhead() -> None:
    point = RapidMeasurer(NONE).prefill(engine("h100_sxm", 1), 3000)
    assert point.ttft_ms == TimingModel().prefill_s(3000) * 1000
    assert point.thpt_per_gpu == 3000 / point.ttft_ms * 1000
    client = RapidMeasurer(ServingOverhead(2.0, 1.5)).prefill(engine("h100_sxm", 1), 3000)
    assert client.ttft_ms == point.ttft_ms + 2.0 + 1.5 * 3


def test_rapid_decode_excludes_prefill_and_grows_with_load() -> None:
    m, eng = RapidMeasurer(ServingOverhead(5.0, 1.0)), engine("h100_sxm", 1)
    low = m.decode(eng, 1000, 20, 1)
    high = m.decode(eng, 1000, 20, 64)
    # one request: every gap after the first token is one decode step at its KV usage (the
    # serving overhead is TTFT's only)
    assert 5.74 < low.itl_ms < 6.0
    assert high.itl_ms > low.itl_ms
    assert high.thpt_per_gpu > 30 * low.thpt_per_gpu
    assert high.kv_usage == 64 * 1010 / (16384 * 64)


def _d(gpus: int, c: int, itl: float, thpt: float) -> DecodePoint:
    return DecodePoint(gpus, 3000, 150, c, itl, thpt, 1 << 20)


def test_select_compares_each_tp_at_the_sla_not_its_passing_points() -> None:
    prefill = [PrefillPoint(1, 3000, 66.0), PrefillPoint(2, 3000, 40.0)]
    # TP1 crosses 25 ms at 100 + 5/6 x 50 = 141.7 streams: 141 streams, 5820 tok/s/GPU; its
    # passing point (5000) alone would lose to TP2's 5500
    decode = [_d(1, 100, 20.0, 5000), _d(1, 150, 26.0, 6000), _d(2, 200, 22.0, 5500)]
    chosen = select(prefill, decode, SLA)
    assert chosen.meets_sla and chosen.shortfall(SLA) == ""
    assert chosen.prefill.gpus == 1  # 45k tok/s/GPU beats TP2's 37.5k
    assert chosen.decode == _d(1, 141, 20.0 + 41 / 50 * 6, 5000 + 41 / 50 * 1000)
    assert chosen.decode.itl_ms <= SLA.itl_ms
    assert chosen.decode_at_sla == (chosen.decode, _d(2, 200, 22.0, 5500))


def test_a_point_on_the_sla_line_moves_the_value_a_little_not_a_sweep_step() -> None:
    below = [_d(2, 1, 6.5, 77), _d(2, 171, 19.7, 4340), _d(2, 256, 24.98, 5120)]
    above = [*below[:2], _d(2, 256, 25.02, 5116)]
    under, over = decode_at_sla(below, 25.0), decode_at_sla(above, 25.0)
    assert under == below[2]
    assert over is not None and over.concurrency == 255  # 171 + 5.3/5.32 x 85 = 255.7
    assert over.itl_ms < 25.0 and over.thpt_per_gpu > 0.99 * under.thpt_per_gpu
    # against a TP1 curve clearly better at the SLA, both pick TP1 either way
    tp1 = [_d(1, 1, 5.9, 160), _d(1, 86, 17.8, 4823), _d(1, 171, 26.5, 6450)]
    prefill = [PrefillPoint(1, 3000, 70.0)]
    assert select(prefill, tp1 + below, SLA).decode.gpus == 1
    assert select(prefill, tp1 + above, SLA).decode.gpus == 1


def test_candidates_within_the_tie_tolerance_go_to_the_fewest_gpus() -> None:
    prefill = [PrefillPoint(1, 3000, 70.0)]
    near = 5000 * (1 - TIE_TOLERANCE / 2)
    tied = [_d(1, 100, 20.0, near), _d(2, 100, 20.0, 5000), _d(4, 100, 20.0, 4000)]
    assert select(prefill, tied, SLA).decode == tied[0]
    apart = [_d(1, 100, 20.0, 5000 * (1 - 2 * TIE_TOLERANCE)), tied[1]]
    assert select(prefill, apart, SLA).decode == tied[1]
    # the same rule for prefill, against TP1's 3000 / 70 ms = 42.9k tok/s/GPU: TP2 at 32 ms
    # (46.9k, 9 % more) wins; TP2 at 34 ms (44.1k, 3 % more) is a tie, so TP1
    decode = [tied[1]]
    assert select([*prefill, PrefillPoint(2, 3000, 32.0)], decode, SLA).prefill.gpus == 2
    assert select([*prefill, PrefillPoint(2, 3000, 34.0)], decode, SLA).prefill.gpus == 1


def test_a_curve_never_meeting_the_sla_and_one_always_meeting_it() -> None:
    never = [_d(1, 1, 26.0, 40), _d(1, 50, 30.0, 1700)]
    assert decode_at_sla(never, 25.0) is None
    always = [_d(2, 1, 6.0, 80), _d(2, 128, 15.0, 4200), _d(2, 256, 24.0, 5300)]
    assert decode_at_sla(always, 25.0) == always[2]  # its last point, no extrapolation
    chosen = select([PrefillPoint(1, 3000, 70.0)], never + always, SLA)
    assert chosen.decode == always[2] and chosen.decode_at_sla == (always[2],)
    # a point back under the target after a crossing is noise: the range ends at the crossing
    noisy = [_d(1, 1, 6.0, 160), _d(1, 86, 19.0, 4500), _d(1, 171, 28.0, 6100)]
    noisy.append(_d(1, 256, 24.1, 10600))
    point = decode_at_sla(noisy, 25.0)
    assert point is not None and point.concurrency == 142  # 86 + 6/9 x 85 = 142.7


def test_a_single_point_meets_or_does_not() -> None:
    one = _d(1, 64, 20.0, 3000)
    assert decode_at_sla([one], 25.0) == one
    assert decode_at_sla([one], 19.9) is None
    # a crossing below the next whole stream adds no point: the first one stands
    assert decode_at_sla([_d(1, 1, 24.9, 40), _d(1, 2, 30.0, 70)], 25.0) == _d(1, 1, 24.9, 40)
    strict = Sla(isl=3000, osl=150, ttft_ms=300.0, itl_ms=19.9)
    chosen = select([PrefillPoint(1, 3000, 70.0)], [one], strict)
    assert not chosen.meets_sla and chosen.decode == one and chosen.decode_at_sla == ()


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
    itl_s, tokens_per_s = steady_state([a, b], [[1, 3, 5, 7], [1, 2, 3, 4, 5, 6, 7]])
    assert itl_s == (0.5 + 0.5) / 2
    assert tokens_per_s == (6 + 6) / 3.0
    # one token per chunk (the simulator) is the same as giving no counts
    assert steady_state([a, b], [[1, 2, 3, 4], list(range(1, 8))]) == steady_state([a, b])


def test_steady_state_gives_a_late_burst_its_tokens_not_an_even_spread() -> None:
    # a stall then 4 tokens at once: the gap before the burst spans 4 tokens, the rest 1
    a = [0.0, 1.0, 2.0, 6.0, 7.0]
    counts = [[1, 2, 3, 7, 8]]
    itl_s, tokens_per_s = steady_state([a], counts)
    assert itl_s == 7.0 / 7
    assert tokens_per_s == 7 / 7.0
    # the window starts at the last first chunk: tokens counted from there, not from 0
    b = [2.0, 3.0, 7.0]
    itl_s, _ = steady_state([a, b], [counts[0], [1, 2, 3]])
    # inside [2, 7]: a spans chunks at 2, 6, 7 (tokens 3 -> 8), b spans 2, 3, 7 (1 -> 3)
    assert itl_s == ((7.0 - 2.0) / 5 + (7.0 - 2.0) / 2) / 2
