"""Block hashing shared by engines (KV events) and the router (prefix matching).

Compatible with Dynamo and vLLM KV events: full blocks only; a block's LocalBlockHash is
XXH3-64 (seed 1337) of its token ids as little-endian u32; sequence hashes chain the previous
sequence hash with the block hash so equal hashes mean equal prefixes.
"""

from __future__ import annotations

import struct
import sys
from array import array
from collections.abc import Sequence

import xxhash

from dynamo.runtime.errors import InvalidRequestError

XXH3_SEED = 1337
_U64 = struct.Struct("<QQ")
# An array typecode of 4-byte unsigned ints ('I' on every mainstream platform).
_U32 = next(code for code in "IL" if array(code).itemsize == 4)
_SWAP = sys.byteorder != "little"


def salted_seed(salt: str | None) -> int:
    """Seed for a LoRA adapter or cache namespace: 1337 + xxh3_64(salt), wrapping at 2^64."""
    if not salt:
        return XXH3_SEED
    return (XXH3_SEED + xxhash.xxh3_64_intdigest(salt.encode())) & 0xFFFFFFFFFFFFFFFF


def block_hashes(token_ids: Sequence[int], block_size: int, *, seed: int = XXH3_SEED) -> list[int]:
    """LocalBlockHash of every full block of `token_ids` (a trailing partial block is ignored)."""
    n_full = len(token_ids) // block_size
    if n_full == 0:
        return []
    # Pack every token once, then hash byte slices: about twice as fast as one
    # struct.pack per block (the per-token int conversion dominates either way).
    try:
        packed = array(_U32, token_ids)
    except (OverflowError, TypeError) as exc:
        raise InvalidRequestError(
            f"token ids must be integers in [0, 2**32): {exc}", param="token_ids"
        ) from exc
    if _SWAP:
        packed.byteswap()
    data = packed.tobytes()
    step = block_size * 4
    h = xxhash.xxh3_64_intdigest
    return [h(data[i : i + step], seed) for i in range(0, n_full * step, step)]


def sequence_hashes(local_hashes: Sequence[int], *, seed: int = XXH3_SEED) -> list[int]:
    """Chained prefix hashes: seq[0] = local[0]; seq[i] = XXH3(LE64 seq[i-1] || LE64 local[i])."""
    out: list[int] = []
    h = xxhash.xxh3_64_intdigest
    prev: int | None = None
    for local in local_hashes:
        prev = local if prev is None else h(_U64.pack(prev, local), seed)
        out.append(prev)
    return out
