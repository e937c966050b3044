"""Frontend throughput: our frontend against the real NVIDIA Dynamo's, back to back.

    python benchmarks/frontend_load.py [--n 2000 --c 64 --m 16] [--chat] [--rounds 1]
        [--router-mode round-robin] [--http-workers 1,2] [--peer-venv .venv-peer | --no-peer]
        [--bench-dir benchmarks/clients] [--profile DIR]

Each system gets one mocker worker at a speedup that makes the engine negligible
(`--speedup 1000`) and its own frontend, in a fresh file-discovery directory; then the
closed-loop client `benchmarks/clients/load.py` runs C concurrent streams of M tokens,
N requests in all.
Prints req/s and p50/p99 latency of both and the ratio ours/peer. `--http-workers 1,2`
measures our frontend once per process count (`--num-http-workers`; the peer, one
multi-threaded process, runs once per round); frontend CPU counts all of its processes.
`--profile DIR` records py-spy profiles (collapsed stacks) of our frontend and mocker
during our run.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from _procs import (
    MODEL_NAME,
    BenchError,
    add_common_arguments,
    bench_dir,
    cpu_used,
    find_peer,
    profiled,
    run_client,
    start_stack,
    tiny_model_dir,
)


def measure(
    name: str,
    args: argparse.Namespace,
    bench: Path,
    model_dir: str,
    peer: Path | None,
    http_workers: int = 1,
) -> dict[str, Any]:
    stack, url = start_stack(
        name, model_dir, args.router_mode, peer=peer, bench=bench, workers=1, block_size=16,
        blocks=8192, speedup=args.speedup, http_workers=http_workers,
    )  # fmt: skip
    argv = [str(bench / "load.py"), url, MODEL_NAME]
    argv += ["--n", str(args.n), "--c", str(args.c), "--m", str(args.m)]
    argv += ["--chat"] if args.chat else []
    profile = Path(args.profile) if args.profile else None
    with stack, cpu_used(stack) as cpu, profiled(stack, profile):
        result = run_client(argv)
    for label in ("frontend", "mocker"):  # CPU per request holds up on a busy machine
        result[f"{label}_cpu_ms_per_req"] = 1000 * cpu[label] / args.n
    return result


HEADER = "system      req/s   p50 ms   p99 ms   chunks/s     ok errors  CPU ms/req: frontend mocker"


def row(name: str, r: dict[str, Any]) -> str:
    return (
        f"{name:<8} {r['req_per_s']:>8.1f} {r['lat_p50_ms']:>8.1f} {r['lat_p99_ms']:>8.1f} "
        f"{r['chunks_per_s']:>10.1f} {r['ok']:>6} {r['errors']:>6} "
        f"{r['frontend_cpu_ms_per_req']:>21.2f} {r['mocker_cpu_ms_per_req']:>6.2f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=2000, help="requests in all")
    parser.add_argument("--c", type=int, default=64, help="concurrent streams")
    parser.add_argument("--m", type=int, default=16, help="tokens per response")
    parser.add_argument("--chat", action="store_true", help="/v1/chat/completions")
    parser.add_argument("--router-mode", default="round-robin")
    parser.add_argument("--rounds", type=int, default=1, help="ours-then-peer repetitions")
    parser.add_argument(
        "--http-workers",
        default="1",
        help="our frontend's process counts to measure, comma separated (--num-http-workers)",
    )
    parser.add_argument("--no-peer", action="store_true", help="measure ours only")
    parser.add_argument("--profile", help="write py-spy profiles of our processes here")
    add_common_arguments(parser, speedup=1000.0)
    args = parser.parse_args()

    bench = bench_dir(args.bench_dir)
    model_dir = args.model_dir or tiny_model_dir()
    python = find_peer(args.peer_venv, wanted=not args.no_peer)
    endpoint = "chat/completions" if args.chat else "completions"
    counts = [int(n) for n in args.http_workers.split(",") if n.strip()]
    if not counts or min(counts) < 1:
        sys.exit(f"error: --http-workers {args.http_workers!r}: expected counts >= 1, like 1,2")
    print(
        f"frontend load: {args.n} requests, {args.c} streams, {args.m} tokens, /v1/{endpoint}, "
        f"1 mocker worker at speedup {args.speedup:g}, router {args.router_mode}"
    )
    results: list[dict[str, Any]] = []
    try:
        for i in range(args.rounds):
            tag = f"-{i}" if args.rounds > 1 else ""
            ours = {
                n: measure(f"ours{n}{tag}", args, bench, model_dir, None, http_workers=n)
                for n in counts
            }
            peer = measure(f"peer{tag}", args, bench, model_dir, python) if python else None
            results.append({"ours": {str(n): r for n, r in ours.items()}, "peer": peer})
            print(f"\nround {i + 1}\n{HEADER}")
            for n, r in ours.items():
                print(row(f"ours x{n}", r))
            if peer:
                print(row("peer", peer))
            for n, r in ours.items():
                line, base = f"ours x{n}:", ours[counts[0]]
                if n != counts[0]:
                    line += f" req/s x{n}/x{counts[0]} {r['req_per_s'] / base['req_per_s']:.2f}"
                if peer:
                    line += (
                        f" req/s ours/peer {r['req_per_s'] / peer['req_per_s']:.2f}, frontend "
                        "CPU per request ours/peer "
                        f"{r['frontend_cpu_ms_per_req'] / peer['frontend_cpu_ms_per_req']:.2f}"
                    )
                print(line)
    except BenchError as e:
        sys.exit(f"error: {e}")
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
