"""The planner loop: every interval observe, predict, decide (the pure function), act.

Whatever goes wrong in one interval (no metrics, no profile, a connector that cannot reach
its environment, a graph without the right services) is one log line and a hold; the loop
goes on and tries again next interval, so bad input never turns into a crash loop.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from dynamo.planner.config import PlannerConfig
from dynamo.planner.connectors.base import Role, ScalingConnector
from dynamo.planner.decide import (
    Decision,
    Forecast,
    Inputs,
    RoleLoad,
    Traffic,
    decide,
    decide_load,
    prefill_worker_tps,
    queue_inflow_tps,
)
from dynamo.planner.metrics import PlannerMetrics
from dynamo.planner.observe import MetricSource
from dynamo.planner.predictors import LoadPredictor, make_predictor
from dynamo.planner.profile import EngineProfile, load_profile, mocker_profile
from dynamo.runtime.errors import ConfigError, DynamoError

log = logging.getLogger("dynamo.planner")
# load checks whose frontend arrival counts make the arrival rate's window (about 2 s at the
# default 1 s cadence: long enough that a burst stands out of Poisson noise, short enough to
# see it while it lasts)
ARRIVAL_SAMPLES = 3


class LoadView(Protocol):
    """Where the loop reads worker load (`WorkerLoads`, or a simulator)."""

    def snapshot(self) -> dict[Role, RoleLoad]: ...


def engine_profile(config: PlannerConfig) -> EngineProfile:
    """The profile in `--profile-results-dir`; with `--backend mocker` and none there, the
    mocker's timing model. Raises ConfigError when there is none to use."""
    try:
        return load_profile(config.profile_results_dir)
    except ConfigError:
        if config.backend != "mocker":
            raise
        return mocker_profile(config.mocker_speedup_ratio)


def _is_rising(observed: float, before: Sequence[float]) -> bool:
    """Whether the load rises: the last interval's request count above the mean of the (up
    to) three intervals before it. A mean, not the one interval before, so one quiet
    interval of Poisson noise does not read as a rise."""
    window = list(before)[-3:]
    return bool(window) and observed > sum(window) / len(window)


