"""The frontend's Prometheus metrics, with Dynamo's names and labels (`dynamo_frontend_*`).

The planner reads these, so the names are an API. Each app owns its `CollectorRegistry`;
per-model label children are resolved once (`for_model`) to keep the request path cheap.
"""

from __future__ import annotations

import contextlib
from bisect import bisect_left
from collections.abc import Iterator, Sequence

from prometheus_client import CollectorRegistry, Counter, Gauge
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.metrics_core import HistogramMetricFamily, Metric

from dynamo.protocols.model_card import ModelCard

CONTENT_TYPE = CONTENT_TYPE_LATEST

_SECONDS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
_ITL = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 1, 2.5)
_TOKENS = (0, 16, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384, 32768, 65536, 131072)


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


class FrontendMetrics:
    """Every `dynamo_frontend_*` series (the prefix is configurable)."""

    def __init__(self, prefix: str = "dynamo_frontend") -> None:
        self.registry = CollectorRegistry(auto_describe=False)
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
        self.duration = Histogram(
            f"{p}_request_duration_seconds", "Request duration", m, buckets=_SECONDS, registry=r
        )
        self.ttft = Histogram(
            f"{p}_time_to_first_token_seconds",
            "Time to first token",
            m,
            buckets=_SECONDS,
            registry=r,
        )
        self.itl = Histogram(
            f"{p}_inter_token_latency_seconds",
            "Time between output tokens",
            m,
            buckets=_ITL,
            registry=r,
        )
        self.isl = Histogram(
            f"{p}_input_sequence_tokens",
            "Prompt length in tokens",
            m,
            buckets=_TOKENS,
            registry=r,
        )
        self.osl = Histogram(
            f"{p}_output_sequence_tokens",
            "Completion length in tokens",
            m,
            buckets=_TOKENS,
            registry=r,
        )
        self.output_tokens = Counter(f"{p}_output_tokens", "Output tokens", m, registry=r)
        self.cached_tokens = Histogram(
            f"{p}_cached_tokens",
            "Prompt tokens served from the KV cache",
            m,
            buckets=_TOKENS,
            registry=r,
        )
        self.kv_hit_rate = Gauge(
            f"{p}_kv_hit_rate",
            "Cached prompt tokens / prompt tokens, since start",
            m,
            registry=r,
        )
        self.migrations = Counter(
            f"{p}_model_migration",
            "Requests moved to another worker",
            ("model", "migration_type"),
            registry=r,
        )
        gauge = {
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
        self.model_gauges = gauge
        self._models: dict[str, ModelMetrics] = {}

    def for_model(self, model: str) -> ModelMetrics:
        mm = self._models.get(model)
        if mm is None:
            mm = self._models[model] = ModelMetrics(self, model)
        return mm

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


class ModelMetrics:
    """One model's label children, and the per-request accounting that uses them."""

    __slots__ = (
        "_cached_sum",
        "_hit_rate",
        "_prompt_sum",
        "cached",
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
        self.output_tokens = parent.output_tokens.labels(model)
        self.cached = parent.cached_tokens.labels(model)
        self._hit_rate = parent.kv_hit_rate.labels(model)
        self.disconnected = parent.disconnected
        self.migrations = {
            kind: parent.migrations.labels(model, kind)
            for kind in ("new_request", "ongoing_request")
        }
        self._cached_sum = 0
        self._prompt_sum = 0

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
        self.output_tokens.inc(completion)
        self.cached.observe(cached)
        self._cached_sum += cached
        self._prompt_sum += prompt
        if self._prompt_sum:
            self._hit_rate.set(self._cached_sum / self._prompt_sum)
