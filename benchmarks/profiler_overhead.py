"""The serving stack's share of a client's TTFT, as rapid profiling adds it (`ServingOverhead`).

    python benchmarks/profiler_overhead.py [--isl 128 1024 3000 8192] [--rounds 3]

Runs the same graph `--mode thorough` deploys (`dynamo serve`: a frontend and one mocker
worker) with a mocker that takes no time (`--speedup-ratio 0`), and measures TTFT the way
thorough does (streamed completions of token-id prompts through the frontend, timed at the
client; each point the median of 5 requests after a warm-up). With no engine time, TTFT is
everything else: HTTP, the frontend's preprocessing, routing, the request plane, the worker's
handling of the prompt and the SSE stream back. Each ISL is measured `--rounds` times,
interleaved, and its median kept; a least-squares line through (ISL, TTFT) gives the model's
two parameters: a fixed cost per request and a cost per 1000 prompt tokens.

The defaults in `src/dynamo/profiler/overhead.py` are this benchmark's output on the
development machine (see docs/benchmarks.md); `--serving-overhead` overrides them.
"""

from __future__ import annotations

import argparse
import os
import statistics
from pathlib import Path

from dynamo.profiler.config import load_request
from dynamo.profiler.hardware import Engine
from dynamo.profiler.thorough import ThoroughMeasurer

REPO = Path(__file__).resolve().parents[1]
NO_TIME = Engine(1, 0.0, 1.0, 16384)  # speedup 0: every step takes no time


def fit(points: list[tuple[float, float]]) -> tuple[float, float]:
    """(intercept, slope) of the least-squares line through `points`."""
    xs, ys = [x for x, _ in points], [y for _, y in points]
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    sxx = sum((x - mx) ** 2 for x in xs)
    slope = sum((x - mx) * (y - my) for x, y in points) / sxx if sxx else 0.0
    return my - slope * mx, slope


def load() -> str:
    return "{:.1f}/{:.1f}/{:.1f}".format(*os.getloadavg())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dgdr", default=str(REPO / "examples" / "mocker" / "dgdr.yaml"))
    parser.add_argument("--isl", type=int, nargs="+", default=[128, 1024, 3000, 8192])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    request = load_request(args.dgdr, mode="thorough")
    measurer = ThoroughMeasurer(request)
    start_load = load()
    samples: dict[int, list[float]] = {isl: [] for isl in args.isl}
    try:
        for _ in range(args.rounds):
            for isl in args.isl:
                samples[isl].append(measurer.prefill(NO_TIME, isl).ttft_ms)
    finally:
        measurer.close()
    medians = {isl: statistics.median(v) for isl, v in samples.items()}
    fixed_ms, per_token_ms = fit([(float(isl), ms) for isl, ms in medians.items()])

    print("| ISL | stack TTFT (ms), median | rounds | model (ms) |")
    print("|---|---|---|---|")
    for isl, ms in medians.items():
        rounds = ", ".join(f"{x:.1f}" for x in samples[isl])
        print(f"| {isl} | {ms:.1f} | {rounds} | {fixed_ms + per_token_ms * isl:.1f} |")
    print(
        f"model: {fixed_ms:.2f} ms per request + {per_token_ms * 1000:.2f} ms per 1000 prompt "
        f"tokens (--serving-overhead {fixed_ms:.1f},{per_token_ms * 1000:.2f})"
    )
    print(f"load average (1/5/15 min) at the start and end: {start_load}, {load()}")


if __name__ == "__main__":
    main()
