"""The SLA planner against static provisioning, in simulated time (no wall-clock sleeps).

    python benchmarks/planner.py [--base-rate 3] [--seeds 3] [--speedup-ratio 0.2]
        [--startup-s 5] [--shapes ramp+burst,sinusoid,step-down,bursts] [--trace]
        [--time-scale 1] [--planner-only] [--what-if-router-queue TOKENS] [--no-arrivals]
        [--planner-args "--load-predictor kalman ..."]

The shapes are `_load_shapes.py`'s (shared with `planner_serve.py`, the wall-clock twin).
A disaggregated graph of mocker engines (the real mocker `Scheduler` and timing model, one per
worker) serves a varying Poisson load of one of four shapes (multiples of --base-rate):
`ramp+burst` (the issue's: x1 60 s, ramp to x4 over 60 s, x4 120 s, ramp back over 60 s, x1
60 s, a x8 burst of 10 s, x1 60 s), `sinusoid` (x1..x4, period 120 s, 3 cycles), `step-down`
(x1 30 s, x4 120 s, x1 180 s) and `bursts` (x1 and two x6 bursts of 20 s). Requests go to the
prefill worker with the fewest queued prompt tokens, then (prefill done = first token) to the
decode worker with the fewest running requests. Three graphs are compared per shape:

- planner: the real `Planner` loop (`dynamo.planner.loop`, predictors, `decide`) every
  interval and its load checks in between, on the frontend-side numbers of the interval, the
  requests that arrived so far (the frontends' counts; `--no-arrivals` leaves them out) and
  the workers' queue / KV load; added workers serve after `--startup-s`, removed ones drain;
- static at peak / static at mean: sized from the trace, not from the planner's run: the
  replicas the planner's throughput formula asks for at the trace's peak rate and at its
  mean rate, for the whole run.

Reported: SLA attainment (share of requests with TTFT <= --ttft and mean ITL <= --itl) and
worker-seconds (every worker from its start to its removal, 1 GPU each). `--trace` prints,
per interval of each shape's first seed, the arrival rate, the planner's forecast, the
desired and live replicas, the serving prefill workers, the queued prompt tokens and the
TTFT misses of the requests that arrived in it.
"""

from __future__ import annotations

import argparse
import asyncio
import heapq
import itertools
import math
import random
import shlex
import statistics
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from _load_shapes import (
    SHAPES,
    Phases,
    arrivals,
    format_misses,
    mean_rate,
    misses_by_phase,
    peak_rate,
    scaled,
    trace_s,
)

from dynamo.engines.mocker.config import MockerConfig
from dynamo.engines.mocker.sampling import TokenSampler
from dynamo.engines.mocker.scheduler import Scheduler
from dynamo.engines.mocker.sequence import StepResult
from dynamo.planner.config import PlannerConfig, build_parser, planner_config
from dynamo.planner.connectors.base import ROLES, Role
from dynamo.planner.decide import Forecast, Inputs, RoleLoad, Traffic, decide
from dynamo.planner.loop import Planner
from dynamo.planner.profile import EngineProfile, mocker_profile


def replicas_for_rate(
    config: PlannerConfig, profile: EngineProfile, rate: float, isl: int, osl: int
) -> dict[Role, int]:
    """The replicas the planner's throughput formula asks for at a steady `rate` (req/s)."""
    decision = decide(
        config,
        Inputs(
            now_s=0.0,
            live=dict.fromkeys(ROLES, config.min_endpoint),
            forecast=Forecast(rate * config.interval_s, isl, osl),
            profile=profile,
        ),
    )
    return {role: decision.targets[role] for role in ROLES}


@dataclass
class Worker:
    role: Role
    scheduler: Scheduler
    started_s: float
    ready_s: float
    busy: bool = False
    draining: bool = False
    stopped_s: float | None = None


@dataclass
class Request:
    arrived_s: float
    prompt: list[int]
    osl: int
    first_token_s: float | None = None
    decode_tokens: list[float] = field(default_factory=list)
    done_s: float | None = None


