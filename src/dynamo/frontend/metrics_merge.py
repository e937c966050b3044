"""One `/metrics` view over the HTTP worker processes of `--num-http-workers N`.

Each process keeps its own `FrontendMetrics` (lock-free histograms, series computed at scrape
time from router state), so prometheus_client's multiprocess mode, which only knows its own
mmap-backed metric classes, does not fit. Instead the process that takes a `/metrics` request
reads its siblings' own expositions (over their unix sockets, see `http_workers`) and merges:

- counters and histograms (`_total`, `_bucket`, `_sum`, `_count`): summed; `_created`: the
  earliest;
- gauges of what each process holds (`inflight_requests`, `queued_requests`,
  `disconnected_clients`): summed;
- `kv_hit_rate`: recomputed from the summed `cached_tokens` and `input_sequence_tokens` sums;
- every other gauge is a view of state every process shares (model config from discovery,
  router load through replica sync, a worker's last observed latency): the largest value.

Names, labels and types are those of one process: `dynamo_frontend_*` stays as it is.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families

_SUMMED_GAUGES = ("inflight_requests", "queued_requests", "disconnected_clients")
_SUMMED_TYPES = ("counter", "histogram", "summary", "gaugehistogram")

SampleKey = tuple[str, tuple[tuple[str, str], ...]]


class _Family:
    """One merged family: the first process's name, help and type; samples by name+labels."""

    def __init__(self, metric: Metric) -> None:
        self.name = metric.name
        self.documentation = metric.documentation
        self.type = metric.type
        self.samples: dict[SampleKey, float] = {}

    def add(self, metric: Metric, summed: bool) -> None:
        for sample in metric.samples:
            key = (sample.name, tuple(sample.labels.items()))
            old = self.samples.get(key)
            if old is None:
                self.samples[key] = sample.value
            elif sample.name.endswith("_created"):
                self.samples[key] = min(old, sample.value)
            elif summed:
                self.samples[key] = old + sample.value
            else:
                self.samples[key] = max(old, sample.value)

    def metric(self) -> Metric:
        out = Metric(self.name, self.documentation, self.type)
        for (name, labels), value in self.samples.items():
            out.add_sample(name, dict(labels), value)
        return out


def merge_expositions(texts: Iterable[str], prefix: str) -> bytes:
    """The Prometheus text exposition of the processes' `texts` merged (see the module doc)."""
    summed_gauges = {f"{prefix}_{name}" for name in _SUMMED_GAUGES}
    hit_rate = f"{prefix}_kv_hit_rate"
    families: dict[str, _Family] = {}
    for text in texts:
        for metric in text_string_to_metric_families(text):
            family = families.get(metric.name)
            if family is None:
                family = families[metric.name] = _Family(metric)
            family.add(metric, metric.type in _SUMMED_TYPES or metric.name in summed_gauges)
    if hit_rate in families:
        _recompute_hit_rate(families, prefix)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Merged([f.metric() for f in families.values()]))
    return generate_latest(registry)


def _recompute_hit_rate(families: dict[str, _Family], prefix: str) -> None:
    """cached / prompt tokens per model, from the merged histogram sums (a max of ratios is
    not the ratio of the totals)."""
    cached = _sums(families.get(f"{prefix}_cached_tokens"), f"{prefix}_cached_tokens_sum")
    prompt = _sums(
        families.get(f"{prefix}_input_sequence_tokens"), f"{prefix}_input_sequence_tokens_sum"
    )
    family = families[f"{prefix}_kv_hit_rate"]
    for key in list(family.samples):
        labels = key[1]
        if prompt.get(labels):
            family.samples[key] = cached.get(labels, 0.0) / prompt[labels]


def _sums(family: _Family | None, sample_name: str) -> dict[tuple[tuple[str, str], ...], float]:
    if family is None:
        return {}
    return {labels: v for (name, labels), v in family.samples.items() if name == sample_name}


class _Merged:
    def __init__(self, metrics: list[Metric]) -> None:
        self._metrics = metrics

    def collect(self) -> Iterator[Metric]:
        return iter(self._metrics)
