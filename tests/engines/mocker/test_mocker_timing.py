"""Timing: Dynamo's polynomials, reproduced in simulated (never wall) time by the scheduler."""

from __future__ import annotations

import pytest
from _mocker_helpers import Driver, config

from dynamo.engines.mocker.timing import TimingModel, decode_ms, prefill_ms


def poly_prefill(t: int) -> float:
    return 4.209989e-07 * t * t + 1.518344e-02 * t + 16.50142


def poly_decode(p: float) -> float:
    return max(-25.74 * p * p + 54.01 * p + 5.74, 1.0)


def test_polynomials() -> None:
    assert prefill_ms(0) == 0.0
    assert prefill_ms(1000) == pytest.approx(0.4209989 + 15.18344 + 16.50142)
    assert decode_ms(0.0) == pytest.approx(5.74)
    assert decode_ms(1.0) == pytest.approx(-25.74 + 54.01 + 5.74)
    assert decode_ms(0.5) == pytest.approx(poly_decode(0.5))


def exact(ms: float) -> object:
    """A simulated duration in seconds equal to `ms` up to float rounding."""
    return pytest.approx(ms / 1000, rel=1e-12)


def test_speedup_ratios_divide_and_zero_means_no_delay() -> None:
    t = TimingModel(speedup_ratio=4.0, decode_speedup_ratio=2.0)
    assert t.prefill_s(512) == pytest.approx(poly_prefill(512) / 4 / 1000)
    assert t.decode_s(0.3) == pytest.approx(poly_decode(0.3) / 8 / 1000)
    assert t.step_s(512, True, 0.3) == pytest.approx(t.prefill_s(512) + t.decode_s(0.3))
    assert t.step_s(512, False, 0.3) == pytest.approx(t.prefill_s(512))
    assert t.step_s(0, True, 0.3) == pytest.approx(t.decode_s(0.3))
    assert TimingModel(speedup_ratio=0.0).step_s(4096, True, 1.0) == 0.0


@pytest.mark.parametrize("n", [64, 512, 2048, 8192])
def test_a_prefill_chunk_of_n_new_tokens_takes_the_prefill_polynomial(n: int) -> None:
    # a prompt of 2n tokens with a budget of n: the first step computes n tokens, samples nothing
    d = Driver(config(num_gpu_blocks=4096, block_size=16, max_num_batched_tokens=n))
    d.add(0, list(range(10, 10 + 2 * n)), max_tokens=2)
    first = d.step()
    assert first.emitted == [] and first.prefill_tokens == n
    assert first.duration_s == exact(poly_prefill(n))


@pytest.mark.parametrize("n", [16, 1700, 6000])
def test_a_lone_prompt_gets_its_first_token_after_the_prefill_time_alone(n: int) -> None:
    # no request was decoding, so the step that finishes the prompt pays no decode pass
    d = Driver(config(num_gpu_blocks=1024, block_size=16, max_num_batched_tokens=8192))
    d.add(0, list(range(10, 10 + n)), max_tokens=3)
    first = d.step()
    assert [k for k, _ in first.emitted] == [0] and first.prefill_tokens == n
    assert first.duration_s == exact(poly_prefill(n))
    second = d.step()
    assert second.prefill_tokens == 0 and [k for k, _ in second.emitted] == [0]
    assert second.duration_s == exact(poly_decode(second.kv_usage))


def test_a_prompt_joining_running_decodes_pays_prefill_and_one_decode_pass() -> None:
    d = Driver(config(num_gpu_blocks=1024, block_size=16, max_num_batched_tokens=8192))
    d.add(0, list(range(10, 10 + 100)), max_tokens=10)
    d.step()  # request 0 prefilled, first token
    d.add(1, list(range(500, 500 + 1700)), max_tokens=2)
    mixed = d.step()
    assert sorted(k for k, _ in mixed.emitted) == [0, 1] and mixed.prefill_tokens == 1700
    assert mixed.duration_s == exact(poly_prefill(1700) + poly_decode(mixed.kv_usage))


def test_cached_prompt_tokens_do_not_count_as_prefill() -> None:
    d = Driver(config(num_gpu_blocks=1024, block_size=16, max_num_batched_tokens=8192))
    prompt = list(range(10, 10 + 1024))
    d.add(0, prompt, max_tokens=1)
    d.drain()
    d.add(1, [*prompt, 7, 8, 9, 10], max_tokens=1)
    step = d.step()
    assert d.finished[1].cached_tokens == 1024
    assert step.prefill_tokens == 4
    assert step.duration_s == exact(poly_prefill(4))


@pytest.mark.parametrize("blocks_used", [1, 25, 50, 90])
def test_a_decode_step_at_usage_p_takes_the_decode_polynomial(blocks_used: int) -> None:
    d = Driver(config(num_gpu_blocks=100, block_size=16, max_num_batched_tokens=4096))
    d.add(0, list(range(10, 10 + blocks_used * 16 - 1)), max_tokens=3)
    d.step()  # prefill
    decode = d.step()
    assert decode.prefill_tokens == 0 and len(decode.emitted) == 1
    p = blocks_used / 100
    assert decode.kv_usage == pytest.approx(p)
    assert decode.duration_s == exact(poly_decode(p))


def test_batched_prefill_pays_for_all_new_tokens_of_the_batch() -> None:
    d = Driver(config(num_gpu_blocks=1024, block_size=16, max_num_batched_tokens=8192))
    for k in range(4):
        d.add(k, [100 + k] * 1000, max_tokens=5)
    step = d.step()
    assert step.prefill_tokens == 4000 and len(step.emitted) == 4
    assert step.duration_s == exact(poly_prefill(4000))


def test_a_whole_run_is_one_prefill_then_one_decode_pass_per_further_token() -> None:
    d = Driver(config(num_gpu_blocks=256, block_size=16, max_num_batched_tokens=8192))
    d.add(0, list(range(10, 110)), max_tokens=5)
    usages = []
    while d.scheduler.has_work():
        usages.append(d.step().kv_usage)
    assert len(usages) == 5
    assert d.simulated_s == exact(poly_prefill(100) + sum(poly_decode(p) for p in usages[1:]))
    assert d.scheduler.simulated_time_s == pytest.approx(d.simulated_s, rel=1e-12)


def test_speedup_scales_the_simulated_time_of_a_whole_run() -> None:
    runs = []
    for speedup in (1.0, 10.0):
        d = Driver(config(num_gpu_blocks=256, block_size=16, speedup_ratio=speedup))
        for k in range(3):
            d.add(k, list(range(k, k + 100)), max_tokens=20)
        d.drain()
        runs.append(d.simulated_s)
    assert runs[1] == pytest.approx(runs[0] / 10, rel=1e-9)
