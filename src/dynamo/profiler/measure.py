"""What a sweep measures, and the interface both ways of measuring it implement.

A prefill point is the TTFT of one request of `isl` tokens on an idle engine. A decode point
runs `concurrency` requests of `isl` prompt tokens and `osl` output tokens at once after a
warm-up pass that puts their prompts in the prefix cache (so the measured ITL is decoding,
not prefilling, as Dynamo's profiler does it): ITL is each request's mean gap between output
tokens while all of them stream, averaged; throughput is output tokens per second of that
window, per GPU (`steady_state`).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Protocol

from dynamo.profiler.hardware import Engine
from dynamo.runtime.errors import DynamoError

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

    @classmethod
    def measured(
        cls,
        engine: Engine,
        isl: int,
        osl: int,
        concurrency: int,
        *,
        itl_s: float,
        tokens_per_s: float,
    ) -> DecodePoint:
        """A point from a steady-state measurement of `engine` (either mode)."""
        return cls(
            gpus=engine.gpus,
            isl=isl,
            osl=osl,
            concurrency=concurrency,
            itl_ms=itl_s * 1000.0,
            thpt_per_gpu=tokens_per_s / engine.gpus,
            max_kv_tokens=engine.max_kv_tokens,
        )

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


def steady_state(times: list[list[float]], tokens: list[int] | None = None) -> tuple[float, float]:
    """(mean ITL in s, output tokens/s) while every request of the batch was streaming.

    Requests reach the engine over HTTP a little apart; counting only the window from the
    last first token to the first last token measures the engine at the batch's full
    concurrency, as the simulator does. A window too short for two tokens per request falls
    back to each request's whole stream.

    `times` are arrival times of each stream's chunks. Over HTTP a chunk may carry several
    tokens (a busy worker or frontend sends what has piled up at once); `tokens`, each
    stream's output token count, corrects for that: a stream's gaps are counted as
    (tokens - 1) / (chunks - 1) token gaps each, as if the extra tokens were spread evenly.
    Without it (the simulator), each time is one token.
    """
    counts = tokens if tokens is not None else [len(t) for t in times]
    pairs = [(t, n) for t, n in zip(times, counts, strict=True) if len(t) > 1]
    if not pairs:
        raise DynamoError("no request of the decode point streamed two tokens")
    streams = [t for t, _ in pairs]
    per_gap = [max(1.0, (n - 1) / (len(t) - 1)) for t, n in pairs]  # tokens per chunk gap
    start, end = max(t[0] for t in streams), min(t[-1] for t in streams)
    inside = [[x for x in t if start <= x <= end] for t in streams]
    if end > start and all(len(t) > 1 for t in inside):
        streams, duration = inside, end - start
    else:
        duration = max(t[-1] for t in streams) - min(t[0] for t in streams)
    token_gaps = [(len(t) - 1) * k for t, k in zip(streams, per_gap, strict=True)]
    gaps = [(t[-1] - t[0]) / n for t, n in zip(streams, token_gaps, strict=True)]
    return sum(gaps) / len(gaps), sum(token_gaps) / duration
