"""`dynamo_planner_*` Prometheus metrics: what the planner observed, predicted and decided."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge

from dynamo.planner.decide import Decision, Forecast, Traffic

OBSERVED = ("requests", "isl", "osl", "ttft_ms", "itl_ms", "request_duration_s")


class PlannerMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry(auto_describe=False)
        r = self.registry
        self.observed = Gauge(
            "dynamo_planner_observed",
            "Last interval as the frontends saw it (requests; mean isl, osl, ttft_ms, itl_ms, "
            "request_duration_s)",
            ("quantity",),
            registry=r,
        )
        self.predicted = Gauge(
            "dynamo_planner_predicted",
            "Forecast for the next interval (requests, isl, osl)",
            ("quantity",),
            registry=r,
        )
        self.desired = Gauge(
            "dynamo_planner_desired_replicas",
            "Replicas the last decision asked for",
            ("role",),
            registry=r,
        )
        self.actual = Gauge(
            "dynamo_planner_actual_replicas",
            "Replicas live when the last decision was made",
            ("role",),
            registry=r,
        )
        self.correction = Gauge(
            "dynamo_planner_correction_factor",
            "Observed / profiled latency (prefill: TTFT, decode: ITL)",
            ("role",),
            registry=r,
        )
        self.decisions = Counter(
            "dynamo_planner_decisions",
            "Decisions by outcome (scale, keep, hold, dry_run, error)",
            ("outcome",),
            registry=r,
        )

    def record_traffic(self, traffic: Traffic | None) -> None:
        if traffic is None:
            return
        self.observed.labels("requests").set(traffic.num_requests)
        for name in OBSERVED[1:]:
            value = getattr(traffic, name)
            if value is not None:
                self.observed.labels(name).set(value)

    def record_forecast(self, forecast: Forecast | None) -> None:
        if forecast is None:
            return
        self.predicted.labels("requests").set(forecast.num_requests)
        self.predicted.labels("isl").set(forecast.isl)
        self.predicted.labels("osl").set(forecast.osl)

    def record_decision(self, decision: Decision, outcome: str) -> None:
        for role, count in decision.live.items():
            self.actual.labels(role).set(count)
        for role, count in decision.targets.items():
            self.desired.labels(role).set(count)
        if decision.prefill_correction is not None:
            self.correction.labels("prefill").set(decision.prefill_correction)
        if decision.decode_correction is not None:
            self.correction.labels("decode").set(decision.decode_correction)
        self.decisions.labels(outcome).inc()
