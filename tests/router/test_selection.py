import math
import random

import pytest

from dynamo.protocols.kv_events import LoadMetrics
from dynamo.router.selection import (
    BusyThresholds,
    Candidate,
    candidate_costs,
    drop_busy,
    effective_credit,
    select_candidate,
    softmax_probabilities,
)
from dynamo.runtime.errors import OverloadedError


def cand(i, prefill_blocks, decode_blocks, tree_size=0, block_size=16):
    return Candidate((i, 0), block_size, 0, prefill_blocks * block_size, decode_blocks, tree_size)


def test_docs_cost_example_picks_worker_two():
    """router_guide.md: (prefill 8, decode 10), (5, 5), (2, 9) cost 18, 10, 11."""
    cands = [cand(1, 8, 10), cand(2, 5, 5), cand(3, 2, 9)]
    assert [c.cost(1.0) for c in cands] == [18.0, 10.0, 11.0]
    chosen = select_candidate(cands, overlap_weight=1.0, temperature=0.0, rng=random.Random(0))
    assert chosen.key == (2, 0)


def test_weight_shifts_the_choice_towards_prefill():
    cands = [cand(1, 8, 10), cand(2, 5, 5), cand(3, 2, 9)]
    chosen = select_candidate(cands, overlap_weight=3.0, temperature=0.0, rng=random.Random(0))
    assert chosen.key == (3, 0)  # 33, 20, 15


def test_fractional_prefill_blocks():
    c = Candidate((1, 0), 16, 0, 24, 3)
    assert c.cost(2.0) == 2 * 1.5 + 3


def overlap_cand(i, isl_blocks, overlap, active_blocks, decode_blocks, block_size=16):
    """A worker holding `overlap` leading blocks of an `isl_blocks`-block prompt."""
    pending = active_blocks * block_size
    prefill = pending + (isl_blocks - overlap) * block_size
    return Candidate((i, 0), block_size, overlap, prefill, decode_blocks, 0, pending)


def test_overlap_credit_counts_cached_blocks_credit_times():
    # raw prefill = 10 pending + 20 prompt blocks; 8 cached: 30 - 2 * 8 = 14
    c = overlap_cand(1, 20, 8, 10, 5)
    assert c.cost(1.0) == 22 + 5
    assert c.cost(1.0, overlap_credit=2.0) == 14 + 5
    assert c.cost(3.0, overlap_credit=2.0) == 3 * 14 + 5
    assert c.cost(1.0, overlap_credit=0.0) == 30 + 5
    assert c.cost(1.0, overlap_credit=5.0) == 0 + 5  # the prefill cost is clamped at 0


def test_credit_above_one_turns_a_load_choice_into_a_cache_choice():
    cached = overlap_cand(1, 20, 12, 16, 0)  # 12 blocks cached, 16 pending blocks
    idle = overlap_cand(2, 20, 0, 0, 0)
    rng = random.Random(0)
    assert candidate_costs([cached, idle], 1.0) == [24.0, 20.0]
    assert select_candidate([cached, idle], overlap_weight=1.0, temperature=0, rng=rng) is idle
    assert candidate_costs([cached, idle], 1.0, overlap_credit=2.0) == [12.0, 20.0]
    chosen = select_candidate(
        [cached, idle], overlap_weight=1.0, temperature=0, rng=rng, overlap_credit=2.0
    )
    assert chosen is cached


def test_credit_decay_halves_the_credit_at_one_request_of_excess_pending_prefill():
    # request of 20 blocks; worker 1 has 20 blocks more pending than the least loaded worker 2
    busy = overlap_cand(1, 20, 10, 20, 0)
    light = overlap_cand(2, 20, 0, 0, 0)
    costs = candidate_costs([busy, light], 1.0, 2.0, overlap_credit_decay=1.0, request_blocks=20)
    assert costs == [pytest.approx(40 - 1.0 * 10), 20.0]  # credit 2 / (1 + 1) = 1
    assert candidate_costs([busy, light], 1.0, 2.0, request_blocks=20) == [20.0, 20.0]


