"""`dynamo_component_*` Prometheus metrics of a worker (the planner reads them: keep the names)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from dynamo.protocols.kv_events import LoadMetrics

_LABELS = ("dynamo_namespace", "dynamo_component", "dynamo_endpoint")


class ComponentMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.requests_total = Counter(
            "dynamo_component_requests_total", "Requests handled", _LABELS, registry=registry
        )
        self.errors_total = Counter(
            "dynamo_component_errors_total",
            "Requests that failed",
            (*_LABELS, "error_type"),
            registry=registry,
        )
        self.inflight_requests = Gauge(
            "dynamo_component_inflight_requests", "Requests in flight", _LABELS, registry=registry
        )
        self.request_duration_seconds = Histogram(
            "dynamo_component_request_duration_seconds",
            "Time from request to final frame",
            _LABELS,
            registry=registry,
        )
        self.kv_transfer_seconds = Histogram(
            "dynamo_component_kv_transfer_seconds",
            "Time a decode worker spent pulling a request's KV from a prefill worker",
            _LABELS,
            registry=registry,
        )
        self.kv_transfer_bytes = Counter(
            "dynamo_component_kv_transfer_bytes",
            "KV bytes a decode worker pulled from prefill workers",
            _LABELS,
            registry=registry,
        )
        self.kv_active_blocks = Gauge(
            "dynamo_component_kvstats_active_blocks",
            "KV blocks in use",
            (*_LABELS, "worker_id", "dp_rank"),
            registry=registry,
        )
        self.kv_total_blocks = Gauge(
            "dynamo_component_kvstats_total_blocks",
            "KV blocks in the cache",
            (*_LABELS, "worker_id", "dp_rank"),
            registry=registry,
        )
        self.kv_usage = Gauge(
            "dynamo_component_kvstats_gpu_cache_usage_percent",
            "Fraction of KV blocks in use",
            (*_LABELS, "worker_id", "dp_rank"),
            registry=registry,
        )
        self.prefix_hit_rate = Gauge(
            "dynamo_component_kvstats_gpu_prefix_cache_hit_rate",
            "Prefix cache hit rate",
            (*_LABELS, "worker_id", "dp_rank"),
            registry=registry,
        )

    def observe_load(self, labels: tuple[str, str, str], m: LoadMetrics) -> None:
        key = (*labels, str(m.worker_id), str(m.dp_rank))
        self.kv_active_blocks.labels(*key).set(m.kv_active_blocks)
        self.kv_total_blocks.labels(*key).set(m.kv_total_blocks)
        self.kv_usage.labels(*key).set(m.gpu_cache_usage_perc)
        self.prefix_hit_rate.labels(*key).set(m.gpu_prefix_cache_hit_rate)
