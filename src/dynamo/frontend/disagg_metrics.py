"""The frontend's disaggregation series: which path each request took, fallbacks, leg timings."""

from __future__ import annotations

from prometheus_client import Counter, Gauge

from dynamo.frontend.metrics import FrontendMetrics, Histogram

_SECONDS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)

# Why a request was served aggregated although prefill workers exist(ed).
FALLBACK_REASONS = ("no_prefill_worker", "prefill_failed", "no_transfer_params", "transfer_failed")
# Why conditional disaggregation kept a request's prefill on its decode worker.
LOCAL_REASONS = ("short_uncached_prompt", "prefill_queue_full")


class DisaggMetrics:
    """`{prefix}_disagg_*`, `{prefix}_prefill_*` and `{prefix}_kv_transfer_*` per model."""

    def __init__(self, metrics: FrontendMetrics) -> None:
        r, p, m = metrics.registry, metrics.prefix, ("model",)
        self.requests = Counter(
            f"{p}_disagg_requests",
            "Requests of models with prefill workers, by the path they took "
            "(disaggregated: prefilled on a prefill worker; aggregated: on the decode worker)",
            ("model", "path"),
            registry=r,
        )
        self.fallbacks = Counter(
            f"{p}_disagg_fallbacks",
            "Requests served aggregated because disaggregation failed, by reason",
            ("model", "reason"),
            registry=r,
        )
        self.local_prefills = Counter(
            f"{p}_disagg_local_prefills",
            "Requests conditional disaggregation prefilled on their decode worker, by reason",
            ("model", "reason"),
            registry=r,
        )
        self.prefill_inflight = Gauge(
            f"{p}_prefill_inflight_requests", "Prefill legs in flight", m, registry=r
        )
        self.prefill_duration = Histogram(
            f"{p}_prefill_duration_seconds",
            "Time from sending the prefill leg to its transfer params",
            m,
            buckets=_SECONDS,
            registry=r,
        )
        self.kv_transfer_duration = Histogram(
            f"{p}_kv_transfer_duration_seconds",
            "KV transfer time the decode worker reported",
            m,
            buckets=_SECONDS,
            registry=r,
        )
        self.kv_transfer_bytes = Counter(
            f"{p}_kv_transfer_bytes", "KV bytes decode workers pulled", m, registry=r
        )
