"""The frontend's disaggregation series: which path each request took, fallbacks, leg timings."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

from prometheus_client import Counter, Gauge
from prometheus_client.metrics_core import GaugeMetricFamily, Metric

from dynamo.frontend.metrics import FrontendMetrics, Histogram

_SECONDS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)

# Why a request was served aggregated although prefill workers exist(ed).
FALLBACK_REASONS = ("no_prefill_worker", "prefill_failed", "no_transfer_params", "transfer_failed")
# Why conditional disaggregation kept a request's prefill on its decode worker.
LOCAL_REASONS = ("short_uncached_prompt", "prefill_queue_full")


class DisaggMetrics:
    """`{prefix}_disagg_*`, `{prefix}_prefill_*` and `{prefix}_kv_transfer_*` per model."""

    def __init__(
        self,
        metrics: FrontendMetrics,
        decode_index_blocks: Callable[[], Iterable[tuple[str, int]]] | None = None,
    ) -> None:
        r, p, m = metrics.registry, metrics.prefix, ("model",)
        if decode_index_blocks is not None:
            r.register(
                _DecodeIndexCollector(f"{p}_disagg_decode_kv_index_blocks", decode_index_blocks)
            )
        self.requests = Counter(
            f"{p}_disagg_requests",
            "Requests of models with prefill workers, by the path they took (disaggregated: "
            "prefilled on a prefill worker, counted when the decode worker accepted the KV; "
            "aggregated: prefilled on the decode worker)",
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


class _DecodeIndexCollector:
    """Blocks the KV router indexes for a disaggregated model's decode workers (read at scrape
    time): what conditional disaggregation knows of their caches."""

    def __init__(self, name: str, source: Callable[[], Iterable[tuple[str, int]]]) -> None:
        self._name = name
        self._source = source

    def collect(self) -> Iterator[Metric]:
        family = GaugeMetricFamily(
            self._name, "KV blocks the router indexes on decode workers", labels=("model",)
        )
        for model, blocks in self._source():
            family.add_metric([model], blocks)
        yield family