class Graph:
    """A disaggregated graph of simulated mocker workers and an event heap."""

    def __init__(
        self, mocker: MockerConfig, startup_s: float, router_queue_tokens: float | None = None
    ) -> None:
        self.mocker, self.startup_s = mocker, startup_s
        # what-if (not in the product): the router holds a prompt while every serving prefill
        # worker has more than this many prompt tokens queued
        self.router_queue_tokens = router_queue_tokens
        self.now = 0.0
        self._heap: list[tuple[float, int, Callable[..., None], tuple[Any, ...]]] = []
        self._seq = itertools.count()
        self._sampler = TokenSampler(1000, [2])
        self.workers: list[Worker] = []
        self.requests: list[Request] = []
        self.waiting: dict[Role, list[int]] = {"prefill": [], "decode": []}

    def at(self, t: float, fn: Callable[..., None], *args: Any) -> None:
        heapq.heappush(self._heap, (t, next(self._seq), fn, args))

    def run_until(self, t: float) -> None:
        while self._heap and self._heap[0][0] <= t:
            self.now, _, fn, args = heapq.heappop(self._heap)
            fn(*args)
        self.now = t

    # --- workers -------------------------------------------------------------------
    def live(self, role: Role) -> list[Worker]:
        return [
            w for w in self.workers if w.role == role and not w.draining and w.stopped_s is None
        ]

    def add_worker(self, role: Role, ready_in_s: float) -> None:
        worker = Worker(
            role, Scheduler(self.mocker, self._sampler), self.now, self.now + ready_in_s
        )
        self.workers.append(worker)
        self.at(worker.ready_s, self._ready, worker)

    def remove_worker(self, role: Role) -> None:
        """Drain the newest live worker of `role`: it takes nothing new and stops when idle."""
        worker = self.live(role)[-1]
        worker.draining = True
        if not worker.busy:
            worker.stopped_s = self.now

    def _ready(self, worker: Worker) -> None:
        queue = self.waiting[worker.role]
        while queue and not worker.draining:
            if self._held(worker):
                return
            self._assign(worker, queue.pop(0))

    def _held(self, worker: Worker) -> bool:
        limit = self.router_queue_tokens
        return (
            limit is not None
            and worker.role == "prefill"
            and worker.scheduler.pending_prefill_tokens > limit
        )

    def _serving(self, role: Role) -> list[Worker]:
        return [w for w in self.live(role) if w.ready_s <= self.now]

    # --- requests ------------------------------------------------------------------
    def arrive(self, key: int) -> None:
        self._route("prefill", key)

    def _route(self, role: Role, key: int) -> None:
        ready = self._serving(role)
        if not ready:
            self.waiting[role].append(key)
            return
        if role == "prefill" and self.router_queue_tokens is not None:
            self.waiting[role].append(key)  # behind any held prompts, to the least loaded
            for worker in sorted(ready, key=lambda w: w.scheduler.pending_prefill_tokens):
                self._ready(worker)
            return
        if role == "prefill":
            worker = min(ready, key=lambda w: w.scheduler.pending_prefill_tokens)
        else:
            worker = min(ready, key=lambda w: w.scheduler.num_running + w.scheduler.num_waiting)
        self._assign(worker, key)

    def _assign(self, worker: Worker, key: int) -> None:
        req = self.requests[key]
        if worker.role == "prefill":
            worker.scheduler.add_request(key, req.prompt, seed=key, max_tokens=1, min_tokens=1)
        else:
            worker.scheduler.add_request(
                key,
                req.prompt,
                seed=key,
                max_tokens=req.osl,
                min_tokens=req.osl,
                remote_tokens=len(req.prompt),
            )
        if not worker.busy:
            worker.busy = True
            self.at(self.now, self._step, worker)

    def _step(self, worker: Worker) -> None:
        if self.router_queue_tokens is not None and worker.role == "prefill":
            self._ready(worker)  # the router hands held prompts to a worker under its limit
        if not worker.scheduler.has_work():
            worker.busy = False
            if worker.draining:
                worker.stopped_s = self.now
            return
        result = worker.scheduler.step()
        end = self.now + result.duration_s
        self.at(end, self._tokens, worker, result)
        self.at(end, self._step, worker)

    def _tokens(self, worker: Worker, result: StepResult) -> None:
        for fin in result.finished:
            req = self.requests[fin.key]
            if worker.role == "prefill":
                req.first_token_s = self.now
                self._route("decode", fin.key)
            else:
                req.done_s = self.now
        if worker.role == "decode":
            for key, _ in result.emitted:
                self.requests[key].decode_tokens.append(self.now)

    # --- what the planner sees -----------------------------------------------------
    def snapshot(self) -> dict[Role, RoleLoad]:
        """The workers' load now, as `WorkerLoads.snapshot` reports it."""
        out = {}
        for role in ROLES:
            ready = self._serving(role)
            if ready:
                # what-if: the prompts the router holds count as queued on its workers
                held = (
                    sum(len(self.requests[k].prompt) for k in self.waiting[role])
                    if self.router_queue_tokens is not None
                    else 0
                )
                out[role] = RoleLoad(
                    workers=len(ready),
                    queued_prefill_tokens=statistics.mean(
                        w.scheduler.pending_prefill_tokens for w in ready
                    )
                    + held / len(ready),
                    kv_usage=statistics.mean(
                        w.scheduler.kv.active_blocks / w.scheduler.kv.num_blocks for w in ready
                    ),
                    queued_workers=sum(1 for w in ready if w.scheduler.pending_prefill_tokens > 0),
                    running_requests=statistics.mean(w.scheduler.num_running for w in ready),
                )
        return out

    def worker_seconds(self, end_s: float) -> float:
        """Worker time up to `end_s` (the end of the trace), 1 GPU each."""
        return sum(
            min(w.stopped_s if w.stopped_s is not None else end_s, end_s) - w.started_s
            for w in self.workers
            if w.started_s < end_s
        )


