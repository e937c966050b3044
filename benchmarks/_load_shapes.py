"""The varying-load traces the planner benchmarks replay (`planner.py` in simulated time,
`planner_serve.py` against `dynamo serve`): piecewise-linear request rates, as multiples of
a base rate, and their Poisson arrivals.

A shape is a tuple of phases `(seconds, multiplier at start, multiplier at end)`.
"""

from __future__ import annotations

import itertools
import math
import random

Phases = tuple[tuple[float, float, float], ...]  # (seconds, multiplier at start, at end)


def _sinusoid(period_s: float, cycles: int, low: float, high: float) -> Phases:
    """A sine between `low` and `high`, as 10 s linear pieces."""
    steps = int(period_s // 10)
    mid, amp = (high + low) / 2, (high - low) / 2
    values = [mid - amp * math.cos(2 * math.pi * i / steps) for i in range(steps * cycles + 1)]
    return tuple((10.0, a, b) for a, b in itertools.pairwise(values))


SHAPES: dict[str, Phases] = {
    # the trace: a ramp x1 -> x4 -> x1, then a x8 burst of 10 s
    "ramp+burst": (
        (60, 1, 1),
        (60, 1, 4),
        (120, 4, 4),
        (60, 4, 1),
        (60, 1, 1),
        (10, 8, 8),
        (60, 1, 1),
    ),
    "sinusoid": _sinusoid(120, 3, 1, 4),  # x1..x4, period 120 s, 3 cycles
    "step-down": ((30, 1, 1), (120, 4, 4), (180, 1, 1)),  # a level shift up, then down
    "bursts": ((60, 1, 1), (20, 6, 6), (60, 1, 1), (20, 6, 6), (60, 1, 1)),
    # the issue trace's burst alone, after a settled x1: a short check of the burst's onset
    "burst": ((40, 1, 1), (10, 8, 8), (30, 1, 1)),
}


def scaled(phases: Phases, time_scale: float) -> Phases:
    """The same shape with every phase `time_scale` times as long."""
    return tuple((length * time_scale, start, end) for length, start, end in phases)


def trace_s(phases: Phases) -> float:
    return sum(p[0] for p in phases)


def rate_at(t: float, base: float, phases: Phases) -> float:
    for length, start, end in phases:
        if t < length:
            return base * (start + (end - start) * t / length)
        t -= length
    return 0.0


def mean_rate(base: float, phases: Phases) -> float:
    return sum(p[0] * base * (p[1] + p[2]) / 2 for p in phases) / trace_s(phases)


def peak_rate(base: float, phases: Phases) -> float:
    return base * max(max(p[1], p[2]) for p in phases)


def arrivals(base: float, seed: int, phases: Phases) -> list[float]:
    """Poisson arrivals of the trace by thinning at the peak rate."""
    rng = random.Random(seed)
    total, peak = trace_s(phases), peak_rate(base, phases)
    t, out = 0.0, []
    while True:
        t += rng.expovariate(peak)
        if t >= total:
            return out
        if rng.random() < rate_at(t, base, phases) / peak:
            out.append(t)


def phase_label(phase: tuple[float, float, float]) -> str:
    _, start, end = phase
    if start == end:
        return f"x{start:g}"
    return f"x{start:.3g}->x{end:.3g}"


def misses_by_phase(
    arrived_s: list[float], missed: list[bool], phases: Phases
) -> list[tuple[str, int, int]]:
    """Per phase of the trace: its label, the requests that arrived in it and how many of
    them missed the SLA (to tell a burst's onset from a ramp's). Adjacent phases that rise
    (or fall) together count as one, so a sinusoid reads as its rises and falls."""
    bounds = list(itertools.accumulate(p[0] for p in phases))
    rows = [[0, 0] for _ in phases]
    for t, miss in zip(arrived_s, missed, strict=True):
        i = next((k for k, b in enumerate(bounds) if t < b), len(bounds) - 1)
        rows[i][0] += 1
        rows[i][1] += int(miss)
    merged: list[tuple[float, float, int, int]] = []  # start, end, arrived, missed
    for (_, start, end), (n, m) in zip(phases, rows, strict=True):
        if merged:
            a, b, n0, m0 = merged[-1]
            if start == b and (end - start) * (b - a) > 0:  # the same direction goes on
                merged[-1] = (a, end, n0 + n, m0 + m)
                continue
        merged.append((start, end, n, m))
    return [(phase_label((0.0, a, b)), n, m) for a, b, n, m in merged]


def format_misses(rows: list[tuple[str, int, int]]) -> str:
    """`x1 0/180, x1->x4 31/450, ...`: missed / arrived per phase."""
    return ", ".join(f"{label} {m}/{n}" for label, n, m in rows)
