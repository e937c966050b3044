"""Scheduler behaviour on hand-built cases: batching, chunking, admission, preemption, stops."""

from __future__ import annotations

import pytest
from _mocker_helpers import Driver, config

from dynamo.engines.mocker.sampling import TokenSampler


def expected(d: Driver, seed: int, n: int) -> list[int]:
    return [d.sampler.token(seed, i) for i in range(n)]


@pytest.mark.parametrize(("mode", "victim"), [("lifo", 1), ("fifo", 0)])
def test_preemption_recomputes_and_keeps_output_complete_and_in_order(
    mode: str, victim: int
) -> None:
    # 6 blocks of 2 tokens; each request grows to 3 + 8 - 1 = 10 tokens (5 blocks)
    d = Driver(config(num_gpu_blocks=6, block_size=2, preemption_mode=mode))
    d.add(0, [5, 6, 7], max_tokens=8)
    d.add(1, [5, 6, 8], max_tokens=8)
    preempted: list[int] = []
    while d.scheduler.has_work():
        preempted += d.step().preempted
    assert preempted and preempted[0] == victim
    for key in (0, 1):
        assert d.outputs[key] == expected(d, key, 8)
        assert d.finished[key].completion_tokens == 8
    assert d.scheduler.kv.active_blocks == 0


def test_a_preempted_request_keeps_the_cached_count_of_its_first_admission() -> None:
    d = Driver(config(num_gpu_blocks=6, block_size=2))
    d.add(0, [5, 6, 7], max_tokens=8)
    d.add(1, [5, 6, 8], max_tokens=8)
    d.drain()
    assert d.preemptions > 0
    assert d.finished[0].cached_tokens == 0 and d.finished[1].cached_tokens == 0


def test_running_requests_go_first_and_long_prompts_are_chunked() -> None:
    d = Driver(config(num_gpu_blocks=100, block_size=4, max_num_batched_tokens=16))
    d.add(0, [3] * 5, max_tokens=10)
    assert d.step().batch == [(0, 5)]
    d.add(1, list(range(3, 43)), max_tokens=2)  # 40 tokens: 15 + 16 + 9
    assert d.step().batch == [(0, 1), (1, 15)]
    assert d.step().batch == [(0, 1), (1, 15)]
    step = d.step()
    assert step.batch == [(0, 1), (1, 10)]
    assert {k for k, _ in step.emitted} == {0, 1}  # the prompt's last chunk samples a token


def test_without_chunked_prefill_a_prompt_waits_for_a_step_with_room() -> None:
    d = Driver(
        config(
            num_gpu_blocks=100,
            block_size=4,
            max_num_batched_tokens=16,
            enable_chunked_prefill=False,
        )
    )
    d.add(0, [3] * 4, max_tokens=5)
    d.add(1, [4] * 16, max_tokens=1)
    assert d.step().batch == [(0, 4)]  # 16 tokens do not fit next to 4
    assert d.step().batch == [(0, 1)]  # nor next to a decode: head-of-line, as vLLM
    d.drain()
    assert d.outputs[1] == expected(d, 1, 1)


def test_max_num_seqs_caps_the_running_batch() -> None:
    d = Driver(config(max_num_seqs=2))
    for k in range(4):
        d.add(k, [3, 4, 5], max_tokens=3)
    assert [k for k, _ in d.step().batch] == [0, 1]
    assert d.scheduler.num_waiting == 2


def test_admission_keeps_the_watermark_free_while_others_run() -> None:
    # 10 blocks, watermark 2 blocks; a 3-block request runs, an 6-block one must wait
    d = Driver(config(num_gpu_blocks=10, block_size=4, watermark=0.2, max_num_batched_tokens=64))
    d.add(0, [3] * 12, max_tokens=2)
    d.add(1, [4] * 24, max_tokens=1)
    assert [k for k, _ in d.step().batch] == [0]
    d.drain()
    # alone, a request may use the whole cache, watermark or not
    d.add(2, [5] * 40, max_tokens=1)
    d.drain()
    assert 2 in d.finished