def itl_s(req: Request) -> float | None:
    times = req.decode_tokens
    return (times[-1] - times[0]) / (len(times) - 1) if len(times) > 1 else None


class SimSource:
    """The frontend-side numbers of the requests that finished in the last interval."""

    def __init__(self, graph: Graph, count_arrivals: bool = True) -> None:
        self.graph, self._seen = graph, 0
        self.count_arrivals = count_arrivals

    async def start(self) -> None:
        return None

    async def traffic(self, interval_s: float) -> Traffic:
        done = [r for r in self.graph.requests if r.done_s is not None]
        done.sort(key=lambda r: r.done_s or 0.0)
        fresh, self._seen = done[self._seen :], len(done)
        if not fresh:
            return Traffic(0)
        itls = [v for v in (itl_s(r) for r in fresh) if v is not None]
        return Traffic(
            num_requests=len(fresh),
            isl=statistics.mean(len(r.prompt) for r in fresh),
            osl=statistics.mean(r.osl for r in fresh),
            ttft_ms=statistics.mean(((r.first_token_s or 0) - r.arrived_s) * 1000 for r in fresh),
            itl_ms=statistics.mean(itls) * 1000 if itls else None,
            request_duration_s=statistics.mean((r.done_s or 0) - r.arrived_s for r in fresh),
        )

    async def arrived(self) -> float | None:
        """Requests that arrived so far (what the frontends' counts add up to); None with
        `--no-arrivals` (the planner without the load checks' arrival rate)."""
        if not self.count_arrivals:
            return None
        return float(sum(1 for r in self.graph.requests if r.arrived_s <= self.graph.now))

    async def close(self) -> None:
        return None


class SimConnector:
    def __init__(self, graph: Graph) -> None:
        self.graph = graph

    async def live_replicas(self) -> dict[Role, int]:
        return {role: len(self.graph.live(role)) for role in ROLES}

    async def scale(self, targets: Mapping[Role, int], reason: str) -> None:
        for role, target in targets.items():
            while len(self.graph.live(role)) < target:
                self.graph.add_worker(role, self.graph.startup_s)
            while len(self.graph.live(role)) > target:
                self.graph.remove_worker(role)

    async def close(self) -> None:
        return None


