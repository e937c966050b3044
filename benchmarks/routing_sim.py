"""Offline routing replay: the Mooncake trace through our router policy and mocker schedulers.

    python benchmarks/routing_sim.py [--modes kv round-robin] [--time-scales 0.1 0.05]
        [--seeds 8] [--router-args "" "--kv-overlap-score-weight 1 ..."]
        [--trace conversation shared-system unique multiturn popular-prefixes PATH]

The same workload as `routing_quality.py` (first LIMIT requests, BLOCK tokens a hash id, max
output MAX_OUTPUT, 4 workers of 8,192 blocks of 16 tokens, speedup 1), but in simulated time
and one process: the real `KvPolicy` / `RoundRobinPolicy` and one real mocker `Scheduler` per
worker, driven by a discrete-event loop. A run takes seconds and is deterministic per seed, so
settings can be compared over many seeds; use `routing_quality.py` to confirm on the servers.

What the loop models: arrivals on the scaled trace timestamps plus a uniform jitter (the live
client does not keep the order inside a burst); a frontend that preprocesses one request at a
time (fixed cost + cost per prompt token) before routing; a network delay each way; KV events
reaching the router a little after the step that made them starts (the mocker publishes them
before it sleeps the step); first tokens and ends reported when the step's tokens arrive.
"""

from __future__ import annotations

import argparse
import heapq
import itertools
import json
import random
import shlex
import statistics
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from _procs import DEFAULT_TRACE, bench_dir
from clients.mooncake import read_rows
from synthetic_traces import PATTERNS, load_pattern, lru_bound

from dynamo.engines.mocker.config import MockerConfig
from dynamo.engines.mocker.sampling import TokenSampler
from dynamo.engines.mocker.scheduler import Scheduler
from dynamo.engines.mocker.sequence import StepResult
from dynamo.protocols.kv_events import KvCacheEvent, RouterEvent
from dynamo.router.base import RouteRequest, RoutingPolicy, WorkerInfo
from dynamo.router.config import RouterConfig
from dynamo.router.policies import make_policy
from dynamo.runtime.config import add_arguments, resolve

CONVERSATION = "mooncake_conversation_trace.jsonl"


@dataclass(frozen=True, slots=True)
class TraceRequest:
    arrival_s: float  # unscaled trace timestamp
    tokens: list[int]
    max_tokens: int


def load_trace(path: Path, limit: int, block: int, max_output: int) -> list[TraceRequest]:
    """The first `limit` rows of a Mooncake jsonl file as `requests_from_rows` builds them."""
    return requests_from_rows(read_rows(path, limit), block, max_output)


