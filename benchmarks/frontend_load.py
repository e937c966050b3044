"""Frontend throughput: our frontend against the real NVIDIA Dynamo's, back to back.

    python benchmarks/frontend_load.py [--n 2000 --c 64 --m 16] [--chat] [--rounds 1]
        [--router-mode round-robin] [--peer-venv /work/peer-venv | --no-peer]
        [--bench-dir ../shared/bench] [--profile DIR]

Each system gets one mocker worker at a speedup that makes the engine negligible
(`--speedup 1000`) and its own frontend, in a fresh file-discovery directory; then the shared
closed-loop client `load.py` runs C concurrent streams of M tokens, N requests in all.
Prints req/s and p50/p99 latency of both and the ratio ours/peer. `--profile DIR` records
py-spy profiles (collapsed stacks) of our frontend and mocker during our run.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from _procs import (
    DEFAULT_PEER_VENV,
    MODEL_NAME,
    BenchError,
    Stack,
    bench_dir,
    free_port,
    our_stack,
    peer_python,
    peer_stack,
    profiled,
    run_client,
    tiny_model_dir,
)


def measure(stack: Stack, url: str, args: argparse.Namespace, bench: Path) -> dict[str, Any]:
    stack.wait_ready(url)
    argv = [str(bench / "load.py"), url, MODEL_NAME]
    argv += ["--n", str(args.n), "--c", str(args.c), "--m", str(args.m)]
    argv += ["--chat"] if args.chat else []
    cpu0 = {label: stack.cpu_s(label) for label in ("frontend", "mocker")}
    with profiled(stack, Path(args.profile) if args.profile else None):
        result = run_client(argv)
    stack.check_alive()
    for label in ("frontend", "mocker"):  # CPU per request holds up on a busy machine
        result[f"{label}_cpu_ms_per_req"] = 1000 * (stack.cpu_s(label) - cpu0[label]) / args.n
    return result


def run_ours(args: argparse.Namespace, bench: Path, model_dir: str, tag: str) -> dict[str, Any]:
    port = free_port()
    with our_stack(
        f"ours{tag}", model_dir, port, args.router_mode, workers=1, block_size=16,
        blocks=8192, speedup=args.speedup,
    ) as stack:  # fmt: skip
        return measure(stack, f"http://127.0.0.1:{port}", args, bench)


def run_peer(
    args: argparse.Namespace, bench: Path, python: Path, model_dir: str, tag: str
) -> dict[str, Any]:
    port = free_port()
    with peer_stack(
        f"peer{tag}", python, bench, model_dir, port, args.router_mode, workers=1,
        block_size=16, blocks=8192, speedup=args.speedup,
    ) as stack:  # fmt: skip
        return measure(stack, f"http://127.0.0.1:{port}", args, bench)


HEADER = "system    req/s   p50 ms   p99 ms   chunks/s     ok errors  CPU ms/req: frontend mocker"


def row(name: str, r: dict[str, Any]) -> str:
    return (
        f"{name:<6} {r['req_per_s']:>8.1f} {r['lat_p50_ms']:>8.1f} {r['lat_p99_ms']:>8.1f} "
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
    parser.add_argument("--speedup", type=float, default=1000.0, help="mocker speedup ratio")
    parser.add_argument("--rounds", type=int, default=1, help="ours-then-peer repetitions")
    parser.add_argument("--bench-dir", help="shared clients (default ../shared/bench)")
    parser.add_argument("--peer-venv", type=Path, default=DEFAULT_PEER_VENV)
    parser.add_argument("--no-peer", action="store_true", help="measure ours only")
    parser.add_argument("--model-dir", help="model directory (default: dynamo:tinymodel)")
    parser.add_argument("--profile", help="write py-spy profiles of our processes here")
    parser.add_argument("--json-out", help="write every result here")
    args = parser.parse_args()

    bench = bench_dir(args.bench_dir)
    model_dir = args.model_dir or tiny_model_dir()
    python = None if args.no_peer else peer_python(args.peer_venv)
    if python is None and not args.no_peer:
        print(f"note: no real Dynamo in {args.peer_venv} (see setup_peer.sh): peer skipped")
    endpoint = "chat/completions" if args.chat else "completions"
    print(
        f"frontend load: {args.n} requests, {args.c} streams, {args.m} tokens, /v1/{endpoint}, "
        f"1 mocker worker at speedup {args.speedup:g}, router {args.router_mode}"
    )
    results: list[dict[str, Any]] = []
    try:
        for i in range(args.rounds):
            tag = f"-{i}" if args.rounds > 1 else ""
            ours = run_ours(args, bench, model_dir, tag)
            peer = run_peer(args, bench, python, model_dir, tag) if python else None
            results.append({"ours": ours, "peer": peer})
            print(f"\nround {i + 1}\n{HEADER}")
            print(row("ours", ours))
            if peer:
                print(row("peer", peer))
                print(
                    f"ratio ours/peer: req/s {ours['req_per_s'] / peer['req_per_s']:.2f}, "
                    "frontend CPU per request "
                    f"{ours['frontend_cpu_ms_per_req'] / peer['frontend_cpu_ms_per_req']:.2f}"
                )
    except BenchError as e:
        sys.exit(f"error: {e}")
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
