"""What the serving stack adds to a client's TTFT, which rapid mode adds to the engine's.

Rapid simulates the engine alone; a client (and `--mode thorough`) also waits for HTTP, the
frontend's preprocessing and routing, the request plane, the worker's handling of the prompt
and the SSE stream back. The model is a fixed cost per request plus a cost per prompt token
(the prompt's transfer, parsing and block hashing grow with it). The defaults were measured
by `benchmarks/profiler_overhead.py` on the development machine (2 shared cores, token-id
prompts): a graph whose mocker takes no time, TTFT at ISL 128-8192, a least-squares line.
They are a property of that machine and path, not of the engine: text prompts add
tokenization, and another machine has other costs; measure yours with the benchmark and
pass it with `--serving-overhead` (or `sweep.servingOverhead`), or `0` to predict the
engine alone. ITL gets nothing: while a batch streams, the stack forwards each token as the
engine emits it, so its cost overlaps decoding (rapid and thorough ITL agree within 7 %
without it, docs/benchmarks.md).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from dynamo.runtime.errors import ConfigError


@dataclass(frozen=True)
class ServingOverhead:
    fixed_ms: float  # per request
    per_1k_tokens_ms: float  # per 1000 prompt tokens

    def ttft_ms(self, isl: int) -> float:
        return self.fixed_ms + self.per_1k_tokens_ms * isl / 1000.0

    def __str__(self) -> str:
        return f"{self.fixed_ms:g} ms + {self.per_1k_tokens_ms:g} ms per 1000 prompt tokens"


# benchmarks/profiler_overhead.py on the development machine, the median of 4 runs at load
# average 1.6-5.3 (fixed 1.6-4.4 ms, per 1000 tokens 0.79-0.90 ms; docs/benchmarks.md)
MEASURED = ServingOverhead(fixed_ms=2.3, per_1k_tokens_ms=0.85)
NONE = ServingOverhead(0.0, 0.0)


def parse_overhead(text: object, where: str) -> ServingOverhead:
    """`FIXED_MS[,PER_1K_TOKENS_MS]` (e.g. `2.3,0.85`; `0` for none) as a `ServingOverhead`."""
    parts = [p.strip() for p in str(text).split(",")]
    try:
        values = [float(p) for p in parts]
    except ValueError:
        values = []
    if not 1 <= len(values) <= 2 or any(v < 0 or not math.isfinite(v) for v in values):
        raise ConfigError(
            f"{where}: expected FIXED_MS[,PER_1K_TOKENS_MS] with values >= 0 "
            f"(e.g. 2.3,0.85), got {text!r}"
        )
    return ServingOverhead(values[0], values[1] if len(values) == 2 else 0.0)
