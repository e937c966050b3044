"""Routing quality: prefix-cache hit rate and TTFT of a Mooncake trace replay, kv vs round-robin.

    python benchmarks/routing_quality.py [--time-scales 0.1 0.05] [--modes kv round-robin]
        [--peer] [--limit 1000 --block 64 --max-output 32] [--bench-dir ../shared/bench]
        [--router-env NAME=VALUE ...]

For each time scale and router mode: four mocker workers (8,192 blocks of 16 tokens each,
speedup 1) and a frontend in that mode, in a fresh file-discovery directory; the shared
`replay.py` streams the first LIMIT requests of the conversation trace on their (scaled)
timestamps and reports the `cached_tokens` hit rate and TTFT. `--peer` does the same against
the real NVIDIA Dynamo. `lru_bound.py` gives the hit rate of one shared LRU cache of the same
total size, the bound a perfect router approaches. `--router-env` sets environment variables
for the servers of every run (router settings: ours reads `DYN_KV_OVERLAP_SCORE_WEIGHT` and
`DYN_ROUTER_KV_OVERLAP_SCORE_CREDIT`, Dynamo 1.6.1 `DYN_ROUTER_PREFILL_LOAD_SCALE` and the same
credit variable); the results carry them as `router_env`.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from _procs import (
    MODEL_NAME,
    BenchError,
    Stack,
    add_common_arguments,
    bench_dir,
    cpu_used,
    find_peer,
    profiled,
    run_client,
    start_stack,
    tiny_model_dir,
)


def pct(xs: list[float], p: float) -> float | None:
    """Nearest-rank percentile, the same rule as replay.py's."""
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(p / 100 * len(xs)))] if xs else None


def check_vocab(tokenizer_json: Path) -> None:
    """replay.py builds prompts from single-token words starting with the byte-level space."""
    vocab = json.loads(tokenizer_json.read_text())["model"]["vocab"]
    words = [w for w in vocab if w.startswith("\u0120") and w[1:].isalpha() and len(w) > 2]
    if len(words) < 256:
        raise BenchError(
            f"{tokenizer_json} has only {len(words)} whole-word tokens; make a model directory "
            "with mk_tinymodel.py DIR and pass --model-dir DIR"
        )


def replay(stack: Stack, url: str, args: argparse.Namespace, scale: float) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "replay.json"
        argv = [str(args.bench / "replay.py"), url, MODEL_NAME, str(args.trace)]
        argv += ["--vocab", str(Path(args.model_dir) / "tokenizer.json")]
        argv += ["--limit", str(args.limit), "--block", str(args.block)]
        argv += ["--max-output", str(args.max_output), "--time-scale", f"{scale:g}"]
        argv += ["--out", str(out)]
        with cpu_used(stack) as used, profiled(stack, args.profile):
            summary = run_client(argv)
        cpu = {f"{k}_cpu_s": v for k, v in used.items()}
        requests = json.loads(out.read_text())["requests"]
    ttft = [r["ttft"] for r in requests if not r["error"] and r["ttft"] is not None]
    return {
        "hit_rate": summary["hit_rate"],
        "ttft_p50": pct(ttft, 50),
        "ttft_p90": pct(ttft, 90),
        "ttft_p99": pct(ttft, 99),
        "ttft_mean": statistics.mean(ttft) if ttft else None,
        "itl_mean": summary["itl_mean"],
        "requests": summary["requests"],
        "errors": summary["errors"],
        "first_errors": summary["first_errors"],
        "wall_s": summary["wall_s"],
        **cpu,
    }


@contextlib.contextmanager
def environment(settings: dict[str, str]) -> Iterator[None]:
    """`settings` in os.environ while the block runs (a Stack copies it when created)."""
    saved = {name: os.environ.get(name) for name in settings}
    os.environ.update(settings)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def run_one(args: argparse.Namespace, system: str, mode: str, scale: float) -> dict[str, Any]:
    shape = {"workers": args.workers, "block_size": args.block_size, "blocks": args.blocks}
    name = f"{system}-{mode}-{scale:g}"
    peer = args.peer_python if system == "peer" else None
    with environment(args.router_env):
        stack, url = start_stack(
            name, args.model_dir, mode, peer=peer, bench=args.bench, speedup=args.speedup,
            **shape,
        )  # fmt: skip
    with stack:
        result = replay(stack, url, args, scale)
    print(f"  {name}: {json.dumps(result)}", flush=True)
    return {
        "system": system, "mode": mode, "time_scale": scale, "router_env": args.router_env,
        **result,
    }  # fmt: skip


