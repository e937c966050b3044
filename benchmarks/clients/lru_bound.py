#!/usr/bin/env python3
"""Prefix-cache hit bound of a Mooncake trace: one shared LRU cache of CAP blocks of BS tokens.

    python benchmarks/clients/lru_bound.py TRACE LIMIT TOKENS_PER_HASH BS CAP

CAP is the capacity of all workers together, so a router that pooled every worker's cache
perfectly would reach about this hit rate. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
from collections import OrderedDict
from collections.abc import Iterable
from typing import Any

try:  # run as a script from benchmarks/clients
    from mooncake import TRACE_BLOCK_TOKENS, read_rows, scaled_length
except ModuleNotFoundError:  # imported as clients.lru_bound from benchmarks/
    from clients.mooncake import TRACE_BLOCK_TOKENS, read_rows, scaled_length

BlockKey = tuple[tuple[int, ...], int, int]


def block_keys(row: dict[str, Any], tokens_per_hash: int, block_size: int) -> list[BlockKey]:
    """One key per full cache block of the row's prompt: equal keys mean an equal prefix."""
    ids = row["hash_ids"]
    keys = []
    for i in range(scaled_length(row, tokens_per_hash) // block_size):
        start = i * block_size
        index = start // tokens_per_hash
        keys.append((tuple(ids[:index]), ids[min(index, len(ids) - 1)], start % tokens_per_hash))
    return keys


def hit_rate_bound(
    rows: Iterable[dict[str, Any]], tokens_per_hash: int, block_size: int, capacity: int
) -> float:
    """Share of prompt tokens one shared LRU cache of `capacity` blocks serves from cache.

    A block hits only while every block before it in the same prompt hit (a prefix cache);
    every block of a request is then stored (or refreshed), least recently used evicted first.
    """
    if tokens_per_hash > TRACE_BLOCK_TOKENS or block_size <= 0 or capacity <= 0:
        raise ValueError("need tokens_per_hash <= 512 and a positive block size and capacity")
    lru: OrderedDict[BlockKey, None] = OrderedDict()
    total = hit = 0
    for row in rows:
        total += scaled_length(row, tokens_per_hash)
        prefix_hit = True
        for key in block_keys(row, tokens_per_hash, block_size):
            if prefix_hit and key in lru:
                hit += block_size
            else:
                prefix_hit = False
            lru[key] = None
            lru.move_to_end(key)
            if len(lru) > capacity:
                lru.popitem(last=False)
    return hit / total if total else 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("trace", help="Mooncake-format .jsonl (or .jsonl.gz / .jsonl.xz)")
    parser.add_argument("limit", type=int, help="first LIMIT requests")
    parser.add_argument("tokens_per_hash", type=int, help="prompt tokens a hash id stands for")
    parser.add_argument("block_size", type=int, help="tokens per cache block")
    parser.add_argument("capacity", type=int, help="cache blocks in all")
    args = parser.parse_args()
    rows = read_rows(args.trace, args.limit)
    bound = hit_rate_bound(rows, args.tokens_per_hash, args.block_size, args.capacity)
    print(
        json.dumps(
            {"requests": len(rows), "capacity_blocks": args.capacity, "hit_rate_bound": bound}
        )
    )


if __name__ == "__main__":
    main()
