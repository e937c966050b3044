"""Seeded synthetic traces in the Mooncake format, one sharing pattern each, and their LRU bound.

    python benchmarks/synthetic_traces.py PATTERN OUT.jsonl [--requests 1000] [--seed 0]

Patterns (`PATTERNS`), sizes in trace hash ids of 512 tokens (replays scale them down alike,
e.g. 64 tokens an id at `--block 64`):

- `shared-system`: a few long system prompts (6, of 16-40 ids, Zipf-popular) before a short
  unique question (1-4 ids): most tokens are shared, by many requests, across the whole trace;
- `unique`: many short prompts (2-8 ids) that share nothing: routing can only balance load;
- `multiturn`: chat sessions (3-8 turns, 5-30 s of think time between turns, many open at
  once): each turn repeats the session's whole history (prompts and answers) and adds a
  question, so only the session's own earlier requests share its prefix;
- `popular-prefixes`: many medium prefixes (2,000 documents or agent scaffolds of 16-48 ids)
  with a heavy-tailed popularity (Zipf 0.9, shuffled so it is unrelated to length) before a
  short unique suffix (1-3 ids): a few prefixes are hot, most are seen once or twice, and
  the distinct prefixes outgrow the workers' caches, so every second copy of a prefix evicts
  another one: where a prefix is kept decides the hit rate.

Arrivals are Poisson at a rate chosen so that at time scale 0.1 the four-worker replay profile
(`routing_quality.py`, `routing_sim.py`) carries about the prefill load of the conversation
trace; smaller time scales load it more. Each row: `timestamp` (ms), `input_length`,
`output_length`, `hash_ids` (equal ids at equal positions = an equal prefix; a new prefix
always gets new ids). No other file is needed: `load_pattern` generates a pattern in memory.
"""

from __future__ import annotations

import argparse
import json
import random
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from clients.lru_bound import hit_rate_bound

HASH_TOKENS = 512  # tokens a Mooncake hash id stands for
Row = dict[str, Any]


class _Ids:
    """Fresh hash ids: every new prefix block gets one nobody else has."""

    def __init__(self) -> None:
        self._next = 0

    def take(self, n: int) -> list[int]:
        ids = list(range(self._next, self._next + n))
        self._next += n
        return ids


def _row(t_ms: float, ids: list[int], rng: random.Random, output: int) -> Row:
    # the last id is usually a partial block, as in the Mooncake trace
    length = (len(ids) - 1) * HASH_TOKENS + rng.randint(HASH_TOKENS // 4, HASH_TOKENS)
    return {
        "timestamp": int(t_ms),
        "input_length": length,
        "output_length": output,
        "hash_ids": ids,
    }


def _arrivals(rng: random.Random, rate_per_s: float) -> Iterator[float]:
    t = 0.0
    while True:
        yield t
        t += rng.expovariate(rate_per_s) * 1000.0


def shared_system(n: int, rng: random.Random) -> list[Row]:
    ids = _Ids()
    systems = [ids.take(rng.randint(16, 40)) for _ in range(6)]
    weights = [1.0 / (k + 1) for k in range(len(systems))]  # Zipf(1) popularity
    rows = []
    for _, t in zip(range(n), _arrivals(rng, 3.5), strict=False):
        system = rng.choices(systems, weights)[0]
        rows.append(_row(t, system + ids.take(rng.randint(1, 4)), rng, rng.randint(100, 600)))
    return rows


def unique(n: int, rng: random.Random) -> list[Row]:
    ids = _Ids()
    arrivals = _arrivals(rng, 15.0)
    return [
        _row(next(arrivals), ids.take(rng.randint(2, 8)), rng, rng.randint(50, 400))
        for _ in range(n)
    ]


def multiturn(n: int, rng: random.Random) -> list[Row]:
    """Sessions start as a Poisson process; each turn's history = the previous prompt + answer."""
    ids = _Ids()
    rows: list[Row] = []
    starts = _arrivals(rng, 5.0)
    while len(rows) < n:
        t = next(starts)
        history: list[int] = []
        for _ in range(rng.randint(3, 8)):
            prompt = history + ids.take(rng.randint(1, 6))
            output = rng.randint(100, 800)
            rows.append(_row(t, prompt, rng, output))
            # the answer becomes part of the next turn's prompt: ceil(output / 512) new ids
            history = prompt + ids.take(-(-output // HASH_TOKENS))
            t += rng.uniform(5.0, 30.0) * 1000.0
    rows.sort(key=lambda r: r["timestamp"])
    return rows[:n]


def popular_prefixes(n: int, rng: random.Random) -> list[Row]:
    """Many medium prefixes (documents, agent scaffolds) with a heavy-tailed popularity."""
    ids = _Ids()
    docs = [ids.take(rng.randint(16, 48)) for _ in range(2000)]
    weights = [1.0 / (k + 1) ** 0.9 for k in range(len(docs))]  # Zipf(0.9): a long tail
    rng.shuffle(weights)  # popularity unrelated to length or creation order
    rows = []
    for _, t in zip(range(n), _arrivals(rng, 3.5), strict=False):
        doc = rng.choices(docs, weights)[0]
        rows.append(_row(t, doc + ids.take(rng.randint(1, 3)), rng, rng.randint(50, 400)))
    return rows


PATTERNS: dict[str, Callable[[int, random.Random], list[Row]]] = {
    "shared-system": shared_system,
    "unique": unique,
    "multiturn": multiturn,
    "popular-prefixes": popular_prefixes,
}


def load_pattern(name: str, requests: int = 1000, seed: int = 0) -> list[Row]:
    """The rows of pattern `name` (see the module docstring); the same for the same seed."""
    if name not in PATTERNS:
        raise ValueError(f"unknown pattern {name!r}; choose from {', '.join(PATTERNS)}")
    return PATTERNS[name](requests, random.Random(f"{name}:{seed}"))


def read_rows(path: Path, limit: int) -> list[Row]:
    with path.open() as f:
        return [json.loads(line) for _, line in zip(range(limit), f, strict=False)]


def write_rows(rows: list[Row], path: Path) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def lru_bound(rows: list[Row], tokens_per_id: int, block_size: int, capacity: int) -> float:
    """Hit rate of one shared LRU cache of `capacity` blocks over the whole replay, with
    prompts built as the replay clients build them (`clients/lru_bound.py`): what a router
    that pooled every worker's cache perfectly would approach."""
    return hit_rate_bound(rows, tokens_per_id, block_size, capacity)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("pattern", choices=list(PATTERNS))
    parser.add_argument("out", type=Path)
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rows = load_pattern(args.pattern, args.requests, args.seed)
    write_rows(rows, args.out)
    span = rows[-1]["timestamp"] / 1000
    mean_in = sum(r["input_length"] for r in rows) / len(rows)
    print(f"{args.out}: {len(rows)} requests over {span:.0f} s, mean input {mean_in:.0f} tokens")


if __name__ == "__main__":
    main()
