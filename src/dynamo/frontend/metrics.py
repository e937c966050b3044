"""The frontend's Prometheus metrics, with Dynamo's names and labels (`dynamo_frontend_*`).

The planner reads these, so the names are an API. Each app owns its `CollectorRegistry`.
The request path only bumps plain numbers (lock-free: one event-loop thread writes them);
per-model label children are resolved once (`for_model`), and the series that can be read
off state that exists anyway (worker load, KV hit rate, output tokens) are computed at
scrape time by collectors.
"""

from __future__ import annotations

import contextlib
from bisect import bisect_left
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

from dynamo.protocols.model_card import ModelCard

CONTENT_TYPE = CONTENT_TYPE_LATEST

_SECONDS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
_ITL = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 1, 2.5)
_TOKENS = (0, 16, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384, 32768, 65536, 131072)
_TOKENIZER_MS = (0.5, 1, 2, 4, 8, 16, 32, 64, 128, 256, 512)  # Dynamo's buckets
_LOOP_LAG = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5)

# The frontend routes aggregated (and decode) workers only; prefill workers are not its to route.
WORKER_TYPE = "decode"
_WORKER_LABELS = ("model", "worker_id", "dp_rank", "worker_type")


class Histogram:
    """A histogram family without locks: observed per token, from the one event-loop thread."""

    def __init__(
        self,
        name: str,
        documentation: str,
        labelnames: Sequence[str],
        *,
        buckets: Sequence[float],
        registry: CollectorRegistry,
    ) -> None:
        self._name = name
        self._doc = documentation
        self._labelnames = tuple(labelnames)
        self._bounds = tuple(float(b) for b in buckets)
        self._children: dict[tuple[str, ...], HistogramChild] = {}
        registry.register(self)

    def labels(self, *values: str) -> HistogramChild:
        child = self._children.get(values)
        if child is None:
            child = self._children[values] = HistogramChild(self._bounds)
        return child

    def collect(self) -> Iterator[Metric]:
        family = HistogramMetricFamily(self._name, self._doc, labels=self._labelnames)
        les = [*(repr(b) for b in self._bounds), "+Inf"]
        for values, child in self._children.items():
            cumulative, buckets = 0, []
            for le, count in zip(les, child.counts, strict=True):
                cumulative += count
                buckets.append((le, cumulative))
            family.add_metric(list(values), buckets, child.sum)
        yield family


class HistogramChild:
    __slots__ = ("_bounds", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self._bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # the last one is +Inf
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self._bounds, value)] += 1
        self.sum += value


@dataclass(frozen=True, slots=True)
class WorkerLoad:
    """One worker (dp rank)'s load as the routing policy sees it."""

    model: str
    worker_id: int
    dp_rank: int
    active_decode_blocks: int
    active_prefill_tokens: int


class WorkerView(Protocol):
    """What the per-worker gauges read at scrape time (the model manager provides it)."""

    def live_workers(self) -> set[tuple[str, int]]:
        """(model, worker_id) of every worker requests are routed to now."""

    def worker_loads(self) -> Iterable[WorkerLoad]: ...


class WorkerLast:
    """The last TTFT, prompt length and inter-token latency seen from one worker (dp rank)."""

    __slots__ = ("isl", "itl_s", "ttft_s")

    def __init__(self) -> None:
        self.ttft_s: float | None = None
        self.isl: int | None = None
        self.itl_s: float | None = None


