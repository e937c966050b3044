"""Observe the traffic of one interval: from the frontends' `/metrics` or from Prometheus.

`FrontendScrape` (the embedded default) finds the frontends through discovery
(`v1/frontends/{namespace}/...`), scrapes their Prometheus text and takes differences between
two scrapes. `PrometheusQuery` asks a Prometheus server for the same numbers with Dynamo's
`increase(...[interval])` queries. Both return a `Traffic` or raise `TransportError`.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Protocol

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from dynamo.planner.decide import Traffic
from dynamo.runtime.discovery.base import FRONTENDS_ROOT, Discovery
from dynamo.runtime.errors import TransportError

log = logging.getLogger(__name__)

PREFIX = "dynamo_frontend"
REQUESTS = f"{PREFIX}_requests_total"
INFLIGHT = f"{PREFIX}_inflight_requests"
# histogram -> Traffic field, and the factor to its unit
HISTOGRAMS = {
    "input_sequence_tokens": ("isl", 1.0),
    "output_sequence_tokens": ("osl", 1.0),
    "time_to_first_token_seconds": ("ttft_ms", 1000.0),
    "inter_token_latency_seconds": ("itl_ms", 1000.0),
    "request_duration_seconds": ("request_duration_s", 1.0),
}
HTTP_TIMEOUT_S = 5.0


class MetricSource(Protocol):
    async def start(self) -> None:
        """Take the baseline the first interval is measured from."""
        ...

    async def traffic(self, interval_s: float) -> Traffic:
        """The traffic since the previous call (or `start`)."""
        ...

    async def arrived(self) -> float | None:
        """Requests that arrived at the frontends so far (finished plus in flight), read
        now, for the load checks' arrival rate; None when this source cannot tell."""
        ...

    async def close(self) -> None: ...


@dataclass
class Totals:
    """Counter values of one scrape: requests, and (sum, count) per histogram."""

    requests: float = 0.0
    inflight: float = 0.0  # a gauge: requests being served at the scrape
    sums: dict[str, float] = field(default_factory=dict)
    counts: dict[str, float] = field(default_factory=dict)

    @property
    def arrived(self) -> float:
        """Requests that arrived so far: the finished ones (a counter) and those in flight."""
        return self.requests + self.inflight

    def add(self, other: Totals) -> None:
        self.requests += other.requests
        self.inflight += other.inflight
        for name, value in other.sums.items():
            self.sums[name] = self.sums.get(name, 0.0) + value
        for name, value in other.counts.items():
            self.counts[name] = self.counts.get(name, 0.0) + value


def parse_totals(text: str, model: str | None = None) -> Totals:
    """The frontend counters in Prometheus exposition `text`, summed over the label sets
    (only `model`'s series when given; model names compare case-insensitively)."""
    totals = Totals()
    wanted = model.lower() if model else None
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if wanted is not None and sample.labels.get("model", "").lower() != wanted:
                continue
            name = sample.name
            if name == REQUESTS:
                totals.requests += sample.value
                continue
            if name == INFLIGHT:
                totals.inflight += sample.value
                continue
            for histogram in HISTOGRAMS:
                base = f"{PREFIX}_{histogram}"
                if name == f"{base}_sum":
                    totals.sums[histogram] = totals.sums.get(histogram, 0.0) + sample.value
                elif name == f"{base}_count":
                    totals.counts[histogram] = totals.counts.get(histogram, 0.0) + sample.value
    return totals


def _increase(new: float, old: float) -> float:
    """A counter's increase; a lower value means the process restarted from zero."""
    return new - old if new >= old else new


def increase(old: Totals | None, new: Totals) -> Totals:
    """What the counters of one frontend grew by between two scrapes."""
    base = old or Totals()
    out = Totals(requests=_increase(new.requests, base.requests))
    for name, value in new.sums.items():
        out.sums[name] = _increase(value, base.sums.get(name, 0.0))
    for name, value in new.counts.items():
        out.counts[name] = _increase(value, base.counts.get(name, 0.0))
    return out


def to_traffic(grown: Totals) -> Traffic:
    """Request count and per-request means of an interval's counter increases."""
    means: dict[str, float | None] = {}
    for histogram, (name, factor) in HISTOGRAMS.items():
        count = grown.counts.get(histogram, 0.0)
        means[name] = grown.sums.get(histogram, 0.0) / count * factor if count > 0 else None
    return Traffic(num_requests=grown.requests, **means)