def _trace_row(graph: Graph, planner: Planner | None, t: float, interval_s: float) -> str:
    arrived = sum(1 for r in graph.requests if t - interval_s <= r.arrived_s < t)
    queued = sum(w.scheduler.pending_prefill_tokens for w in graph._serving("prefill"))
    decision = planner.last_decision if planner is not None else None
    forecast = planner.last_forecast if planner is not None else None
    predicted = f"{forecast.num_requests / interval_s:6.1f}" if forecast else "     -"
    desired = (
        f"{decision.targets.get('prefill', 0)}+{decision.targets.get('decode', 0)}"
        if decision
        else "-"
    )
    live = f"{len(graph.live('prefill'))}+{len(graph.live('decode'))}"
    serving = len(graph._serving("prefill"))
    return (
        f"{t:6.0f} {arrived / interval_s:7.1f} {predicted} {desired:>7} {live:>6} "
        f"{serving:>4} {queued:>8}"
    )


def _trace_misses(rows: list[str], graph: Graph, config: PlannerConfig) -> None:
    """Append to each interval's row the TTFT misses of the requests that arrived in it."""
    for i, row in enumerate(rows):
        t = float(row.split()[0])
        missed = sum(
            1
            for r in graph.requests
            if t - config.interval_s <= r.arrived_s < t
            and (r.first_token_s is None or r.first_token_s - r.arrived_s > config.ttft_ms / 1000)
        )
        rows[i] = f"{row} {missed:>6}"


@dataclass
class Result:
    attainment: float
    ttft_ok: float  # share within the TTFT target
    itl_ok: float
    worker_seconds: float
    ttft_p90_ms: float
    itl_p90_ms: float
    max_replicas: dict[Role, int]
    mean_replicas: dict[Role, float]  # time-weighted over the trace
    by_phase: list[tuple[str, int, int]] = field(default_factory=list)  # label, arrived, missed