def test_queue_scale_grows_the_credit_above_one_with_the_shortest_queue():
    assert effective_credit(4.0, queue_scale=1.0, least_pending_blocks=20, request_blocks=10) == 10
    assert effective_credit(4.0, queue_scale=0.5, least_pending_blocks=20, request_blocks=10) == 7
    assert effective_credit(4.0, queue_scale=1.0, least_pending_blocks=0, request_blocks=10) == 4
    assert effective_credit(4.0, least_pending_blocks=20, request_blocks=10) == 4  # scale 0
    # Dynamo's credit (1) and a credit below 1 are left alone
    assert effective_credit(1.0, queue_scale=1.0, least_pending_blocks=99, request_blocks=1) == 1
    assert effective_credit(0.5, queue_scale=1.0, least_pending_blocks=99, request_blocks=1) == 0.5
    # then Dynamo's decay divides it
    credit = effective_credit(
        4.0,
        queue_scale=1.0,
        least_pending_blocks=20,
        excess_blocks=10,
        decay=1.0,
        request_blocks=10,
    )
    assert credit == 5


@pytest.mark.parametrize(("holder_pending", "holder_wins"), [(100, True), (130, False)])
def test_queue_scale_one_keeps_the_prefix_while_its_queue_is_below_credit_times_the_shortest(
    holder_pending, holder_wins
):
    """Whole 10-block prompt cached on the holder, 20 blocks pending on the other worker: the
    holder keeps it while its pending prefill is below 4 x (20 + 10) = 120 blocks; the static
    credit (scale 0) only while it is below 20 + 4 x 10 = 60."""
    holder = overlap_cand(1, 10, 10, holder_pending, 0)
    other = overlap_cand(2, 10, 0, 20, 0)
    rng = random.Random(0)

    def pick(scale):
        chosen = select_candidate(
            [holder, other],
            overlap_weight=16.0,
            temperature=0,
            rng=rng,
            overlap_credit=4.0,
            request_blocks=10,
            overlap_credit_queue_scale=scale,
        )
        return chosen is holder

    assert pick(1.0) is holder_wins
    assert pick(0.0) is False


def test_queue_scale_leaves_light_load_and_dynamos_credit_alone():
    holder = overlap_cand(1, 10, 6, 30, 3)
    other = overlap_cand(2, 10, 0, 0, 1)  # an idle worker: no queue every choice shares
    assert candidate_costs([holder, other], 16.0, 4.0, request_blocks=10) == candidate_costs(
        [holder, other], 16.0, 4.0, request_blocks=10, overlap_credit_queue_scale=1.0
    )
    busy = overlap_cand(2, 10, 0, 25, 1)
    assert candidate_costs([holder, busy], 1.0, 1.0, request_blocks=10) == candidate_costs(
        [holder, busy], 1.0, 1.0, request_blocks=10, overlap_credit_queue_scale=1.0
    )
    assert candidate_costs([holder, busy], 16.0, 4.0, request_blocks=10) != candidate_costs(
        [holder, busy], 16.0, 4.0, request_blocks=10, overlap_credit_queue_scale=1.0
    )


def test_tie_broken_by_smallest_tree_then_random():
    cands = [cand(1, 2, 2, tree_size=9), cand(2, 2, 2, tree_size=3), cand(3, 2, 2, tree_size=3)]
    rng = random.Random(1)
    picks = {
        select_candidate(cands, overlap_weight=1, temperature=0, rng=rng).key for _ in range(50)
    }
    assert picks == {(2, 0), (3, 0)}