class FrontendScrape:
    """Scrape every frontend of `namespace` found in discovery; see the module docstring."""

    def __init__(
        self,
        discovery: Discovery,
        namespace: str,
        session: aiohttp.ClientSession,
        model: str | None = None,
    ) -> None:
        self._discovery = discovery
        self._prefix = f"{FRONTENDS_ROOT}/{namespace}/"
        self._session = session
        self._model = model
        self._last: dict[str, Totals] = {}  # frontend key -> its previous scrape
        self._arrived_last: dict[str, float] = {}  # frontend key -> its last arrival count
        self._arrived_sum = 0.0

    async def _scrape_all(self) -> dict[str, Totals]:
        frontends = await self._discovery.get_prefix(self._prefix)
        if not frontends:
            raise TransportError(f"no frontend registered under {self._prefix} in discovery")
        keys = sorted(frontends)
        results = await asyncio.gather(
            *(self._scrape(str(frontends[k].get("metrics_url", ""))) for k in keys),
            return_exceptions=True,
        )
        scraped: dict[str, Totals] = {}
        for key, result in zip(keys, results, strict=True):
            if isinstance(result, BaseException):
                log.warning("cannot scrape frontend %s: %s", key.rsplit("/", 1)[-1], result)
            else:
                scraped[key] = result
        if not scraped:
            raise TransportError("no frontend answered its /metrics")
        return scraped

    async def _scrape(self, url: str) -> Totals:
        try:
            timeout = aiohttp.ClientTimeout(total=HTTP_TIMEOUT_S)
            async with self._session.get(url, timeout=timeout) as response:
                if response.status != 200:
                    raise TransportError(f"{url}: HTTP {response.status}")
                text = await response.text()
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise TransportError(f"{url}: {exc or type(exc).__name__}") from exc
        return parse_totals(text, self._model)

    async def start(self) -> None:
        try:
            self._last = await self._scrape_all()
        except TransportError as exc:
            log.info("no frontend metrics yet (%s); the first interval starts from zero", exc)

    async def traffic(self, interval_s: float) -> Traffic:
        scraped = await self._scrape_all()
        grown = Totals()
        for key, totals in scraped.items():
            grown.add(increase(self._last.get(key), totals))
        self._last = scraped
        return to_traffic(grown)

    async def arrived(self) -> float | None:
        """Arrivals counted since the first call, over every frontend that answers: each
        frontend adds what its count grew by since it was last read (a frontend seen for the
        first time adds nothing, so its earlier traffic does not read as a burst; one that
        restarted adds its new count)."""
        try:
            scraped = await self._scrape_all()
        except TransportError as exc:
            log.debug("no arrival count: %s", exc)
            return None
        for key, totals in scraped.items():
            last = self._arrived_last.get(key)
            if last is not None:
                self._arrived_sum += _increase(totals.arrived, last)
            self._arrived_last[key] = totals.arrived
        return self._arrived_sum

    async def close(self) -> None:
        return None


class PrometheusQuery:
    """Dynamo's queries against a Prometheus HTTP API (`--metric-pulling-prometheus-endpoint`)."""

    def __init__(
        self, endpoint: str, session: aiohttp.ClientSession, model: str | None = None
    ) -> None:
        self._url = endpoint.rstrip("/") + "/api/v1/query"
        self._session = session
        self._selector = f'{{model=~"(?i){model}"}}' if model else ""

    async def start(self) -> None:
        return None

    async def _query(self, query: str) -> float | None:
        try:
            timeout = aiohttp.ClientTimeout(total=HTTP_TIMEOUT_S)
            async with self._session.get(
                self._url, params={"query": query}, timeout=timeout
            ) as response:
                body = await response.json(content_type=None)
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            raise TransportError(f"Prometheus at {self._url}: {exc or type(exc).__name__}") from exc
        if not isinstance(body, dict) or body.get("status") != "success":
            error = body.get("error") if isinstance(body, dict) else body
            raise TransportError(f"Prometheus at {self._url} refused {query!r}: {error}")
        result = body.get("data", {}).get("result", [])
        if not result:
            return None
        try:
            return float(result[0]["value"][1])
        except (KeyError, IndexError, TypeError, ValueError) as exc:
            raise TransportError(
                f"Prometheus at {self._url}: unexpected answer {result!r}"
            ) from exc

    def _increase(self, metric: str, window: str) -> str:
        return f"sum(increase({metric}{self._selector}[{window}]))"

    async def traffic(self, interval_s: float) -> Traffic:
        window = f"{max(round(interval_s), 1)}s"
        grown = Totals(requests=await self._query(self._increase(REQUESTS, window)) or 0.0)
        for histogram in HISTOGRAMS:
            base = f"{PREFIX}_{histogram}"
            grown.sums[histogram] = await self._query(self._increase(f"{base}_sum", window)) or 0.0
            grown.counts[histogram] = (
                await self._query(self._increase(f"{base}_count", window)) or 0.0
            )
        return to_traffic(grown)

    async def arrived(self) -> float | None:
        """Not read from Prometheus: its scrape interval is longer than a load check."""
        return None

    async def close(self) -> None:
        return None
