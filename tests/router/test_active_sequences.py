import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dynamo.protocols.hashing import sequence_hashes
from dynamo.router.active_sequences import ActiveSequences
from dynamo.runtime.errors import ConfigError


def state(seqs: ActiveSequences) -> tuple[int, int]:
    return seqs.active_blocks, seqs.active_tokens


def test_reference_vector():
    """Dynamo's `ActiveSequences` test, block size 4."""
    seqs = ActiveSequences(4)
    seqs.add_request("r1", [1, 2, 3], 12, 0)
    assert state(seqs) == (3, 12)
    seqs.add_request("r2", [4], 4, 0)
    assert state(seqs) == (4, 16)
    seqs.add_request("r3", [1, 2, 3, 4], 16, 4)
    assert state(seqs) == (4, 16)
    assert seqs.free("r2")
    assert state(seqs) == (4, 12)
    assert seqs.free("r3")
    assert state(seqs) == (3, 12)
    assert seqs.free("r1")
    assert state(seqs) == (0, 0)
    assert seqs.num_requests == 0


def test_prefill_completion_and_free_are_idempotent():
    seqs = ActiveSequences(4)
    seqs.add_request("r", [1, 2], 10, 1)
    assert state(seqs) == (2, 6)
    seqs.mark_prefill_completed("r")
    seqs.mark_prefill_completed("r")
    assert state(seqs) == (2, 0)
    assert seqs.free("r")
    assert not seqs.free("r")
    seqs.mark_prefill_completed("unknown")
    assert state(seqs) == (0, 0)


def test_new_tokens_never_negative():
    seqs = ActiveSequences(16)
    assert seqs.new_tokens(100, 2) == 68
    assert seqs.new_tokens(30, 2) == 0


def test_re_adding_a_request_replaces_it():
    seqs = ActiveSequences(4)
    seqs.add_request("r", [1, 2], 8, 0)
    seqs.add_request("r", [5], 4, 0)
    assert state(seqs) == (1, 4)


def test_potential_blocks_and_tokens_counts_shared_prefix_once():
    chain = sequence_hashes([10, 11, 12, 13])
    seqs = ActiveSequences(4)
    seqs.add_request("a", chain[:2], 8, 0)
    assert seqs.potential_blocks_and_tokens(chain, 16, 2) == (4, 8 + 8)
    assert seqs.potential_blocks_and_tokens(sequence_hashes([99]), 4, 0) == (3, 12)
    assert seqs.potential_blocks_and_tokens([], 3, 0) == (2, 11)


def test_expire_stale_frees_requests_seen_twice():
    seqs = ActiveSequences(4)
    seqs.add_request("old", [1], 4, 0)
    assert seqs.expire_stale() == []
    seqs.add_request("new", [2], 4, 0)
    assert seqs.expire_stale() == ["old"]
    assert "old" not in seqs and "new" in seqs
    assert state(seqs) == (1, 4)


def test_block_size_must_exceed_one():
    with pytest.raises(ConfigError, match="KV block size must be > 1, got 1"):
        ActiveSequences(1)


@settings(max_examples=200, deadline=None)
@given(
    prompts=st.lists(st.lists(st.integers(0, 2), max_size=6), max_size=8),
    query=st.lists(st.integers(0, 2), max_size=6),
    frees=st.lists(st.integers(0, 7), max_size=4),
)
def test_active_prefix_equals_scan(prompts, query, frees):
    """The binary search agrees with counting active blocks, for chained hashes."""
    seqs = ActiveSequences(4)
    for i, p in enumerate(prompts):
        seqs.add_request(f"r{i}", sequence_hashes(p), 4 * len(p), 0)
    for i in frees:
        seqs.free(f"r{i}")
    q = sequence_hashes(query)
    active = set(seqs._refs)
    assert seqs.active_prefix(q) == sum(1 for h in q if h in active)
