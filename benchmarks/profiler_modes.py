"""Rapid vs thorough profiling of a mocker DGDR: the configurations they pick, rapid's
predicted TTFT/ITL against what thorough measures at the same points, and wall time.

    python benchmarks/profiler_modes.py [--dgdr examples/mocker/dgdr.yaml]
        [--max-gpus 2] [--prefill-granularity 4] [--decode-granularity 4]

Both modes run the real `python -m dynamo.profiler` on the same request (the DGDR with the
hardware/sweep settings overridden as given); thorough starts a `dynamo serve` graph per
candidate. Rapid's TTFT is the engine's plus its serving-stack model (`overhead.py`, the
profiler's default). Prints one row per sweep point (rapid, thorough, thorough/rapid), each
TP degree's decode value at the ITL target as both modes found it (what the decode pick
compares), and the picks.

Then where thorough's TTFT goes, measured on this machine around the thorough run:
- the mocker engine alone: each candidate's `MockerEngine` in this process, no HTTP, lone
  requests at the SLA's ISL (how far the wall-clock engine is from its own timing model);
- the serving stack alone: the same graph with a mocker that takes no time
  (`--speedup-ratio 0`), at the SLA's ISL, so TTFT = everything but the engine; measured
  before and after the thorough run (it moves with the machine's load), against what rapid's
  stack model says for that ISL.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from dynamo.engines.mocker.engine import MockerEngine
from dynamo.profiler.config import load_request
from dynamo.profiler.hardware import Engine, engine
from dynamo.profiler.measure import prompts
from dynamo.profiler.thorough import ThoroughMeasurer
from dynamo.runtime.transport.base import RequestContext
from dynamo.testing.engine_sink import RecordingEngineSink

REPO = Path(__file__).resolve().parents[1]


def run(dgdr: Path, out: Path, mode: str) -> tuple[dict, float]:
    started = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "dynamo.profiler", "-f", str(dgdr), "-o", str(out), "--mode", mode],
        capture_output=True,
        text=True,
        check=False,
    )
    wall = time.monotonic() - started
    if proc.returncode != 0:
        sys.exit(f"{mode} failed ({proc.returncode}): {proc.stderr.strip().splitlines()[-1]}")
    return json.loads((out / "profiling_results.json").read_text()), wall


def serving_overhead_ms(dgdr: Path, rounds: int = 3) -> float:
    """TTFT through frontend + worker of a mocker that takes no time (speedup 0): the median
    of `rounds` prefill points (each the median of 5 requests after a warm-up)."""
    request = load_request(dgdr, mode="thorough")
    measurer = ThoroughMeasurer(request)
    zero = Engine(1, 0.0, 1.0, 16384)
    try:
        return statistics.median(
            measurer.prefill(zero, request.sla.isl).ttft_ms for _ in range(rounds)
        )
    finally:
        measurer.close()


def engine_alone_ms(gpu_type: str, tp: int, isl: int, repeats: int = 15) -> float:
    """Median TTFT of lone `isl`-token requests to the TP candidate's `MockerEngine` run in
    this process (no HTTP, no worker): the wall-clock engine against its timing model."""

    async def run() -> float:
        eng = MockerEngine(engine(gpu_type, tp).mocker_config(), 2048)
        await eng.start(RecordingEngineSink())
        ttfts = []
        try:
            for i, prompt in enumerate(prompts(repeats + 1, isl, seed=tp * 7 + isl)):
                req = {
                    "request_id": f"alone-{i}",
                    "token_ids": prompt,
                    "stop_conditions": {"max_tokens": 1, "min_tokens": 1, "ignore_eos": True},
                }
                start = time.perf_counter()
                async for _ in eng.generate(req, RequestContext(req["request_id"])):  # type: ignore[arg-type]
                    ttfts.append(time.perf_counter() - start)
                    break
                await asyncio.sleep(0.02)
        finally:
            await eng.shutdown()
        return statistics.median(ttfts[1:]) * 1000.0  # the first one warms up

    return asyncio.run(run())


def load() -> str:
    return "{:.1f}/{:.1f}/{:.1f}".format(*os.getloadavg())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dgdr", default=str(REPO / "examples" / "mocker" / "dgdr.yaml"))
    parser.add_argument("--max-gpus", type=int, default=2)
    parser.add_argument("--prefill-granularity", type=int, default=4)
    parser.add_argument("--decode-granularity", type=int, default=4)
    args = parser.parse_args()

    doc = yaml.safe_load(Path(args.dgdr).read_text())
    config = doc["spec"]["profilingConfig"]["config"]
    config.setdefault("hardware", {})["maxNumGpusPerEngine"] = args.max_gpus
    config["sweep"] = {
        "prefillInterpolationGranularity": args.prefill_granularity,
        "decodeInterpolationGranularity": args.decode_granularity,
    }
    with tempfile.TemporaryDirectory() as tmp:
        dgdr = Path(tmp) / "dgdr.yaml"
        dgdr.write_text(yaml.safe_dump(doc))
        loads = [load()]
        rapid, rapid_s = run(dgdr, Path(tmp) / "rapid", "rapid")
        overhead_before = serving_overhead_ms(dgdr)
        loads.append(load())
        thorough, thorough_s = run(dgdr, Path(tmp) / "thorough", "thorough")
        loads.append(load())
        overhead_after = serving_overhead_ms(dgdr)
        gpu_type = config["hardware"].get("gpuType", "h100_sxm")
        alone = {
            p["gpus"]: engine_alone_ms(gpu_type, p["gpus"], p["isl"])
            for p in rapid["sweep"]["prefill"]
        }
        loads.append(load())
    model = rapid["servingOverhead"]
    stack_model_ms = model["fixedMs"] + model["per1kTokensMs"] * rapid["sla"]["isl"] / 1000

    print("| point | rapid (predicted) | thorough | thorough/rapid |")
    print("|---|---|---|---|")
    for r, t in zip(rapid["sweep"]["prefill"], thorough["sweep"]["prefill"], strict=True):
        ratio = t["ttft_ms"] / r["ttft_ms"]
        print(
            f"| prefill TP{r['gpus']} TTFT (ms) | {r['ttft_ms']:.1f} | {t['ttft_ms']:.1f} "
            f"| {ratio:.2f} |"
        )
    for r, t in zip(rapid["sweep"]["decode"], thorough["sweep"]["decode"], strict=True):
        ratio = t["itl_ms"] / r["itl_ms"]
        print(
            f"| decode TP{r['gpus']} x{r['concurrency']} ITL (ms) | {r['itl_ms']:.1f} "
            f"| {t['itl_ms']:.1f} | {ratio:.2f} |"
        )
    print()
    print("| decode at the ITL target | rapid | thorough | thorough/rapid (tok/s/GPU) |")
    print("|---|---|---|---|")
    at_r = {d["gpus"]: d for d in rapid["sweep"]["decodeAtSla"]}
    at_t = {d["gpus"]: d for d in thorough["sweep"]["decodeAtSla"]}
    for tp in sorted(at_r.keys() | at_t.keys()):
        r, t = at_r.get(tp), at_t.get(tp)
        ratio = f"{t['thpt_per_gpu'] / r['thpt_per_gpu']:.2f}" if r and t else "-"
        print(f"| TP{tp} | {_at_sla(r)} | {_at_sla(t)} | {ratio} |")
    print()
    for name, res, wall in (("rapid", rapid, rapid_s), ("thorough", thorough, thorough_s)):
        p, d = res["selected"]["prefill"], res["selected"]["decode"]
        print(
            f"{name}: prefill TP{p['gpus']} (TTFT {p['ttftMs']:.1f} ms), decode TP{d['gpus']} "
            f"at concurrency {d['concurrency']} (ITL {d['itlMs']:.1f} ms, "
            f"{d['throughputPerGpu']:.0f} tok/s/GPU); wall {wall:.0f} s"
        )
    picks = [
        (res["selected"]["prefill"]["gpus"], res["selected"]["decode"]["gpus"])
        for res in (rapid, thorough)
    ]
    print(f"picks agree: {picks[0] == picks[1]} (prefill TP, decode TP: {picks[0]}, {picks[1]})")
    print(f"load average (1/5/15 min) before rapid, before/after thorough, at the end: {loads}")
    print()
    print(
        f"serving stack TTFT at ISL {rapid['sla']['isl']}: rapid's model {stack_model_ms:.1f} ms "
        f"({model['fixedMs']:g} + {model['per1kTokensMs']:g} per 1000 tokens); measured "
        f"(speedup-0 mocker) {overhead_before:.1f} ms before thorough, {overhead_after:.1f} ms "
        "after"
    )
    print("| prefill | engine (simulated) | engine alone (wall clock) | rapid | thorough |")
    print("|---|---|---|---|---|")
    for r, t in zip(rapid["sweep"]["prefill"], thorough["sweep"]["prefill"], strict=True):
        print(
            f"| TP{r['gpus']} TTFT (ms) | {r['ttft_ms'] - stack_model_ms:.1f} "
            f"| {alone[r['gpus']]:.1f} | {r['ttft_ms']:.1f} | {t['ttft_ms']:.1f} |"
        )


def _at_sla(point: dict | None) -> str:
    if point is None:
        return "misses the target"
    return (
        f"x{point['concurrency']}: ITL {point['itl_ms']:.1f} ms, "
        f"{point['thpt_per_gpu']:.0f} tok/s/GPU"
    )


if __name__ == "__main__":
    main()