async def simulate(
    config: PlannerConfig,
    mocker: MockerConfig,
    times: list[float],
    static: Mapping[Role, int] | None,
    startup_s: float,
    isl: int,
    osl: int,
    phases: Phases,
    trace: list[str] | None = None,
    router_queue_tokens: float | None = None,
    count_arrivals: bool = True,
) -> Result:
    graph = Graph(mocker, startup_s, router_queue_tokens)
    rng = random.Random(len(times))
    for i, t in enumerate(times):
        graph.requests.append(Request(t, [rng.randrange(100, 50_000) for _ in range(isl)], osl))
        graph.at(t, graph.arrive, i)
    start = static or {role: config.min_endpoint for role in ROLES}
    for role in ROLES:
        for _ in range(start[role]):
            graph.add_worker(role, 0.0)
    planner = None
    if static is None:
        planner = Planner(
            config,
            SimConnector(graph),
            SimSource(graph, count_arrivals),
            loads=graph,
            profile_loader=lambda c: mocker_profile(c.mocker_speedup_ratio),
            clock=lambda: graph.now,
        )
    end = trace_s(phases)
    peak = {role: start[role] for role in ROLES}
    summed = dict.fromkeys(ROLES, 0.0)
    t = 0.0
    # ticks of the load check (the loop's `--load-adjustment-interval`) inside each interval
    tick = config.load_adjustment_interval_seconds or config.interval_s
    ticks = max(1, round(config.interval_s / tick))
    while t < end or any(r.done_s is None for r in graph.requests):
        for i in range(ticks):
            t += config.interval_s / ticks
            graph.run_until(t)
            if planner is None or t > end + config.interval_s:
                pass
            elif i == ticks - 1:
                await planner.step()
            else:
                await planner.check_load()
            if trace is not None and i == ticks - 1 and t <= end:
                trace.append(_trace_row(graph, planner, t, config.interval_s))
            for role in ROLES:
                peak[role] = max(peak[role], len(graph.live(role)))
                if t <= end:
                    summed[role] += len(graph.live(role)) * config.interval_s / ticks
        if t > end + 600:
            break
    finished = [r for r in graph.requests if r.done_s is not None and r.first_token_s is not None]
    ttfts = sorted((r.first_token_s or 0) - r.arrived_s for r in finished)
    itls = sorted(v for v in (itl_s(r) for r in finished) if v is not None)

    def met(r: Request) -> bool:
        return (
            r.done_s is not None
            and r.first_token_s is not None
            and r.first_token_s - r.arrived_s <= config.ttft_ms / 1000
            and (itl_s(r) or 0) <= config.itl_ms / 1000
        )

    ok = sum(1 for r in finished if met(r))
    n = len(graph.requests)
    if trace is not None:
        _trace_misses(trace, graph, config)
    return Result(
        attainment=ok / n,
        ttft_ok=sum((r.first_token_s or 0) - r.arrived_s <= config.ttft_ms / 1000 for r in finished)
        / n,
        itl_ok=sum((itl_s(r) or 0) <= config.itl_ms / 1000 for r in finished) / n,
        worker_seconds=graph.worker_seconds(end),
        ttft_p90_ms=ttfts[int(0.9 * len(ttfts))] * 1000 if ttfts else math.nan,
        itl_p90_ms=itls[int(0.9 * len(itls))] * 1000 if itls else math.nan,
        max_replicas=peak,
        mean_replicas={role: summed[role] / end for role in ROLES},
        by_phase=misses_by_phase(
            [r.arrived_s for r in graph.requests], [not met(r) for r in graph.requests], phases
        ),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base-rate", type=float, default=3.0, help="requests/s at x1")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--isl", type=int, default=1000)
    parser.add_argument("--osl", type=int, default=100)
    parser.add_argument("--speedup-ratio", type=float, default=0.2, help="the mockers'")
    parser.add_argument("--startup-s", type=float, default=5.0, help="a new worker's start")
    parser.add_argument(
        "--planner-only",
        action="store_true",
        help="skip the static graphs (for sweeps; `vs peak` is still against the peak graph)",
    )
    parser.add_argument(
        "--what-if-router-queue",
        type=float,
        metavar="TOKENS",
        help="NOT THE PRODUCT: the router holds prompts while every prefill worker has more "
        "than TOKENS queued (to measure what router-side queueing would buy)",
    )
    parser.add_argument(
        "--no-arrivals",
        action="store_true",
        help="the planner's load checks without the frontends' arrival counts (as before them)",
    )
    parser.add_argument(
        "--time-scale",
        type=float,
        default=1.0,
        help="every phase of the shapes this many times as long (planner_serve.py's scale)",
    )
    parser.add_argument(
        "--shapes",
        default=",".join(SHAPES),
        help=f"comma-separated load shapes to run, of: {', '.join(SHAPES)}",
    )
    parser.add_argument(
        "--by-phase",
        action="store_true",
        help="print each graph's SLA misses per phase of the shape (summed over the seeds)",
    )
    parser.add_argument(
        "--trace",
        action="store_true",
        help="print the planner's per-interval trace of each shape's first seed",
    )
    parser.add_argument(
        "--planner-args",
        default="--ttft 500 --itl 60 --adjustment-interval 10 --max-gpu-budget 16",
        help="planner flags, as `python -m dynamo.planner` takes them",
    )
    args = parser.parse_args()
    unknown = [s for s in args.shapes.split(",") if s not in SHAPES]
    if unknown:
        parser.error(f"unknown shapes {', '.join(unknown)}; known: {', '.join(SHAPES)}")
    flags = [
        *shlex.split(args.planner_args),
        "--environment",
        "virtual",
        "--backend",
        "mocker",
        "--mocker-speedup-ratio",
        str(args.speedup_ratio),
        "--profile-results-dir",
        "/nonexistent",
    ]
    config = planner_config(build_parser().parse_args(flags), {})
    mocker = MockerConfig(speedup_ratio=args.speedup_ratio)
    profile = mocker_profile(args.speedup_ratio)
    print(
        f"base {args.base_rate:g} req/s; ISL {args.isl}, OSL {args.osl}; mocker speedup "
        f"{args.speedup_ratio:g}, new workers serve after {args.startup_s:g}s; targets TTFT "
        f"{config.ttft_ms:g} ms, ITL {config.itl_ms:g} ms; {args.seeds} seeds; static graphs "
        "sized from the trace (the planner's throughput formula at its peak and mean rate)"
    )
    if args.what_if_router_queue is not None:
        print(
            f"WHAT-IF, NOT THE PRODUCT: the router holds prompts while every prefill worker has "
            f"more than {args.what_if_router_queue:g} tokens queued"
        )
    for name in args.shapes.split(","):
        run_shape(name, scaled(SHAPES[name], args.time_scale), args, config, mocker, profile)