def env_setting(text: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, got {text!r}")
    return name, value


def lru_bound(args: argparse.Namespace) -> float:
    capacity = args.workers * args.blocks
    argv = [str(args.bench / "lru_bound.py"), str(args.trace), str(args.limit)]
    argv += [str(args.block), str(args.block_size), str(capacity)]
    return float(run_client(argv)["hit_rate_bound"])


def ms(x: float | None) -> str:
    return f"{1000 * x:8.0f}" if x is not None else "       -"


def table(results: list[dict[str, Any]], bound: float) -> str:
    lines = [
        "system  mode         scale  hit rate  TTFT p50  TTFT p99 TTFT mean (ms)  errors"
        "  CPU s: frontend mocker",
    ]
    for r in results:
        lines.append(
            f"{r['system']:<7} {r['mode']:<12} {r['time_scale']:>5g}  {r['hit_rate'] or 0:8.3f}"
            f"  {ms(r['ttft_p50'])}  {ms(r['ttft_p99'])}  {ms(r['ttft_mean'])}"
            f"       {r['errors']:>5}"
            f"  {r.get('frontend_cpu_s', 0):>15.1f} {r.get('mocker_cpu_s', 0):>6.1f}"
        )
    lines.append(f"single shared LRU cache bound: {bound:.3f}")
    groups: dict[tuple[str, str, float], list[dict[str, Any]]] = {}
    for r in results:
        groups.setdefault((r["system"], r["mode"], r["time_scale"]), []).append(r)

    def mean(key: tuple[str, str, float], field: str) -> float:
        return statistics.mean(r[field] or 0.0 for r in groups[key])

    for system, mode, scale in groups:
        rr = (system, "round-robin", scale)
        if mode != "kv" or rr not in groups or not mean(rr, "hit_rate"):
            continue
        kv = (system, mode, scale)
        ratios = ", ".join(
            f"{label} x{mean(kv, field) / mean(rr, field):.2f}"
            for label, field in (
                ("hit rate", "hit_rate"),
                ("TTFT p50", "ttft_p50"),
                ("p99", "ttft_p99"),
                ("mean", "ttft_mean"),
            )
        )
        runs = f" (means of {len(groups[kv])} runs)" if len(groups[kv]) > 1 else ""
        lines.append(f"{system} kv/round-robin at scale {scale:g}{runs}: {ratios}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--time-scales", type=float, nargs="+", default=[0.1, 0.05])
    parser.add_argument("--modes", nargs="+", default=["kv", "round-robin"])
    parser.add_argument("--repeat", type=int, default=1, help="runs of every configuration")
    parser.add_argument("--limit", type=int, default=1000, help="trace requests replayed")
    parser.add_argument("--block", type=int, default=64, help="prompt tokens per trace hash id")
    parser.add_argument("--max-output", type=int, default=32)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--blocks", type=int, default=8192, help="KV blocks per worker")
    parser.add_argument("--block-size", type=int, default=16, help="tokens per KV block")
    parser.add_argument("--trace", type=Path, help="default: ../traces/ beside the clients")
    parser.add_argument("--peer", action="store_true", help="also measure the real Dynamo")
    parser.add_argument("--no-ours", action="store_true", help="measure the peer only")
    parser.add_argument("--profile", type=Path, help="write py-spy profiles of the servers here")
    add_common_arguments(parser, speedup=1.0)
    parser.add_argument(
        "--router-env", type=env_setting, nargs="+", default=[], metavar="NAME=VALUE",
        help="environment of every server, e.g. DYN_ROUTER_KV_OVERLAP_SCORE_CREDIT=2",
    )  # fmt: skip
    args = parser.parse_args()
    args.router_env = dict(args.router_env)

    try:
        args.bench = bench_dir(args.bench_dir)
        args.trace = args.trace or args.bench.parent / "traces/mooncake_conversation_trace.jsonl"
        args.model_dir = args.model_dir or tiny_model_dir()
        check_vocab(Path(args.model_dir) / "tokenizer.json")
        systems = [] if args.no_ours else ["ours"]
        args.peer_python = find_peer(args.peer_venv, wanted=args.peer)
        if args.peer_python is not None:
            systems.append("peer")
        bound = lru_bound(args)
        print(
            f"routing quality: first {args.limit} requests of {args.trace.name}, "
            f"{args.block} tokens a hash id, max output {args.max_output}; "
            f"{args.workers} mocker workers x {args.blocks} blocks of {args.block_size} tokens, "
            f"speedup {args.speedup:g}" + "".join(f"; {k}={v}" for k, v in args.router_env.items()),
            flush=True,
        )
        results = [
            run_one(args, system, mode, scale)
            for scale in args.time_scales
            for _ in range(args.repeat)
            for system in systems
            for mode in args.modes
        ]
    except BenchError as e:
        sys.exit(f"error: {e}")
    print(table(results, bound))
    if args.json_out:
        Path(args.json_out).write_text(json.dumps({"lru_bound": bound, "results": results}))


if __name__ == "__main__":
    main()
