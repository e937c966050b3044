"""Dynamo's mocker timing polynomials: how long a simulated scheduler step takes.

prefill_ms(T) = 4.209989e-07·T² + 1.518344e-02·T + 16.50142 for T new (uncached) prompt tokens
in the step (0 when there are none); decode_ms(p) = -25.74·p² + 54.01·p + 5.74 at KV usage
fraction p, floored at 1 ms. A step costs its prefill time, plus one decode pass when it also
advanced decoding requests (`TimingModel.step_s`). Prefill time is divided by the speedup
ratio, decode time by speedup * decode speedup; a speedup of 0 means no delay at all.
"""

from __future__ import annotations

from dataclasses import dataclass

PREFILL_MS_COEFFS = (4.209989e-07, 1.518344e-02, 16.50142)  # T², T, 1
DECODE_MS_COEFFS = (-25.74, 54.01, 5.74)  # p², p, 1
DECODE_MS_FLOOR = 1.0


def prefill_ms(new_tokens: int) -> float:
    """Unscaled time (ms) to prefill `new_tokens` uncached tokens in one step."""
    if new_tokens <= 0:
        return 0.0
    a, b, c = PREFILL_MS_COEFFS
    return a * new_tokens * new_tokens + b * new_tokens + c


def decode_ms(kv_usage: float) -> float:
    """Unscaled time (ms) of one decode step at KV usage fraction `kv_usage` (0..1)."""
    p = min(max(kv_usage, 0.0), 1.0)
    a, b, c = DECODE_MS_COEFFS
    return max(a * p * p + b * p + c, DECODE_MS_FLOOR)


@dataclass(frozen=True, slots=True)
class TimingModel:
    """Step durations in seconds for given speedup ratios."""

    speedup_ratio: float = 1.0
    decode_speedup_ratio: float = 1.0

    def __post_init__(self) -> None:
        if self.speedup_ratio < 0 or self.decode_speedup_ratio <= 0:
            raise ValueError("speedup_ratio must be >= 0 and decode_speedup_ratio > 0")

    def prefill_s(self, new_tokens: int) -> float:
        if self.speedup_ratio == 0:
            return 0.0
        return prefill_ms(new_tokens) / self.speedup_ratio / 1000.0

    def decode_s(self, kv_usage: float) -> float:
        if self.speedup_ratio == 0:
            return 0.0
        return decode_ms(kv_usage) / (self.speedup_ratio * self.decode_speedup_ratio) / 1000.0

    def step_s(self, prefill_tokens: int, decoding: bool, kv_usage: float) -> float:
        """A step that prefilled `prefill_tokens` new tokens; `decoding`: it also advanced
        requests already past their prompt (second and later output tokens).

        Prefill time for the prompt chunks plus one decode pass only when the batch held
        decoding requests, as Dynamo's vLLM-style mocker measures: a lone prompt gets its first
        token after the prefill time alone, a prompt joining running decodes costs both.
        """
        duration = self.prefill_s(prefill_tokens)
        if decoding:
            duration += self.decode_s(kv_usage)
        return duration