class FrontendMetrics:
    """Every `dynamo_frontend_*` series (the prefix is configurable)."""

    def __init__(self, prefix: str = "dynamo_frontend") -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.prefix = prefix
        r, p = self.registry, prefix
        m = ("model",)
        self.requests = Counter(
            f"{p}_requests",
            "HTTP requests by outcome",
            ("model", "endpoint", "request_type", "status", "error_type"),
            registry=r,
        )
        self.inflight = Gauge(f"{p}_inflight_requests", "Requests being served", m, registry=r)
        self.queued = Gauge(
            f"{p}_queued_requests", "Requests waiting for their first token", m, registry=r
        )
        self.disconnected = Gauge(
            f"{p}_disconnected_clients",
            "Clients that went away before their response ended",
            registry=r,
        )
        hist = {
            name: Histogram(f"{p}_{name}", doc, m, buckets=buckets, registry=r)
            for name, doc, buckets in (
                ("request_duration_seconds", "Request duration", _SECONDS),
                ("time_to_first_token_seconds", "Time to first token", _SECONDS),
                ("inter_token_latency_seconds", "Time between output tokens", _ITL),
                ("input_sequence_tokens", "Prompt length in tokens", _TOKENS),
                ("output_sequence_tokens", "Completion length in tokens", _TOKENS),
                ("cached_tokens", "Prompt tokens served from the KV cache", _TOKENS),
            )
        }
        self.duration = hist["request_duration_seconds"]
        self.ttft = hist["time_to_first_token_seconds"]
        self.itl = hist["inter_token_latency_seconds"]
        self.isl = hist["input_sequence_tokens"]
        self.osl = hist["output_sequence_tokens"]
        self.cached_tokens = hist["cached_tokens"]
        tokenizer = Histogram(
            f"{p}_tokenizer_latency_ms",
            "Tokenizer latency in milliseconds (detokenize: mean per call over a request)",
            ("operation",),
            buckets=_TOKENIZER_MS,
            registry=r,
        )
        self.tokenize_ms = tokenizer.labels("tokenize")
        self.detokenize_ms = tokenizer.labels("detokenize")
        self.loop_lag = Histogram(
            f"{p}_event_loop_lag_seconds",
            "How much later than due the event loop ran a 10 ms timer (time every request "
            "waits for the loop)",
            (),
            buckets=_LOOP_LAG,
            registry=r,
        ).labels()
        self.migrations = Counter(
            f"{p}_model_migration",
            "Requests moved to another worker",
            ("model", "migration_type"),
            registry=r,
        )
        self.workers_lost = Counter(
            f"{p}_model_workers_lost",
            "Workers taken out of routing because their request-plane connection failed "
            "while discovery still listed them",
            m,
            registry=r,
        )
        self.model_gauges = {
            name: Gauge(f"{p}_model_{name}", help_text, m, registry=r)
            for name, help_text in (
                ("total_kv_blocks", "KV blocks of one worker"),
                ("max_num_seqs", "Max concurrent sequences of one worker"),
                ("max_num_batched_tokens", "Max tokens per forward pass of one worker"),
                ("context_length", "Context window in tokens"),
                ("kv_cache_block_size", "KV block size in tokens"),
                ("migration_limit", "Migration limit"),
                ("workers", "Workers serving the model"),
            )
        }
        self._models: dict[str, ModelMetrics] = {}
        self._worker_last: dict[tuple[str, int, int], WorkerLast] = {}
        self._view: WorkerView | None = None
        r.register(_ScrapeTimeCollector(self))

    def for_model(self, model: str) -> ModelMetrics:
        mm = self._models.get(model)
        if mm is None:
            mm = self._models[model] = ModelMetrics(self, model)
        return mm

    def watch_workers(self, view: WorkerView) -> None:
        """Read the per-worker gauges from `view` at each scrape."""
        self._view = view

    def worker_last(self, model: str, worker_id: int, dp_rank: int) -> WorkerLast:
        key = (model, worker_id, dp_rank)
        last = self._worker_last.get(key)
        if last is None:
            last = self._worker_last[key] = WorkerLast()
        return last

    def set_model_config(self, card: ModelCard, *, workers: int, migration_limit: int) -> None:
        g, name = self.model_gauges, card.name
        values = {
            "total_kv_blocks": card.total_kv_blocks,
            "max_num_seqs": card.max_num_seqs,
            "max_num_batched_tokens": card.max_num_batched_tokens,
            "context_length": card.context_length,
            "kv_cache_block_size": card.kv_block_size,
            "migration_limit": migration_limit,
            "workers": workers,
        }
        for key, value in values.items():
            if value is not None:
                g[key].labels(name).set(value)

    def remove_model(self, model: str) -> None:
        """The last worker left: drop the model's config gauges (counters stay)."""
        for gauge in self.model_gauges.values():
            with contextlib.suppress(KeyError):
                gauge.remove(model)

    def render(self) -> bytes:
        return generate_latest(self.registry)

    # --- scrape time -----------------------------------------------------------------------
    def _collect(self) -> Iterator[Metric]:
        p = self.prefix
        out_tokens = CounterMetricFamily(
            f"{p}_output_tokens", "Output tokens (counted as they stream)", labels=("model",)
        )
        hit_rate = GaugeMetricFamily(
            f"{p}_kv_hit_rate",
            "Cached prompt tokens / prompt tokens of finished requests, since start",
            labels=("model",),
        )
        for model, mm in self._models.items():
            out_tokens.add_metric([model], mm.output_tokens)
            if mm.prompt_sum:
                hit_rate.add_metric([model], mm.cached_sum / mm.prompt_sum)
        yield out_tokens
        yield hit_rate
        yield from self._collect_workers()

    def _collect_workers(self) -> Iterator[Metric]:
        p, labels = self.prefix, _WORKER_LABELS
        decode_blocks = GaugeMetricFamily(
            f"{p}_worker_active_decode_blocks",
            "Active KV decode blocks per worker, as the router sees them",
            labels=labels,
        )
        prefill_tokens = GaugeMetricFamily(
            f"{p}_worker_active_prefill_tokens",
            "Prompt tokens waiting for prefill per worker, as the router sees them",
            labels=labels,
        )
        ttft = GaugeMetricFamily(
            f"{p}_worker_last_time_to_first_token_seconds",
            "Last observed time to first token per worker (seconds)",
            labels=labels,
        )
        isl = GaugeMetricFamily(
            f"{p}_worker_last_input_sequence_tokens",
            "Prompt length of the request behind the last TTFT per worker",
            labels=labels,
        )
        itl = GaugeMetricFamily(
            f"{p}_worker_last_inter_token_latency_seconds",
            "Last observed inter-token latency per worker (seconds)",
            labels=labels,
        )
        view = self._view
        if view is not None:
            live = view.live_workers()
            gone = [k for k in self._worker_last if (k[0], k[1]) not in live]
            for key in gone:  # the worker left: its series go with it
                del self._worker_last[key]
            for load in view.worker_loads():
                values = [load.model, str(load.worker_id), str(load.dp_rank), WORKER_TYPE]
                decode_blocks.add_metric(values, load.active_decode_blocks)
                prefill_tokens.add_metric(values, load.active_prefill_tokens)
        for (model, worker_id, dp_rank), last in self._worker_last.items():
            values = [model, str(worker_id), str(dp_rank), WORKER_TYPE]
            if last.ttft_s is not None:
                ttft.add_metric(values, last.ttft_s)
            if last.isl is not None:
                isl.add_metric(values, last.isl)
            if last.itl_s is not None:
                itl.add_metric(values, last.itl_s)
        yield from (decode_blocks, prefill_tokens, ttft, isl, itl)