def run_shape(
    name: str,
    phases: Phases,
    args: argparse.Namespace,
    config: PlannerConfig,
    mocker: MockerConfig,
    profile: EngineProfile,
) -> None:
    peak, mean = peak_rate(args.base_rate, phases), mean_rate(args.base_rate, phases)
    at_peak = replicas_for_rate(config, profile, peak, args.isl, args.osl)
    at_mean = replicas_for_rate(config, profile, mean, args.isl, args.osl)
    trace: list[str] | None = [] if args.trace else None

    def run(static: dict[Role, int] | None) -> list[Result]:
        return [
            asyncio.run(
                simulate(
                    config,
                    mocker,
                    arrivals(args.base_rate, seed, phases),
                    static,
                    args.startup_s,
                    args.isl,
                    args.osl,
                    phases,
                    trace if static is None and seed == 0 else None,
                    args.what_if_router_queue,
                    not args.no_arrivals,
                )
            )
            for seed in range(args.seeds)
        ]

    rows = [("planner", None, run(None))]
    if not args.planner_only:
        rows += [
            ("static at peak", at_peak, run(at_peak)),
            ("static at mean", at_mean, run(at_mean)),
        ]
    print(f"\n{name}: {trace_s(phases):.0f}s, peak {peak:.1f} req/s, mean {mean:.2f} req/s")
    if trace is not None:
        print(
            f"{'t':>6} {'arr/s':>7} {'pred/s':>6} {'desired':>7} {'live':>6} {'srvP':>4} "
            f"{'queuedP':>8} {'missed':>6}"
        )
        print("\n".join(trace))
    # a static graph's workers live the whole trace
    peak_ws = sum(at_peak.values()) * trace_s(phases)
    print(
        f"{'setup':16} {'replicas P+D':>13} {'SLA attain':>10} {'worker-s':>9} "
        f"{'vs peak':>8} {'TTFT ok':>8} {'ITL ok':>7} {'TTFT p90':>9} {'ITL p90':>8}"
    )
    for label_name, static, results in rows:
        counts = static or {role: max(r.max_replicas[role] for r in results) for role in ROLES}
        label = f"{counts['prefill']}+{counts['decode']}" + ("" if static else " max")
        ws = statistics.mean(r.worker_seconds for r in results)
        print(
            f"{label_name:16} {label:>13} {statistics.mean(r.attainment for r in results):>10.1%} "
            f"{ws:>9.0f} {ws / peak_ws:>8.0%} "
            f"{statistics.mean(r.ttft_ok for r in results):>8.1%} "
            f"{statistics.mean(r.itl_ok for r in results):>7.1%} "
            f"{statistics.mean(r.ttft_p90_ms for r in results):>7.0f}ms "
            f"{statistics.mean(r.itl_p90_ms for r in results):>6.1f}ms",
            flush=True,
        )
        if args.by_phase:
            summed_phases = [
                (
                    label,
                    sum(r.by_phase[i][1] for r in results),
                    sum(r.by_phase[i][2] for r in results),
                )
                for i, (label, _, _) in enumerate(results[0].by_phase)
            ]
            print(f"{'':16} missed/arrived by phase, all seeds: {format_misses(summed_phases)}")


if __name__ == "__main__":
    main()