def test_stop_tokens_respect_min_tokens_and_eos_respects_ignore_eos() -> None:
    d = Driver(config())
    tokens = expected(d, 7, 6)
    d.add(0, [3], seed=7, max_tokens=6, stop_token_ids=[tokens[2]])
    d.add(1, [3], seed=7, max_tokens=6, stop_token_ids=[tokens[2]], min_tokens=4)
    d.add(2, [3], seed=7, max_tokens=6, eos_token_ids=[tokens[1]])
    d.add(3, [3], seed=7, max_tokens=6, eos_token_ids=[tokens[1]], ignore_eos=True)
    d.drain()
    assert [(d.finished[k].reason, len(d.outputs[k])) for k in range(4)] == [
        ("stop", 3),
        ("length", 6),
        ("eos", 2),
        ("length", 6),
    ]


def test_sequences_stop_at_max_model_len() -> None:
    d = Driver(config(max_model_len=10))
    d.add(0, [3] * 7, max_tokens=50)
    d.add(1, [3] * 10, max_tokens=50)
    d.add(2, [3] * 4)  # no max_tokens: up to the model length
    d.drain()
    assert [d.finished[k].completion_tokens for k in range(3)] == [3, 1, 6]
    assert {d.finished[k].reason for k in range(3)} == {"length"}


def test_aborting_frees_blocks_wherever_the_request_is() -> None:
    d = Driver(config(max_num_seqs=1))
    d.add(0, [3] * 9, max_tokens=20)
    d.add(1, [4] * 9, max_tokens=20)
    d.step()
    assert d.scheduler.kv.active_blocks == 3
    assert d.scheduler.abort(0) and d.scheduler.abort(1)
    assert not d.scheduler.abort(1)
    assert d.scheduler.kv.active_blocks == 0 and d.scheduler.num_waiting == 0
    assert d.scheduler.pending_prefill_tokens == 0
    assert not d.scheduler.has_work()
    assert d.step().batch == []


def test_pending_prefill_and_hit_rate_are_tracked() -> None:
    d = Driver(config(block_size=4, max_num_batched_tokens=8))
    d.add(0, [3] * 12, max_tokens=1)
    assert d.scheduler.pending_prefill_tokens == 12
    d.step()
    assert d.scheduler.pending_prefill_tokens == 4
    d.drain()
    d.add(1, [3] * 12, max_tokens=1)
    d.drain()
    assert d.finished[1].cached_tokens == 8  # the last block is always recomputed
    assert d.scheduler.prefix_cache_hit_rate == pytest.approx(8 / 24)


def test_identical_requests_share_blocks_while_running() -> None:
    d = Driver(config(block_size=4))
    d.add(0, [3] * 8, max_tokens=9, seed=1)
    d.drain()
    d.add(1, [3] * 8, max_tokens=9, seed=1)
    d.add(2, [3] * 8, max_tokens=9, seed=1)
    d.step()
    d.step()
    # prompt block 0 cached; block 1 recomputed and deduplicated: 2 shared + 2 private
    assert d.scheduler.kv.active_blocks == 4
    d.drain()
    assert d.outputs[1] == d.outputs[2] == d.outputs[0]


def test_bad_requests_are_refused() -> None:
    d = Driver(config(max_model_len=10))
    d.add(0, [3])
    with pytest.raises(ValueError, match="already queued"):
        d.add(0, [3])
    with pytest.raises(ValueError, match="outside"):
        d.add(1, [3] * 11)
    with pytest.raises(ValueError, match="outside"):
        d.add(2, [])


def test_sampler_is_deterministic_and_avoids_excluded_ids() -> None:
    sampler = TokenSampler(4, excluded=[0, 1, 2])
    assert {sampler.token(s, i) for s in range(5) for i in range(20)} == {3}
    wide = TokenSampler(50_000, excluded=[2])
    assert wide.token(9, 3) == wide.token(9, 3) != wide.token(10, 3)
    with pytest.raises(ValueError):
        TokenSampler(3, excluded=[0, 1, 2])
