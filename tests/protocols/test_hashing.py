"""Block hashing against Dynamo's reference formula (XXH3-64, seed 1337, LE u32 tokens)."""

from __future__ import annotations

import random

import pytest
import xxhash

from dynamo.protocols.hashing import XXH3_SEED, block_hashes, salted_seed, sequence_hashes
from dynamo.runtime.errors import InvalidRequestError


def reference_block_hashes(tokens: list[int], block_size: int, seed: int = 1337) -> list[int]:
    """The formula of the spec, one block at a time, with no shared code."""
    full = len(tokens) // block_size
    out = []
    for b in range(full):
        chunk = tokens[b * block_size : (b + 1) * block_size]
        data = b"".join(t.to_bytes(4, "little") for t in chunk)
        out.append(xxhash.xxh3_64_intdigest(data, seed=seed))
    return out


def test_matches_the_reference_formula_on_random_prompts() -> None:
    rng = random.Random(7)
    for _ in range(200):
        block_size = rng.choice([2, 3, 4, 16, 32, 64])
        n = rng.randrange(0, 8 * block_size + block_size)
        top = rng.choice([2**8, 2**17, 2**32])
        tokens = [rng.randrange(top) for _ in range(n)]
        seed = rng.choice([XXH3_SEED, salted_seed("lora-a")])
        assert block_hashes(tokens, block_size, seed=seed) == reference_block_hashes(
            tokens, block_size, seed
        )


def test_fixed_vector_and_partial_blocks() -> None:
    tokens = list(range(1, 11))  # two full blocks of 4, two tokens left over
    assert block_hashes(tokens, 4) == reference_block_hashes(tokens, 4)
    assert len(block_hashes(tokens, 4)) == 2
    assert block_hashes(tokens[:3], 4) == []
    assert block_hashes([], 16) == []
    assert block_hashes(tuple(tokens), 4) == block_hashes(tokens, 4)
    max_u32 = [2**32 - 1] * 4
    assert block_hashes(max_u32, 4) == [xxhash.xxh3_64_intdigest(b"\xff" * 16, seed=1337)]


def test_sequence_hashes_chain_the_block_hashes() -> None:
    local = block_hashes(list(range(12)), 4)
    seqs = sequence_hashes(local)
    assert seqs[0] == local[0]
    for i in (1, 2):
        data = seqs[i - 1].to_bytes(8, "little") + local[i].to_bytes(8, "little")
        assert seqs[i] == xxhash.xxh3_64_intdigest(data, seed=1337)


@pytest.mark.parametrize("bad", [-1, 2**32, 1.5])
def test_token_ids_out_of_u32_range_are_a_request_error(bad: object) -> None:
    with pytest.raises(InvalidRequestError, match=r"token ids must be integers in \[0, 2\*\*32\)"):
        block_hashes([1, 2, bad, 4], 2)  # type: ignore[list-item]
