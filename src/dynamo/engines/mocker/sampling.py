"""Deterministic "sampling" for the mocker: output token i of a request is a hash of (seed, i).

Stateless, so a preempted request that recomputes continues with the same tokens, and tokens
are valid ids of the tokenizer's vocabulary, skipping EOS and other special ids.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable

import xxhash

_PAIR = struct.Struct("<QQ")
_U64_MASK = (1 << 64) - 1


def seed_for(request_id: str, seed: int | None) -> int:
    """The request's `sampling_options.seed`, else a stable hash of its request id."""
    if seed is not None:
        return seed & _U64_MASK
    return xxhash.xxh3_64_intdigest(request_id.encode())


class TokenSampler:
    """Picks output token ids uniformly (by hash) from `[0, vocab_size)` minus `excluded`."""

    __slots__ = ("_excluded", "vocab_size")

    def __init__(self, vocab_size: int, excluded: Iterable[int] = ()) -> None:
        self.vocab_size = vocab_size
        self._excluded = frozenset(t for t in excluded if 0 <= t < vocab_size)
        if vocab_size < 1 or len(self._excluded) >= vocab_size:
            raise ValueError(f"vocab of {vocab_size} ids leaves nothing to sample")

    def token(self, seed: int, index: int) -> int:
        h = xxhash.xxh3_64_intdigest(_PAIR.pack(seed, index))
        token = h % self.vocab_size
        while token in self._excluded:
            h = xxhash.xxh3_64_intdigest(_PAIR.pack(h, index))
            token = h % self.vocab_size
        return token