def test_tie_goes_to_the_larger_overlap_before_the_smaller_tree():
    # credit 4 clamps both prefill costs to 0: 8 cached of 8 blocks ties with 2 cached of 8
    whole = Candidate((1, 0), 16, 8, 0, 8, tree_size=50)
    quarter = Candidate((2, 0), 16, 2, 6 * 16, 8, tree_size=3)
    assert candidate_costs([whole, quarter], 16.0, 4.0) == [8.0, 8.0]
    for seed in range(20):
        chosen = select_candidate(
            [quarter, whole],
            overlap_weight=16.0,
            temperature=0.0,
            rng=random.Random(seed),
            overlap_credit=4.0,
        )
        assert chosen.key == (1, 0)


def test_select_needs_candidates():
    with pytest.raises(ValueError, match="at least one candidate"):
        select_candidate([], overlap_weight=1, temperature=0, rng=random.Random())


def test_softmax_probabilities_formula():
    probs = softmax_probabilities([10.0, 12.0, 20.0], 0.5)
    scores = [-(c / 10.0) / 0.5 for c in (10.0, 12.0, 20.0)]
    z = sum(math.exp(s) for s in scores)
    assert probs == pytest.approx([math.exp(s) / z for s in scores])
    assert probs[0] > probs[1] > probs[2]
    assert softmax_probabilities([4.0, 4.0], 1.0) == [0.5, 0.5]
    with pytest.raises(ValueError, match="temperature must be > 0, got 0"):
        softmax_probabilities([1.0], 0)


def test_softmax_sampling_statistics():
    """With a fixed seed the sample frequencies fit the softmax (chi-square, generous bound)."""
    cands = [cand(1, 10, 0), cand(2, 12, 0), cand(3, 20, 0), cand(4, 15, 0)]
    expected = softmax_probabilities([c.cost(1.0) for c in cands], 0.7)
    rng = random.Random(1234)
    n = 20_000
    counts = {c.key: 0 for c in cands}
    for _ in range(n):
        counts[select_candidate(cands, overlap_weight=1.0, temperature=0.7, rng=rng).key] += 1
    chi2 = sum((counts[c.key] - n * p) ** 2 / (n * p) for c, p in zip(cands, expected, strict=True))
    assert chi2 < 25  # df=3: p(chi2 > 16.3) = 0.001
    # the cheapest is picked most, but not always
    assert counts[(1, 0)] == max(counts.values()) and counts[(1, 0)] < n


def test_softmax_with_equal_costs_is_uniform():
    cands = [cand(i, 3, 3) for i in range(4)]
    rng = random.Random(7)
    counts = {c.key: 0 for c in cands}
    for _ in range(8000):
        counts[select_candidate(cands, overlap_weight=1.0, temperature=2.0, rng=rng).key] += 1
    assert all(1700 < v < 2300 for v in counts.values())


def metrics(worker, active_blocks=0, total=100, prefill=0):
    return LoadMetrics(
        worker, kv_active_blocks=active_blocks, kv_total_blocks=total, active_prefill_tokens=prefill
    )


def test_busy_by_decode_blocks_fraction():
    t = BusyThresholds(active_decode_blocks=0.9)
    assert not t.is_busy(metrics(1, 90))
    assert t.is_busy(metrics(1, 91))
    assert not t.is_busy(None)
    # total from the model card when the metrics lack it
    assert t.is_busy(metrics(1, 50, total=0), total_kv_blocks=50)
    assert not t.is_busy(metrics(1, 50, total=0))


def test_busy_by_prefill_tokens():
    t = BusyThresholds(active_prefill_tokens=1000)
    assert not t.is_busy(metrics(1, prefill=1000))
    assert t.is_busy(metrics(1, prefill=1001))


def test_drop_busy_and_overload():
    t = BusyThresholds(active_decode_blocks=0.5)
    m = {(1, 0): metrics(1, 80), (2, 0): metrics(2, 10)}
    assert drop_busy([(1, 0), (2, 0), (3, 0)], t, m, {}) == [(2, 0), (3, 0)]
    with pytest.raises(OverloadedError, match="all 1 candidate workers are over their busy"):
        drop_busy([(1, 0)], t, m, {})
    assert drop_busy([(1, 0)], BusyThresholds(), m, {}) == [(1, 0)]