class Planner:
    def __init__(
        self,
        config: PlannerConfig,
        connector: ScalingConnector,
        source: MetricSource,
        *,
        loads: LoadView | None = None,
        metrics: PlannerMetrics | None = None,
        profile_loader: Callable[[PlannerConfig], EngineProfile] = engine_profile,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self.connector = connector
        self.source = source
        self.loads = loads
        self.metrics = metrics or PlannerMetrics()
        self._profile_loader = profile_loader
        self._profile: EngineProfile | None = None
        self._clock = clock
        self._predictors: dict[str, LoadPredictor] = {
            name: make_predictor(
                config.load_predictor,
                window=config.prophet_window_size,
                interval_s=config.interval_s,
                kalman=(
                    config.kalman_q_level,
                    config.kalman_q_trend,
                    config.kalman_r,
                    config.kalman_min_points,
                ),
            )
            for name in ("requests", "isl", "osl")
        }
        self._last_scale_up_s: dict[Role, float] = {}
        self._observed: deque[float] = deque(maxlen=3)  # the last intervals' request counts
        self.last_decision: Decision | None = None
        self.last_forecast: Forecast | None = None
        self._last_load: tuple[float, dict[Role, RoleLoad]] | None = None
        self._arrived: deque[tuple[float, float]] = deque(maxlen=ARRIVAL_SAMPLES)
        self._load_check_loaded_profile = False

    def _profile_now(self) -> EngineProfile | None:
        if self._profile is None:
            try:
                self._profile = self._profile_loader(self.config)
                log.info("planning with %s", self._profile.source)
            except ConfigError as exc:
                log.warning("%s", exc)
        return self._profile

    def _load_now(
        self, now: float, profile: EngineProfile | None
    ) -> tuple[dict[Role, RoleLoad], float | None]:
        """The workers' load, and the prefill inflow measured since the last snapshot."""
        if self.loads is None:
            return {}, None
        load = self.loads.snapshot()
        before, self._last_load = self._last_load, (now, load)
        if before is None or profile is None:
            return load, None
        role: Role = "prefill" if "prefill" in self.config.roles else "decode"
        isl = self.last_forecast.isl if self.last_forecast else float(self.config.isl)
        inflow = queue_inflow_tps(
            before[1].get(role),
            load.get(role),
            now - before[0],
            prefill_worker_tps(self.config, profile, isl),
            since_empty=True,
            # a burst's onset: workers batch the prompts queued on them, and clear them about
            # as fast as the profile prefills one prompt of the queue's length
            batched_tps=lambda queued: prefill_worker_tps(self.config, profile, queued),
            prompt_tokens=isl if role == "prefill" else 0.0,
        )
        return load, inflow

    async def _arrivals_now(self, now: float) -> tuple[float, float] | None:
        """(requests that arrived, seconds) over the last load checks, from the frontends'
        counts; None until there are two counts, or when the source cannot count."""
        try:
            arrived = await self.source.arrived()
        except DynamoError as exc:
            log.debug("no arrival count: %s", exc)
            arrived = None
        if arrived is None:
            self._arrived.clear()
            return None
        if self._arrived and arrived < self._arrived[-1][1]:
            self._arrived.clear()  # a frontend restarted or left: start the window again
        self._arrived.append((now, arrived))
        first_s, first = self._arrived[0]
        if now - first_s <= 0:
            return None
        return arrived - first, now - first_s

    async def _observe(self) -> Traffic | None:
        try:
            return await self.source.traffic(self.config.interval_s)
        except DynamoError as exc:
            log.warning("no traffic metrics this interval: %s", exc)
            return None

    def _forecast(self, traffic: Traffic | None) -> Forecast | None:
        p = self._predictors
        if traffic is not None:
            p["requests"].add(traffic.num_requests)
            if traffic.num_requests > 0:
                if traffic.isl is not None:
                    p["isl"].add(traffic.isl)
                if traffic.osl is not None:
                    p["osl"].add(traffic.osl)
        requests = p["requests"].predict()
        if requests is None:
            return None
        rising = False
        if traffic is not None:
            rising = _is_rising(traffic.num_requests, self._observed)
            self._observed.append(traffic.num_requests)
            requests = max(requests, traffic.num_requests)  # never plan below what was seen
        isl, osl = p["isl"].predict(), p["osl"].predict()
        return Forecast(
            requests,
            isl if isl is not None else float(self.config.isl),
            osl if osl is not None else float(self.config.osl),
            rising=rising,
        )

    async def step(self) -> Decision | None:
        """One interval: returns the decision (None when the live replicas were unreadable)."""
        traffic = await self._observe()
        forecast = self._forecast(traffic)
        self.last_forecast = forecast
        self.metrics.record_traffic(traffic)
        self.metrics.record_forecast(forecast)
        try:
            live = await self.connector.live_replicas()
        except DynamoError as exc:
            log.warning("hold: cannot read the live replicas: %s", exc)
            self.metrics.decisions.labels("error").inc()
            return None
        now = self._clock()
        profile = self._profile_now() if self.config.enable_throughput_scaling else None
        load, inflow = self._load_now(now, profile)
        decision = decide(
            self.config,
            Inputs(
                now_s=now,
                live=live,
                traffic=traffic,
                forecast=forecast,
                load=load,
                profile=profile,
                last_scale_up_s=self._last_scale_up_s,
                prefill_inflow_tps=inflow,
            ),
        )
        self.last_decision = decision
        summary = decision.summary()
        outcome = "hold" if decision.hold else ("scale" if decision.changed else "keep")
        if decision.changed and self.config.no_operation:
            outcome = "dry_run"
            summary = "dry run (--no-operation): " + summary
        log.info("%s", summary)
        if outcome == "scale":
            try:
                await self.connector.scale(decision.targets, summary)
            except DynamoError as exc:
                log.warning("hold: scaling failed: %s", exc)
                outcome = "error"
            else:
                for role, target in decision.targets.items():
                    if target > decision.live.get(role, 0):
                        self._last_scale_up_s[role] = now
        self.metrics.record_decision(decision, outcome)
        return decision

    async def check_load(self) -> Decision | None:
        """Between decisions: add a worker where the workers' load is over its threshold."""
        if self.loads is None or not self.config.enable_load_scaling:
            return None
        try:
            live = await self.connector.live_replicas()
        except DynamoError as exc:
            log.debug("load check skipped: %s", exc)
            return None
        now = self._clock()
        if self._profile is None and not self._load_check_loaded_profile:
            self._load_check_loaded_profile = True  # once: a missing profile warns per decision
            self._profile_now()
        load, inflow = self._load_now(now, self._profile)
        arrivals = await self._arrivals_now(now)
        decision = decide_load(
            self.config,
            Inputs(
                now_s=now,
                live=live,
                load=load,
                profile=self._profile,
                forecast=self.last_forecast,
                prefill_inflow_tps=inflow,
                arrivals=arrivals,
            ),
        )
        if not decision.changed:
            return decision
        summary = "load check: " + decision.summary()
        if self.config.no_operation:
            log.info("dry run (--no-operation): %s", summary)
            self.metrics.record_decision(decision, "dry_run")
            return decision
        log.info("%s", summary)
        try:
            await self.connector.scale(decision.targets, summary)
        except DynamoError as exc:
            log.warning("hold: scaling failed: %s", exc)
            self.metrics.record_decision(decision, "error")
            return decision
        for role, target in decision.targets.items():
            if target > decision.live.get(role, 0):
                self._last_scale_up_s[role] = now
        self.metrics.record_decision(decision, "scale")
        return decision

    async def run(self) -> None:
        """Decide every interval, check load every load interval, until cancelled."""
        await self.source.start()
        interval = self.config.interval_s
        load_every = self.config.load_adjustment_interval_seconds
        next_at = self._clock() + interval
        while True:
            now = self._clock()
            if load_every > 0 and now + load_every < next_at:
                await asyncio.sleep(load_every)
                try:
                    await self.check_load()
                except DynamoError as exc:
                    log.warning("hold: %s", exc)
                continue
            await asyncio.sleep(max(0.0, next_at - now))
            next_at = max(next_at + interval, self._clock() + interval / 2)
            try:
                await self.step()
            except DynamoError as exc:  # a planner must outlive any one bad interval
                log.warning("hold: %s", exc)

    def status(self) -> dict[str, Any]:
        """The last decision as JSON-able data (served on the planner's endpoint)."""
        d = self.last_decision
        if d is None:
            return {"decision": None}
        return {
            "decision": {
                "live": d.live,
                "targets": d.targets,
                "hold": d.hold,
                "changed": d.changed,
                "reasons": list(d.reasons),
            }
        }
