"""What a sweep measures, and the interface both ways of measuring it implement.

A prefill point is the TTFT of one request of `isl` tokens on an idle engine. A decode point
runs `concurrency` requests of `isl` prompt tokens and `osl` output tokens at once after a
warm-up pass that puts their prompts in the prefix cache (so the measured ITL is decoding,
not prefilling, as Dynamo's profiler does it): ITL is each request's mean gap between output
tokens, averaged; throughput is output tokens per second of the pass, per GPU.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Protocol

from dynamo.profiler.hardware import Engine

PROMPT_VOCAB = (10, 2000)  # token ids every tokenizer we serve has (the mocker's tiny model: 2048)


@dataclass(frozen=True)
class PrefillPoint:
    gpus: int
    isl: int
    ttft_ms: float

    @property
    def thpt_per_gpu(self) -> float:
        """Prompt tokens per second per GPU."""
        return self.isl / self.ttft_ms * 1000.0 / self.gpus


@dataclass(frozen=True)
class DecodePoint:
    gpus: int
    isl: int
    osl: int
    concurrency: int
    itl_ms: float
    thpt_per_gpu: float  # output tokens per second per GPU
    max_kv_tokens: int

    @property
    def context_length(self) -> float:
        """The mean context while decoding, as the planner looks it up."""
        return self.isl + self.osl / 2

    @property
    def kv_usage(self) -> float:
        return min(1.0, self.concurrency * self.context_length / self.max_kv_tokens)


class Measurer(Protocol):
    """Measures candidate engines: `rapid` simulates them, `thorough` runs them."""

    def prefill(self, engine: Engine, isl: int) -> PrefillPoint: ...

    def decode(self, engine: Engine, isl: int, osl: int, concurrency: int) -> DecodePoint: ...

    def close(self) -> None: ...


def prompts(count: int, isl: int, seed: int) -> list[list[int]]:
    """`count` distinct prompts of `isl` token ids (no shared first block)."""
    rng = random.Random(seed)
    low, high = PROMPT_VOCAB
    return [[rng.randrange(low, high) for _ in range(isl)] for _ in range(count)]


def mean_itl_s(times: list[list[float]]) -> float:
    """Mean over requests of (last token - first token) / gaps; requests of one token skipped."""
    gaps = [(t[-1] - t[0]) / (len(t) - 1) for t in times if len(t) > 1]
    if not gaps:
        raise ValueError("no request produced two tokens: cannot measure ITL")
    return sum(gaps) / len(gaps)
