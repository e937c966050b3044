"""Rapid vs thorough profiling of a mocker DGDR: the configurations they pick, rapid's
predicted TTFT/ITL against what thorough measures at the same points, and wall time.

    python benchmarks/profiler_modes.py [--dgdr examples/mocker/dgdr.yaml]
        [--max-gpus 2] [--prefill-granularity 4] [--decode-granularity 4]

Both modes run the real `python -m dynamo.profiler` on the same request (the DGDR with the
hardware/sweep settings overridden as given); thorough starts a `dynamo serve` graph per
candidate. Prints one row per sweep point (rapid, thorough, thorough/rapid) and the choices,
then the serving stack's own TTFT on this machine: the same graph with a mocker that takes no
time (`--speedup-ratio 0`), at the SLA's ISL, so TTFT = everything but the engine.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from dynamo.profiler.config import load_request
from dynamo.profiler.hardware import Engine
from dynamo.profiler.thorough import ThoroughMeasurer

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


def serving_overhead_ms(dgdr: Path) -> float:
    """TTFT through frontend + worker of a mocker that takes no time (speedup 0)."""
    request = load_request(dgdr, mode="thorough")
    measurer = ThoroughMeasurer(request)
    try:
        return measurer.prefill(Engine(1, 0.0, 1.0, 16384), request.sla.isl).ttft_ms
    finally:
        measurer.close()


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
        rapid, rapid_s = run(dgdr, Path(tmp) / "rapid", "rapid")
        thorough, thorough_s = run(dgdr, Path(tmp) / "thorough", "thorough")
        overhead = serving_overhead_ms(dgdr)

    print("| point | rapid | thorough | thorough/rapid |")
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
    for name, res, wall in (("rapid", rapid, rapid_s), ("thorough", thorough, thorough_s)):
        p, d = res["selected"]["prefill"], res["selected"]["decode"]
        print(
            f"{name}: prefill TP{p['gpus']} (TTFT {p['ttftMs']:.1f} ms), decode TP{d['gpus']} "
            f"at concurrency {d['concurrency']} (ITL {d['itlMs']:.1f} ms, "
            f"{d['throughputPerGpu']:.0f} tok/s/GPU); wall {wall:.0f} s"
        )
    print(f"serving overhead (speedup-0 mocker, ISL {rapid['sla']['isl']}): TTFT {overhead:.1f} ms")
    for r, t in zip(rapid["sweep"]["prefill"], thorough["sweep"]["prefill"], strict=True):
        engine_ms = t["ttft_ms"] - overhead
        print(
            f"prefill TP{r['gpus']}: thorough - overhead {engine_ms:.1f} ms vs rapid "
            f"{r['ttft_ms']:.1f} ms ({engine_ms / r['ttft_ms']:.2f})"
        )


if __name__ == "__main__":
    main()
