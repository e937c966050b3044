"""Pick the engines: the highest throughput per GPU at the SLA.

Decode: each candidate's throughput per GPU is taken *at the SLA*, the concurrency where its
ITL curve reaches the ITL target, found by linear interpolation (ITL and throughput per GPU
linear in concurrency) between the last swept point within the target and the first one
over it, rounded down to a whole number of streams (so the point still meets the target).
The measured points before that crossing count too; the candidate's value is the best of
them. A point a hair over the line thus costs the candidate a few streams' worth of
throughput, not a whole sweep step. Where ITL first exceeds the target is where the
candidate's range ends: a later point back under the target (noise) does not extend it. A
curve that never reaches the target is taken at its last (highest) concurrency, no further:
the sweep ends where the KV cache or the engine's sequence limit does. A curve over the
target from its first point does not meet the SLA.

Prefill: one TTFT per candidate at the SLA's ISL (there is no load axis to interpolate);
the candidates within the TTFT target compete on ISL / TTFT per GPU.

Ties: candidates within `TIE_TOLERANCE` of the best value are equal (closer than two
measurements of one candidate agree), and the one with the fewest GPUs wins (a finer unit
to scale by), then the higher value. When no candidate meets the SLA, the selection is the
fastest measured point (lowest TTFT / ITL) and `meets_sla` is False, with the best
achievable latency in the message.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import TypeVar

from dynamo.profiler.config import Sla
from dynamo.profiler.measure import DecodePoint, PrefillPoint

TIE_TOLERANCE = 0.05  # relative throughput per GPU within which two candidates are a tie

P = TypeVar("P", PrefillPoint, DecodePoint)


@dataclass(frozen=True)
class Selection:
    prefill: PrefillPoint
    decode: DecodePoint  # at the SLA (interpolated) when it meets it; else the fastest point
    prefill_meets: bool
    decode_meets: bool
    decode_at_sla: tuple[DecodePoint, ...] = ()  # each candidate's value at the SLA

    @property
    def meets_sla(self) -> bool:
        return self.prefill_meets and self.decode_meets

    def shortfall(self, sla: Sla) -> str:
        """One line on what no candidate reaches (empty when the SLA is met)."""
        parts = []
        if not self.prefill_meets:
            parts.append(
                f"TTFT target {sla.ttft_ms:g} ms: best achievable {self.prefill.ttft_ms:.1f} ms "
                f"(TP{self.prefill.gpus})"
            )
        if not self.decode_meets:
            parts.append(
                f"ITL target {sla.itl_ms:g} ms: best achievable {self.decode.itl_ms:.1f} ms "
                f"(TP{self.decode.gpus}, concurrency {self.decode.concurrency})"
            )
        return "; ".join(parts)


def interpolate(lo: DecodePoint, hi: DecodePoint, concurrency: int) -> DecodePoint:
    """The point at `concurrency` on the line from `lo` to `hi` (ITL and throughput)."""
    f = (concurrency - lo.concurrency) / (hi.concurrency - lo.concurrency)
    return replace(
        lo,
        concurrency=concurrency,
        itl_ms=lo.itl_ms + f * (hi.itl_ms - lo.itl_ms),
        thpt_per_gpu=lo.thpt_per_gpu + f * (hi.thpt_per_gpu - lo.thpt_per_gpu),
    )


def decode_at_sla(points: Sequence[DecodePoint], itl_ms: float) -> DecodePoint | None:
    """One candidate's best point within `itl_ms` along its ITL curve (module docstring);
    None when even its first point is over the target."""
    curve = sorted(points, key=lambda d: d.concurrency)
    if not curve or curve[0].itl_ms > itl_ms:
        return None
    within = [curve[0]]
    for lo, hi in itertools.pairwise(curve):
        if hi.itl_ms <= itl_ms:
            within.append(hi)
            continue
        # lo.itl_ms <= itl_ms < hi.itl_ms: the crossing lies in [lo, hi)
        crossing = lo.concurrency + (itl_ms - lo.itl_ms) / (hi.itl_ms - lo.itl_ms) * (
            hi.concurrency - lo.concurrency
        )
        streams = math.floor(crossing)
        if streams > lo.concurrency:
            within.append(interpolate(lo, hi, streams))
        break
    return max(within, key=lambda d: (d.thpt_per_gpu, -d.concurrency))


def pick(candidates: Sequence[P], value: Callable[[P], float]) -> P:
    """The candidate with the highest `value`, candidates within `TIE_TOLERANCE` of it
    counting as equal: of those, the fewest GPUs, then the highest value."""
    best = max(value(c) for c in candidates)
    near = [c for c in candidates if value(c) >= best * (1.0 - TIE_TOLERANCE)]
    return min(near, key=lambda c: (c.gpus, -value(c)))


def select(prefill: list[PrefillPoint], decode: list[DecodePoint], sla: Sla) -> Selection:
    if not prefill or not decode:
        raise ValueError("nothing was measured")
    p_ok = [p for p in prefill if p.ttft_ms <= sla.ttft_ms]
    best_p = pick(p_ok, lambda p: p.thpt_per_gpu) if p_ok else min(prefill, key=lambda p: p.ttft_ms)
    at_sla = []
    for tp in sorted({d.gpus for d in decode}):
        point = decode_at_sla([d for d in decode if d.gpus == tp], sla.itl_ms)
        if point is not None:
            at_sla.append(point)
    best_d = (
        pick(at_sla, lambda d: d.thpt_per_gpu) if at_sla else min(decode, key=lambda d: d.itl_ms)
    )
    return Selection(best_p, best_d, bool(p_ok), bool(at_sla), tuple(at_sla))
