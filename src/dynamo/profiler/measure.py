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


def steady_state(
    times: list[list[float]], counts: list[list[int]] | None = None
) -> tuple[float, float]:
    """(mean ITL in s, output tokens/s) while every request of the batch was streaming.

    Requests reach the engine over HTTP a little apart; counting only the window from the
    last first token to the first last token measures the engine at the batch's full
    concurrency, as the simulator does. A window too short for two chunks per request falls
    back to each request's whole stream.

    `times` are arrival times of each stream's chunks. Over HTTP a chunk may carry several
    tokens (a busy worker or frontend sends what has piled up at once); `counts` gives, per
    stream, the tokens generated up to each chunk (the server's continuous usage), so a gap
    is divided by the tokens it really spanned. Without it (the simulator), each chunk is
    one token.
    """
    if counts is None:
        counts = [list(range(1, len(t) + 1)) for t in times]
    pairs = [(t, c) for t, c in zip(times, counts, strict=True) if len(t) > 1 and c[-1] > c[0]]
    if not pairs:
        raise DynamoError("no request of the decode point streamed two tokens")
    start = max(t[0] for t, _ in pairs)
    end = min(t[-1] for t, _ in pairs)
    inside = [[i for i, x in enumerate(t) if start <= x <= end] for t, _ in pairs]
    if end > start and all(
        len(ix) > 1 and c[ix[-1]] > c[ix[0]] for ix, (_, c) in zip(inside, pairs, strict=True)
    ):
        spans = [(ix[0], ix[-1]) for ix in inside]
        duration = end - start
    else:
        spans = [(0, len(t) - 1) for t, _ in pairs]
        duration = max(t[-1] for t, _ in pairs) - min(t[0] for t, _ in pairs)
    token_gaps = [c[j] - c[i] for (_, c), (i, j) in zip(pairs, spans, strict=True)]
    gaps = [(t[j] - t[i]) / n for (t, _), (i, j), n in zip(pairs, spans, token_gaps, strict=True)]
    return sum(gaps) / len(gaps), sum(token_gaps) / duration