class _ScrapeTimeCollector:
    """The series computed when Prometheus scrapes, not on the request path."""

    def __init__(self, metrics: FrontendMetrics) -> None:
        self._metrics = metrics

    def collect(self) -> Iterator[Metric]:
        return self._metrics._collect()


class ModelMetrics:
    """One model's label children, and the per-request accounting that uses them."""

    __slots__ = (
        "cached",
        "cached_sum",
        "disconnected",
        "duration",
        "inflight",
        "isl",
        "itl",
        "migrations",
        "model",
        "osl",
        "output_tokens",
        "parent",
        "prompt_sum",
        "queued",
        "ttft",
    )

    def __init__(self, parent: FrontendMetrics, model: str) -> None:
        self.parent = parent
        self.model = model
        self.inflight = parent.inflight.labels(model)
        self.queued = parent.queued.labels(model)
        self.duration = parent.duration.labels(model)
        self.ttft = parent.ttft.labels(model)
        self.itl = parent.itl.labels(model)
        self.isl = parent.isl.labels(model)
        self.osl = parent.osl.labels(model)
        self.cached = parent.cached_tokens.labels(model)
        self.disconnected = parent.disconnected
        self.migrations = {
            kind: parent.migrations.labels(model, kind)
            for kind in ("new_request", "ongoing_request")
        }
        self.output_tokens = 0  # bumped as tokens stream (`output_tokens_total`)
        self.cached_sum = 0
        self.prompt_sum = 0

    def request_done(self, endpoint: str, streaming: bool, error_type: str | None) -> None:
        self.parent.requests.labels(
            self.model,
            endpoint,
            "stream" if streaming else "unary",
            "error" if error_type else "success",
            error_type or "",
        ).inc()

    def tokens_done(self, prompt: int, completion: int, cached: int) -> None:
        self.isl.observe(prompt)
        self.osl.observe(completion)
        self.cached.observe(cached)
        self.cached_sum += cached
        self.prompt_sum += prompt