def requests_from_rows(
    rows: list[dict[str, Any]], block: int, max_output: int
) -> list[TraceRequest]:
    """Prompts as `replay.py` builds them: one fixed block of `block` tokens per hash id."""
    blocks: dict[int, list[int]] = {}
    out = []
    for row in rows:
        tokens: list[int] = []
        for h in row["hash_ids"]:
            if h not in blocks:
                rng = random.Random(h * 7919 + 17)
                blocks[h] = [rng.randrange(100, 50_000) for _ in range(block)]
            tokens += blocks[h]
        n = max(1, min(len(tokens), row["input_length"] * block // 512))
        osl = min(max_output, max(1, row["output_length"]))
        out.append(TraceRequest(row["timestamp"] / 1000, tokens[:n], osl))
    return out


def trace_rows(trace: str, limit: int, bench: str | None = None) -> list[dict[str, Any]]:
    """`conversation` (the Mooncake trace in benchmarks/traces, or beside `--bench-dir`'s
    clients), a synthetic pattern (`synthetic_traces.PATTERNS`, generated with seed 0) or the
    path of a jsonl trace (.jsonl, .jsonl.gz or .jsonl.xz)."""
    if trace == "conversation":
        if bench is None:
            return read_rows(DEFAULT_TRACE, limit)
        return read_rows(bench_dir(bench).parent / "traces" / CONVERSATION, limit)
    if trace in PATTERNS:
        return load_pattern(trace, limit)
    path = Path(trace)
    if not path.is_file():
        names = ", ".join(["conversation", *PATTERNS])
        raise SystemExit(f"error: --trace {trace!r} is neither a file nor one of {names}")
    return read_rows(path, limit)


@dataclass(frozen=True, slots=True)
class Delays:
    """Seconds the simulated frontend and transports add (defaults fit the live runs)."""

    frontend_per_request_s: float = 0.002
    frontend_per_token_s: float = 1.1e-6
    network_s: float = 0.0005
    kv_event_s: float = 0.001
    jitter_s: float = 0.002


class Replay:
    """One simulated run: a policy, `workers` schedulers and an event heap."""

    def __init__(
        self, policy: RoutingPolicy, mocker: MockerConfig, workers: int, delays: Delays
    ) -> None:
        self.policy, self.delays = policy, delays
        self.now = 0.0
        self._heap: list[tuple[float, int, Callable[..., None], tuple[Any, ...]]] = []
        self._seq = itertools.count()
        self._frontend_free = 0.0
        sampler = TokenSampler(1000, [2])
        self.schedulers: dict[int, Scheduler] = {}
        self._busy: dict[int, bool] = {}
        self._events: dict[int, list[KvCacheEvent]] = {}
        for i in range(workers):
            wid = 1000 + i
            events: list[KvCacheEvent] = []
            self.schedulers[wid] = Scheduler(mocker, sampler, on_event=events.append)
            self._events[wid], self._busy[wid] = events, False
            policy.add_worker(WorkerInfo(wid, mocker.block_size, mocker.num_gpu_blocks))
        self.arrived: dict[int, float] = {}
        self.first_token: dict[int, float] = {}
        self.prompt_tokens = self.cached_tokens = 0

    def at(self, t: float, fn: Callable[..., None], *args: Any) -> None:
        heapq.heappush(self._heap, (t, next(self._seq), fn, args))

    def run(self, requests: list[TraceRequest], time_scale: float, seed: int) -> dict[str, float]:
        jitter = random.Random(seed)
        for i, req in enumerate(requests):
            t = req.arrival_s * time_scale + jitter.uniform(0, self.delays.jitter_s)
            self.at(t, self._arrive, i, req)
        while self._heap:
            self.now, _, fn, args = heapq.heappop(self._heap)
            fn(*args)
        ttft = sorted(self.first_token[i] - self.arrived[i] for i in self.arrived)
        return {
            "hit_rate": self.cached_tokens / self.prompt_tokens,
            "ttft_p50": pct(ttft, 50),
            "ttft_p90": pct(ttft, 90),
            "ttft_p99": pct(ttft, 99),
            "ttft_mean": statistics.mean(ttft),
        }

    def _arrive(self, i: int, req: TraceRequest) -> None:
        self.arrived[i] = self.now
        d = self.delays
        start = max(self.now, self._frontend_free)
        self._frontend_free = (
            start + d.frontend_per_request_s + d.frontend_per_token_s * len(req.tokens)
        )
        self.at(self._frontend_free, self._route, i, req)

    def _route(self, i: int, req: TraceRequest) -> None:
        decision = self.policy.select(RouteRequest(str(i), req.tokens))
        self.at(self.now + self.delays.network_s, self._submit, decision.instance_id, i, req)

    def _submit(self, wid: int, i: int, req: TraceRequest) -> None:
        n = req.max_tokens
        self.schedulers[wid].add_request(i, req.tokens, seed=i, max_tokens=n, min_tokens=n)
        if not self._busy[wid]:
            self._busy[wid] = True
            self.at(self.now, self._step, wid)

    def _step(self, wid: int) -> None:
        scheduler = self.schedulers[wid]
        if not scheduler.has_work():
            self._busy[wid] = False
            return
        result = scheduler.step()
        if self._events[wid]:
            events = self._events[wid][:]
            self._events[wid].clear()
            self.at(self.now + self.delays.kv_event_s, self._apply_events, wid, events)
        end = self.now + result.duration_s
        self.at(end + self.delays.network_s, self._tokens, result)
        self.at(end, self._step, wid)

    def _apply_events(self, wid: int, events: list[KvCacheEvent]) -> None:
        for event in events:
            self.policy.apply_kv_event(RouterEvent(wid, event))

    def _tokens(self, result: StepResult) -> None:
        for key, _ in result.emitted:
            if key not in self.first_token:
                self.first_token[key] = self.now
                self.policy.on_first_token(str(key))
        for fin in result.finished:
            self.prompt_tokens += fin.prompt_tokens
            self.cached_tokens += fin.cached_tokens
            self.policy.on_finish(str(fin.key))


def pct(xs: list[float], p: float) -> float:
    """Nearest-rank percentile of sorted `xs`, the same rule as replay.py's."""
    return xs[min(len(xs) - 1, int(p / 100 * len(xs)))]


def router_config(flags: str, mode: str, block_size: int) -> RouterConfig:
    """RouterConfig from the frontend's router flags (no `DYN_*` env: runs stay comparable)."""
    parser = argparse.ArgumentParser(prog="--router-args")
    add_arguments(parser, RouterConfig)
    argv = [*shlex.split(flags), "--router-mode", mode, "--kv-cache-block-size", str(block_size)]
    return resolve(RouterConfig, parser.parse_args(argv), {})


def simulate(
    requests: list[TraceRequest], config: RouterConfig, mocker: MockerConfig, workers: int,
    scale: float, seeds: int,
) -> list[dict[str, float]]:  # fmt: skip
    """One run per seed (arrival jitter and the policy's tie-breaks)."""
    return [
        Replay(make_policy(config, random.Random(seed)), mocker, workers, Delays()).run(
            requests, scale, seed
        )
        for seed in range(seeds)
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--modes", nargs="+", default=["kv", "round-robin"])
    parser.add_argument("--time-scales", type=float, nargs="+", default=[0.1, 0.05])
    parser.add_argument("--seeds", type=int, default=8, help="runs per setting (arrival jitter)")
    parser.add_argument(
        "--router-args", nargs="+", default=[""], metavar="FLAGS",
        help="router flags, as the frontend's; several: each is run (kv only), e.g. "
        "'' '--kv-overlap-score-weight 1 --router-kv-overlap-score-credit 1'",
    )  # fmt: skip
    parser.add_argument(
        "--trace", nargs="+", default=["conversation"],
        help=f"conversation, {', '.join(PATTERNS)} or a jsonl path; several are run in turn",
    )  # fmt: skip
    parser.add_argument("--bench-dir", help="shared clients (for the conversation trace)")
    parser.add_argument("--limit", type=int, default=1000)
    parser.add_argument("--block", type=int, default=64, help="prompt tokens per trace hash id")
    parser.add_argument("--max-output", type=int, default=32)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--blocks", type=int, default=8192, help="KV blocks per worker")
    parser.add_argument("--block-size", type=int, default=16)
    parser.add_argument("--speedup", type=float, default=1.0)
    parser.add_argument("--json-out", type=Path, help="write every run's figures here")
    args = parser.parse_args()

    mocker = MockerConfig(
        num_gpu_blocks=args.blocks, block_size=args.block_size, speedup_ratio=args.speedup
    )
    # round-robin ignores the router flags: run it once
    settings = [(m, f) for m in args.modes for f in (args.router_args if m == "kv" else [""])]
    out: list[dict[str, Any]] = []
    for trace in args.trace:
        rows = trace_rows(trace, args.limit, args.bench_dir)
        requests = requests_from_rows(rows, args.block, args.max_output)
        bound = lru_bound(rows, args.block, args.block_size, args.workers * args.blocks)
        print(f"trace {trace}: {len(rows)} requests, shared LRU bound {bound:.4f}")
        print(
            "  mode         scale  hit rate (min-max)  /bound  TTFT p50   p90   p99  mean (ms)"
            "  router flags"
        )
        for scale in args.time_scales:
            for mode, flags in settings:
                config = router_config(flags if mode == "kv" else "", mode, args.block_size)
                runs = simulate(requests, config, mocker, args.workers, scale, args.seeds)
                hits = [r["hit_rate"] for r in runs]
                ms = {k: 1000 * statistics.mean(r[k] for r in runs) for k in runs[0]}
                hit = statistics.mean(hits)
                print(
                    f"  {mode:<12} {scale:>5g}  {hit:.4f} ({min(hits):.3f}-{max(hits):.3f})"
                    f"  {hit / bound if bound else 0:5.2f}  {ms['ttft_p50']:8.1f}"
                    f" {ms['ttft_p90']:5.0f} {ms['ttft_p99']:5.0f} {ms['ttft_mean']:5.1f}"
                    f"  {flags if mode == 'kv' else ''}",
                    flush=True,
                )
                out.append({"trace": trace, "bound": bound, "mode": mode, "scale": scale,
                            "flags": flags, "runs": runs})  # fmt: skip
    if args.json_out:
        args.json_out.write_text(json.dumps(out))


if __name__ == "__main__":
    main()
