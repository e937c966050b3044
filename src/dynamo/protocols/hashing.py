"""Block hashing shared by engines (KV events) and the router (prefix matching).

Compatible with Dynamo and vLLM KV events: full blocks only; a block's LocalBlockHash is
XXH3-64 (seed 1337) of its token ids as little-endian u32; sequence hashes chain the previous
sequence hash with the block hash so equal hashes mean equal prefixes.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence

import xxhash

XXH3_SEED = 1337
_U64 = struct.Struct("<QQ")


def salted_seed(salt: str | None) -> int:
    """Seed for a LoRA adapter or cache namespace: 1337 + xxh3_64(salt), wrapping at 2^64."""
    if not salt:
        return XXH3_SEED
    return (XXH3_SEED + xxhash.xxh3_64_intdigest(salt.encode())) & 0xFFFFFFFFFFFFFFFF


def block_hashes(
    token_ids: Sequence[int], block_size: int, *, seed: int = XXH3_SEED
) -> list[int]:
    """LocalBlockHash of every full block of `token_ids` (a trailing partial block is ignored)."""
    n_full = len(token_ids) // block_size
    if n_full == 0:
        return []
    fmt = struct.Struct(f"<{block_size}I")
    h = xxhash.xxh3_64_intdigest
    return [
        h(fmt.pack(*token_ids[i * block_size : (i + 1) * block_size]), seed) for i in range(n_full)
    ]


def sequence_hashes(local_hashes: Sequence[int], *, seed: int = XXH3_SEED) -> list[int]:
    """Chained prefix hashes: seq[0] = local[0]; seq[i] = XXH3(LE64 seq[i-1] || LE64 local[i])."""
    out: list[int] = []
    h = xxhash.xxh3_64_intdigest
    prev: int | None = None
    for local in local_hashes:
        prev = local if prev is None else h(_U64.pack(prev, local), seed)
        out.append(prev)
    return out
