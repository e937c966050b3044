"""Routing quality: prefix-cache hit rate and TTFT of trace replays, our defaults vs Dynamo's.

    python benchmarks/routing_quality.py [--trace conversation shared-system unique multiturn
        popular-prefixes]
        [--time-scales 0.1 0.05] [--systems ours ours-old peer] [--modes kv round-robin]
        [--limit 1000 --block 64 --max-output 32] [--bench-dir benchmarks/clients]
        [--router-env NAME=VALUE ...]

For each trace, time scale, system and router mode: four mocker workers (8,192 blocks of 16
tokens each, speedup 1) and a frontend in that mode, in a fresh file-discovery directory;
`benchmarks/clients/replay.py` streams the first LIMIT requests of the trace on their (scaled)
timestamps and reports the `cached_tokens` hit rate and TTFT. Traces: `conversation` (the
Mooncake trace in benchmarks/traces), a pattern of `synthetic_traces.py` (generated, seed 0)
or a path.
Systems: `ours` (our frontend, our defaults), `ours-old` (ours with Dynamo's default router
settings, `--kv-overlap-score-weight 1 --router-kv-overlap-score-credit 1`; kv only, its
round-robin is ours'), `peer` (the real NVIDIA Dynamo with its defaults, when installed).
The bound is the hit rate of one shared LRU cache of the same total size (`lru_bound` in
`synthetic_traces.py`), what a perfect router approaches. `--router-env` sets environment
variables for the servers of every run (ours reads `DYN_KV_OVERLAP_SCORE_WEIGHT`,
`DYN_ROUTER_KV_OVERLAP_SCORE_CREDIT` and `DYN_ROUTER_KV_OVERLAP_SCORE_CREDIT_QUEUE_SCALE`,
Dynamo 1.6.1 `DYN_ROUTER_PREFILL_LOAD_SCALE` and the same credit variable); the results carry
them as `router_env`.
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
from routing_sim import trace_rows
from synthetic_traces import PATTERNS, lru_bound, write_rows

# Dynamo 1.6.1's defaults, spelled as our flags' environment variables
DYNAMO_DEFAULTS = {"DYN_KV_OVERLAP_SCORE_WEIGHT": "1", "DYN_ROUTER_KV_OVERLAP_SCORE_CREDIT": "1"}
SYSTEMS = ("ours", "ours-old", "peer")


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
            "(the packaged dynamo:tinymodel has enough): pass --model-dir DIR with such a tokenizer"
        )


def replay(stack: Stack, url: str, args: argparse.Namespace, scale: float) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "replay.json"
        argv = [str(args.bench / "replay.py"), url, MODEL_NAME, str(args.trace_path)]
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
    name = f"{args.trace_name}-{system}-{mode}-{scale:g}"
    peer = args.peer_python if system == "peer" else None
    env = {**(DYNAMO_DEFAULTS if system == "ours-old" else {}), **args.router_env}
    with environment(env):
        stack, url = start_stack(
            name, args.model_dir, mode, peer=peer, bench=args.bench, speedup=args.speedup,
            **shape,
        )  # fmt: skip
    with stack:
        result = replay(stack, url, args, scale)
    print(f"  {name}: {json.dumps(result)}", flush=True)
    return {
        "trace": args.trace_name, "system": system, "mode": mode, "time_scale": scale,
        "router_env": env, "lru_bound": args.bound, **result,
    }  # fmt: skip


def env_setting(text: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, got {text!r}")
    return name, value


def ms(x: float | None) -> str:
    return f"{1000 * x:8.0f}" if x is not None else "       -"


def table(results: list[dict[str, Any]]) -> str:
    """Per trace and time scale: every system and mode, hit rate against the bound, TTFT."""
    lines = [
        "trace          scale  system   mode         hit rate /bound  TTFT p50   p90   p99  mean"
        " (ms) errors  CPU s: frontend mocker",
    ]
    groups: dict[tuple[str, float, str, str], list[dict[str, Any]]] = {}
    for r in results:
        groups.setdefault((r["trace"], r["time_scale"], r["system"], r["mode"]), []).append(r)
    for (trace, scale, system, mode), rs in groups.items():
        for r in rs:
            bound = r["lru_bound"]
            hit = r["hit_rate"] or 0.0
            share = hit / bound if bound else 0.0
            times = " ".join(ms(r[k]) for k in ("ttft_p50", "ttft_p90", "ttft_p99", "ttft_mean"))
            cpu = f"{r.get('frontend_cpu_s', 0):>15.1f} {r.get('mocker_cpu_s', 0):>6.1f}"
            lines.append(
                f"{trace:<14} {scale:>5g}  {system:<8} {mode:<12} {hit:8.3f} {share:6.2f}"
                f"  {times} {r['errors']:>6}  {cpu}"
            )

    def mean(key: tuple[str, float, str, str], field: str) -> float:
        return statistics.mean(r[field] or 0.0 for r in groups[key])

    bounds = {r["trace"]: r["lru_bound"] for r in results}
    lines += [f"shared LRU bound, {t}: {b:.3f}" for t, b in bounds.items()]
    for trace, scale, system, mode in groups:
        if system != "ours" or mode != "kv":
            continue
        for other in (("ours-old", "kv"), ("peer", "kv"), ("ours", "round-robin")):
            key = (trace, scale, *other)
            if key not in groups or not mean(key, "ttft_p90"):
                continue
            ours = (trace, scale, system, mode)
            ratios = ", ".join(
                f"{label} x{mean(ours, f) / mean(key, f):.2f}"
                for label, f in (("TTFT p50", "ttft_p50"), ("p90", "ttft_p90"))
            )
            hits = f"hit rate {mean(ours, 'hit_rate'):.3f} vs {mean(key, 'hit_rate'):.3f}"
            lines.append(f"{trace} {scale:g}: ours kv / {' '.join(other)}: {hits}, {ratios}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--trace", nargs="+", default=["conversation"],
        help=f"conversation, {', '.join(PATTERNS)} or a jsonl path; several in turn",
    )  # fmt: skip
    parser.add_argument("--time-scales", type=float, nargs="+", default=[0.1, 0.05])
    parser.add_argument("--systems", nargs="+", choices=SYSTEMS, default=list(SYSTEMS))
    parser.add_argument("--modes", nargs="+", default=["kv", "round-robin"])
    parser.add_argument("--repeat", type=int, default=1, help="runs of every configuration")
    parser.add_argument("--limit", type=int, default=1000, help="trace requests replayed")
    parser.add_argument("--block", type=int, default=64, help="prompt tokens per trace hash id")
    parser.add_argument("--max-output", type=int, default=32)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--blocks", type=int, default=8192, help="KV blocks per worker")
    parser.add_argument("--block-size", type=int, default=16, help="tokens per KV block")
    parser.add_argument("--profile", type=Path, help="write py-spy profiles of the servers here")
    add_common_arguments(parser, speedup=1.0)
    parser.add_argument(
        "--router-env", type=env_setting, nargs="+", default=[], metavar="NAME=VALUE",
        help="environment of every server, e.g. DYN_ROUTER_KV_OVERLAP_SCORE_CREDIT=2",
    )  # fmt: skip
    args = parser.parse_args()
    args.router_env = dict(args.router_env)

    results: list[dict[str, Any]] = []
    try:
        args.bench = bench_dir(args.bench_dir)
        args.model_dir = args.model_dir or tiny_model_dir()
        check_vocab(Path(args.model_dir) / "tokenizer.json")
        systems = [s for s in args.systems if s != "peer"]
        args.peer_python = find_peer(args.peer_venv, wanted="peer" in args.systems)
        if args.peer_python is not None:
            systems.append("peer")
        print(
            f"routing quality: first {args.limit} requests of each trace, "
            f"{args.block} tokens a hash id, max output {args.max_output}; "
            f"{args.workers} mocker workers x {args.blocks} blocks of {args.block_size} tokens, "
            f"speedup {args.speedup:g}" + "".join(f"; {k}={v}" for k, v in args.router_env.items()),
            flush=True,
        )
        for trace in args.trace:
            rows = trace_rows(trace, args.limit, args.bench_dir)
            args.trace_name = Path(trace).stem if Path(trace).is_file() else trace
            args.bound = lru_bound(rows, args.block, args.block_size, args.workers * args.blocks)
            with tempfile.TemporaryDirectory() as tmp:
                args.trace_path = Path(tmp) / "trace.jsonl"
                write_rows(rows, args.trace_path)
                results += [
                    run_one(args, system, mode, scale)
                    for scale in args.time_scales
                    for _ in range(args.repeat)
                    for system in systems
                    for mode in args.modes
                    if not (system == "ours-old" and mode != "kv")  # the same as ours there
                ]
    except BenchError as e:
        sys.exit(f"error: {e}")
    finally:
        if results:
            print(table(results))
        if args.json_out and results:
            Path(args.json_out).write_text(json.dumps({"results": results}))


if __name__ == "__main__":
    main()
