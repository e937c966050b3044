"""The planner's decision: a pure function of observations, forecast, profile and config.

Per role it takes the largest replica count any enabled signal asks for (scale up), and goes
lower only when every signal agrees, the role has not scaled up within the cooldown and the
remaining workers carry the load with headroom (scale down). Signals:

- throughput: Dynamo's formulas. Prefill replicas = ceil(prompt tokens/s to serve /
  (profiled prefill tokens/s per GPU at the ISL x GPUs per worker x the busy fraction that
  leaves room for queueing within the TTFT target)), demand corrected by min(1, observed /
  profiled TTFT), for the forecast request count plus `--forecast-margin-sigmas` of its
  Poisson standard deviation (`--rising-margin-sigmas` while the load rises), *plus the
  prompt tokens queued on the workers now* (their #10528: bursts queue, so queueing must
  count). Decode replicas = ceil(output tokens/s /
  (throughput per GPU at the ITL target, corrected by observed / profiled ITL, x GPUs)).
- SLA guard: observed TTFT (ITL) above target while the profile says an idle engine meets it
  means the workers queue: one more prefill (decode) worker, unless the workers' queue is
  below its scale-down threshold now (those requests queued earlier; they keep up now).
- load: mean queued prefill tokens per prefill worker, mean KV usage of decode workers,
  against up / down thresholds.

Then minimums, the per-decision step limit and the GPU budget (Dynamo's proportional rule).
Everything starts from the replicas live now (their #4420), never from a remembered target.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from dynamo.planner.config import PlannerConfig
from dynamo.planner.connectors.base import Role
from dynamo.planner.profile import EngineProfile

CORRECTION_BOUNDS = (0.1, 10.0)


@dataclass(frozen=True)
class Traffic:
    """What the frontends saw in the last interval (means per request; None without data)."""

    num_requests: float
    isl: float | None = None
    osl: float | None = None
    ttft_ms: float | None = None
    itl_ms: float | None = None
    request_duration_s: float | None = None


@dataclass(frozen=True)
class Forecast:
    """Predicted requests in the next interval, and their mean ISL and OSL."""

    num_requests: float
    isl: float
    osl: float
    rising: bool = False  # the load grew from the interval before to the last one


@dataclass(frozen=True)
class RoleLoad:
    """The workers of one role right now: how many report, and their means."""

    workers: int
    queued_prefill_tokens: float = 0.0  # mean per worker
    kv_usage: float = 0.0  # mean fraction 0..1
    queued_workers: int | None = None  # workers with prompt tokens queued (None: not known)
    # mean per worker of the requests its engine runs now; on a prefill worker each is a prompt
    # in the step being computed, which the queued tokens above no longer count
    running_requests: float = 0.0


@dataclass(frozen=True)
class Inputs:
    now_s: float
    live: Mapping[Role, int]
    traffic: Traffic | None = None
    forecast: Forecast | None = None
    load: Mapping[Role, RoleLoad] = field(default_factory=dict)
    profile: EngineProfile | None = None
    last_scale_up_s: Mapping[Role, float] = field(default_factory=dict)
    # prompt tokens/s arriving at the prefill role, from its queue's growth (`queue_inflow_tps`)
    prefill_inflow_tps: float | None = None
    # requests that arrived at the frontends over the last seconds: (count, seconds)
    arrivals: tuple[float, float] | None = None


@dataclass(frozen=True)
class Decision:
    live: dict[Role, int]
    targets: dict[Role, int]
    reasons: tuple[str, ...]
    hold: bool = False  # no decision could be made (the reasons say why)
    prefill_correction: float | None = None
    decode_correction: float | None = None

    @property
    def changed(self) -> bool:
        return not self.hold and any(self.targets[r] != self.live.get(r) for r in self.targets)

    def summary(self) -> str:
        counts = ", ".join(f"{r} {self.live.get(r)}->{t}" for r, t in self.targets.items())
        verb = "hold" if self.hold else ("scale" if self.changed else "keep")
        return f"{verb} [{counts}]: " + "; ".join(self.reasons)


@dataclass
class _Wish:
    up: int  # at least this many
    down: int  # may go as low as this
    signals: int = 0


def _hold(inputs: Inputs, config: PlannerConfig, reason: str) -> Decision:
    live = {r: inputs.live.get(r, 0) for r in config.roles}
    return Decision(live, dict(live), (reason,), hold=True)


def _clamp(value: float) -> float:
    low, high = CORRECTION_BOUNDS
    return min(max(value, low), high)


def decide_load(config: PlannerConfig, inputs: Inputs) -> Decision:
    """The check between decisions: one more worker for each role whose workers' queue or KV
    usage is over its up threshold, within the GPU budget. Nothing goes down here; that waits
    for `decide`."""
    roles = config.roles
    if any(r not in inputs.live for r in roles):
        return _hold(inputs, config, "no live replica count")
    live = {r: inputs.live[r] for r in roles}
    wishes = {r: _Wish(up=0, down=live[r]) for r in roles}
    reasons: list[str] = []
    _load(config, inputs, live, wishes, reasons)
    targets = {r: max(live[r], wishes[r].up) for r in roles}
    grown = [r for r in roles if targets[r] > live[r]]
    if not grown:
        return Decision(live, targets, ("load within thresholds",))
    budget = config.max_gpu_budget
    if budget != -1 and sum(n * config.engine_gpus(r) for r, n in targets.items()) > budget:
        return Decision(live, live, (f"load calls for more workers; at --max-gpu-budget {budget}",))
    return Decision(live, targets, tuple(r for r in reasons if r.endswith("one more")))


def decide(config: PlannerConfig, inputs: Inputs) -> Decision:
    """Target replicas per role of `config.roles`; see the module docstring."""
    roles = config.roles
    missing = [r for r in roles if r not in inputs.live]
    if missing:
        return _hold(inputs, config, f"no live replica count for {', '.join(missing)}")
    live = {r: inputs.live[r] for r in roles}
    floor_gpus = sum(config.min_endpoint * config.engine_gpus(r) for r in roles)
    if config.max_gpu_budget != -1 and floor_gpus > config.max_gpu_budget:
        return _hold(
            inputs,
            config,
            f"--max-gpu-budget {config.max_gpu_budget} is below the minimums "
            f"({config.min_endpoint} per role = {floor_gpus} GPUs): not scaling",
        )
    reasons: list[str] = []
    wishes = {r: _Wish(up=0, down=live[r]) for r in roles}
    corrections: dict[str, float | None] = {"prefill": None, "decode": None}
    if config.enable_throughput_scaling:
        _throughput(config, inputs, live, wishes, reasons, corrections)
    _sla_guard(config, inputs, live, wishes, reasons)
    if config.enable_load_scaling:
        _load(config, inputs, live, wishes, reasons)
    if all(w.signals == 0 for w in wishes.values()):
        return _hold(inputs, config, "no traffic observed yet and no worker load: holding")

    targets: dict[Role, int] = {}
    cooldown_s = config.scale_down_cooldown_intervals * config.interval_s
    for role in roles:
        wish, now = wishes[role], live[role]
        if wish.signals == 0:
            target = now
        elif wish.up > now:
            target = wish.up
        elif wish.down < now:
            since = inputs.now_s - inputs.last_scale_up_s.get(role, -math.inf)
            if since < cooldown_s:
                reasons.append(
                    f"{role}: scale-down waits {cooldown_s - since:.0f}s more (cooldown after "
                    "a scale-up)"
                )
                target = now
            else:
                target = wish.down
        else:
            target = now
        step = config.max_throughput_scaling_replicas
        target = min(max(target, now - step), now + step)
        targets[role] = max(target, config.min_endpoint)
    _apply_budget(config, targets, reasons)
    return Decision(
        live,
        targets,
        tuple(reasons),
        prefill_correction=corrections["prefill"],
        decode_correction=corrections["decode"],
    )


def _throughput(
    config: PlannerConfig,
    inputs: Inputs,
    live: Mapping[Role, int],
    wishes: dict[Role, _Wish],
    reasons: list[str],
    corrections: dict[str, float | None],
) -> None:
    profile, forecast, traffic = inputs.profile, inputs.forecast, inputs.traffic
    if profile is None:
        reasons.append("throughput scaling off: no profile data")
        return
    if forecast is None:
        return  # no traffic seen yet: nothing to size from
    interval = config.interval_s
    isl, osl = max(forecast.isl, 1.0), max(forecast.osl, 1.0)
    context = isl + osl / 2
    p_corr = d_corr = 1.0
    if not config.no_correction and traffic is not None and traffic.num_requests > 0:
        if traffic.ttft_ms and traffic.isl:
            p_corr = _clamp(traffic.ttft_ms / profile.prefill.ttft(traffic.isl))
            corrections["prefill"] = p_corr
        decoders = max(live.get("decode", 1), 1)
        if traffic.itl_ms and traffic.request_duration_s and traffic.isl and traffic.osl:
            concurrency = traffic.num_requests / decoders * traffic.request_duration_s / interval
            expected = profile.decode.itl_at_concurrency(concurrency, traffic.isl + traffic.osl / 2)
            d_corr = _clamp(traffic.itl_ms / expected)
            corrections["decode"] = d_corr

    queued = inputs.load.get("prefill" if "prefill" in live else "decode")
    queued_tokens = queued.queued_prefill_tokens * queued.workers if queued else 0.0
    requests = planned_requests(config, forecast.num_requests, rising=forecast.rising)
    prefill_tps = requests * isl / interval * min(1.0, p_corr)
    prefill_tps += queued_tokens / interval
    busy = prefill_utilization(profile.prefill.ttft(isl), config.ttft_ms)
    prefill_cap = profile.prefill.throughput_per_gpu(isl) * config.prefill_engine_num_gpu * busy
    decode_tps = requests * osl / interval
    itl_target = config.itl_ms / d_corr
    per_gpu, feasible = profile.decode.best_throughput_per_gpu(itl_target, context)
    decode_cap = per_gpu * config.decode_engine_num_gpu
    if not feasible:
        reasons.append(
            f"no profiled decode load meets ITL {itl_target:.1f}ms at context {context:.0f}"
        )
    headroom = config.scale_down_headroom
    sigmas = margin_sigmas(config, rising=forecast.rising)
    if sigmas > 0:
        why = (
            " (the load rises)"
            if forecast.rising and sigmas > config.forecast_margin_sigmas
            else ""
        )
        reasons.append(
            f"sized for {requests:.0f} requests: forecast {forecast.num_requests:.0f} + "
            f"{sigmas:g} sigma{why}"
        )
    if "prefill" in wishes:
        need = prefill_tps / prefill_cap
        _wish(wishes["prefill"], need, headroom)
        reasons.append(
            f"prefill {prefill_tps:.0f} tok/s ({queued_tokens:.0f} queued) / "
            f"{prefill_cap:.0f} per worker at {busy:.0%} busy = {need:.2f}"
        )
    if "decode" in wishes:
        need = decode_tps / decode_cap
        if config.mode == "agg":  # one pool does both: the time shares add up
            need += prefill_tps / prefill_cap
        _wish(wishes["decode"], need, headroom)
        reasons.append(f"decode {decode_tps:.0f} tok/s / {decode_cap:.0f} per worker = {need:.2f}")


def margin_sigmas(config: PlannerConfig, *, rising: bool = False) -> float:
    """Poisson standard deviations to size for above the forecast: `--forecast-margin-sigmas`,
    or while the load rises `--rising-margin-sigmas` when that is larger."""
    sigmas = config.forecast_margin_sigmas
    return max(sigmas, config.rising_margin_sigmas) if rising else sigmas


def planned_requests(config: PlannerConfig, forecast: float, *, rising: bool = False) -> float:
    """The request count to size for: the forecast plus `margin_sigmas` of its Poisson
    standard deviation (arrivals in an interval vary by about sqrt(count))."""
    sigmas = margin_sigmas(config, rising=rising)
    return forecast + sigmas * math.sqrt(max(forecast, 0.0))


def prefill_utilization(service_ms: float, ttft_target_ms: float) -> float:
    """The busy fraction at which a prefill worker still meets the TTFT target with queueing.

    Requests wait for the engine: with Poisson arrivals and a fixed prefill time S (M/D/1),
    the mean wait is rho * S / (2 (1 - rho)), so TTFT = S + wait <= target holds up to
    rho = 2k / (1 + 2k) with k = target / S - 1. Sizing prefill at 100 % busy (Dynamo's
    formula) lets queues, and TTFT, grow without bound under bursts (their #10528). A target
    below the profiled prefill time itself cannot be met by more workers: then 1 (and the
    decision says so through the SLA guard's check).
    """
    if service_ms <= 0 or ttft_target_ms <= service_ms:
        return 1.0
    k = ttft_target_ms / service_ms - 1.0
    return 2 * k / (1 + 2 * k)


def _wish(wish: _Wish, need: float, headroom: float) -> None:
    """Workers for `need` full workers of load: up at > 100 %, down only within `headroom`."""
    wish.up = max(wish.up, math.ceil(need - 1e-9))
    wish.down = (
        max(math.ceil(need / headroom - 1e-9), 0)
        if wish.signals == 0
        else max(wish.down, math.ceil(need / headroom - 1e-9))
    )
    wish.signals += 1


def _sla_guard(
    config: PlannerConfig,
    inputs: Inputs,
    live: Mapping[Role, int],
    wishes: dict[Role, _Wish],
    reasons: list[str],
) -> None:
    traffic, profile = inputs.traffic, inputs.profile
    if traffic is None or traffic.num_requests <= 0:
        return
    ttft_role: Role = "prefill" if "prefill" in wishes else "decode"
    if ttft_role in wishes and traffic.ttft_ms is not None and traffic.ttft_ms > config.ttft_ms:
        engine_ok = (
            profile is None
            or traffic.isl is None
            or profile.prefill.ttft(traffic.isl) <= config.ttft_ms
        )
        since = inputs.now_s - inputs.last_scale_up_s.get(ttft_role, -math.inf)
        now_load = inputs.load.get(ttft_role)
        isl = inputs.forecast.isl if inputs.forecast else float(config.isl)
        drained = (
            now_load is not None
            and now_load.workers > 0
            and now_load.queued_prefill_tokens < prefill_queue_thresholds(config, profile, isl)[1]
        )
        if engine_ok and drained:
            # the slow requests queued earlier; the workers keep up now
            reasons.append(
                f"TTFT {traffic.ttft_ms:.0f}ms > {config.ttft_ms:g}ms target, but the "
                f"{ttft_role} queue has drained: not adding on its stale TTFT"
            )
        elif engine_ok and since < config.interval_s:
            # these requests queued before the workers added since could take them
            reasons.append(
                f"TTFT {traffic.ttft_ms:.0f}ms > {config.ttft_ms:g}ms target, but {ttft_role} "
                f"scaled up {since:.0f}s ago: not adding on its stale TTFT"
            )
        elif engine_ok:
            wish = wishes[ttft_role]
            wish.up = max(wish.up, live[ttft_role] + 1)
            wish.down = max(wish.down, live[ttft_role])
            wish.signals += 1
            reasons.append(
                f"TTFT {traffic.ttft_ms:.0f}ms > {config.ttft_ms:g}ms target: requests queue, "
                f"one more {ttft_role}"
            )
    if "decode" in wishes and traffic.itl_ms is not None and traffic.itl_ms > config.itl_ms:
        engine_ok = profile is None or profile.decode.itl(0.0, traffic.isl or 0) <= config.itl_ms
        if engine_ok:
            wish = wishes["decode"]
            wish.up = max(wish.up, live["decode"] + 1)
            wish.down = max(wish.down, live["decode"])
            wish.signals += 1
            reasons.append(
                f"ITL {traffic.itl_ms:.1f}ms > {config.itl_ms:g}ms target: one more decode"
            )


def queue_inflow_tps(
    before: RoleLoad | None,
    after: RoleLoad | None,
    elapsed_s: float,
    per_worker_tps: float,
    *,
    since_empty: bool = False,
    batched_tps: Callable[[float], float] | None = None,
    prompt_tokens: float = 0.0,
) -> float | None:
    """Prompt tokens/s arriving at a role whose workers were saturated between two snapshots.

    Workers with a queue were busy all along, so each cleared about `per_worker_tps`; what
    arrived is that plus the queue's growth. Only the workers that hold a queue count as
    clearing (`queued_workers`, when the snapshot knows it): new workers idle beside an old
    one's backlog add no inflow. This sees a burst within one load check, long before
    finished requests show it in the frontend's numbers. A queue that formed since the last
    snapshot counts too when `since_empty` (its workers were busy for part of the time: the
    estimate is high by at most one worker's clearing per worker; the caller uses it only
    for a queue over the scale-up threshold); there `batched_tps(tokens)`, when given, is
    what a worker with that many tokens queued clears: a burst's onset queues many prompts
    at once on workers that were idle, and an engine batches them into its steps, faster
    than one prompt at a time. (Not for a standing queue: there the mean over workers with
    different queues, new ones holding a single prompt, would overstate it.) None when the
    role has no queue now (then nothing can be told from the queue). With `prompt_tokens`
    (the mean prompt), a formed queue also counts the prompts its workers run now beyond those
    they ran before (`running_requests`): an engine that batches moves up to a step's worth of
    a burst out of its queue into the running step at once, where the queue no longer shows it.
    """
    if before is None or after is None or elapsed_s <= 0 or per_worker_tps <= 0:
        return None
    if min(before.workers, after.workers) <= 0 or after.queued_prefill_tokens <= 0:
        return None
    formed = before.queued_prefill_tokens <= 0
    if formed and not since_empty:
        return None
    total = after.queued_prefill_tokens * after.workers
    growth = (total - before.queued_prefill_tokens * before.workers) / elapsed_s
    if formed and prompt_tokens > 0:
        # the prompts in the step now being computed arrived since the queue was empty too
        running = after.running_requests * after.workers - before.running_requests * before.workers
        growth += max(0.0, running) * prompt_tokens / elapsed_s
    busy = min(before.workers, after.workers)
    if after.queued_workers is not None:
        busy = min(busy, max(after.queued_workers, 1))
    rate = batched_tps(total / busy) if formed and batched_tps is not None else per_worker_tps
    return max(0.0, growth + busy * max(rate, per_worker_tps))


def prefill_worker_tps(config: PlannerConfig, profile: EngineProfile | None, isl: float) -> float:
    """Prompt tokens/s one prefill worker clears at `isl` (0 without a profile)."""
    if profile is None:
        return 0.0
    return profile.prefill.throughput_per_gpu(isl) * config.prefill_engine_num_gpu


def prefill_queue_thresholds(
    config: PlannerConfig, profile: EngineProfile | None, isl: float
) -> tuple[float, float]:
    """(up, down) queued prefill tokens per worker; by default the queue beyond which a
    prompt arriving now misses the TTFT target (it waits for the queue, then its own
    prefill: what one worker prefills in the target less one prefill), at least one
    prompt; down is a fifth of it."""
    up: float
    if config.prefill_scale_up_queue_tokens is not None:
        up = config.prefill_scale_up_queue_tokens
    elif profile is not None:
        per_worker = profile.prefill.throughput_per_gpu(isl) * config.prefill_engine_num_gpu
        wait_ms = config.ttft_ms - profile.prefill.ttft(isl)
        up = max(per_worker * wait_ms / 1000.0, isl)
    else:
        up = 2.0 * isl
    down = (
        config.prefill_scale_down_queue_tokens
        if config.prefill_scale_down_queue_tokens is not None
        else up / 5
    )
    return up, down


def _load(
    config: PlannerConfig,
    inputs: Inputs,
    live: Mapping[Role, int],
    wishes: dict[Role, _Wish],
    reasons: list[str],
) -> None:
    isl = inputs.forecast.isl if inputs.forecast else float(config.isl)
    prefill_role: Role = "prefill" if "prefill" in wishes else "decode"
    load = inputs.load.get(prefill_role)
    if prefill_role in wishes and load is not None and load.workers > 0:
        up, down = prefill_queue_thresholds(config, inputs.profile, isl)
        _threshold(
            wishes[prefill_role],
            live[prefill_role],
            load.workers,
            load.queued_prefill_tokens,
            up,
            down,
            f"{prefill_role} queue {load.queued_prefill_tokens:.0f} tok/worker",
            reasons,
        )
        _size_to_inflow(config, inputs, isl, wishes, prefill_role, load, up, reasons)
    if prefill_role in wishes:
        _size_to_arrivals(config, inputs, isl, wishes, prefill_role, live, reasons)
    load = inputs.load.get("decode")
    if "decode" in wishes and load is not None and load.workers > 0:
        _threshold(
            wishes["decode"],
            live["decode"],
            load.workers,
            load.kv_usage,
            config.decode_scale_up_kv_rate,
            config.decode_scale_down_kv_rate,
            f"decode KV usage {load.kv_usage:.0%}",
            reasons,
        )


def _size_to_inflow(
    config: PlannerConfig,
    inputs: Inputs,
    isl: float,
    wishes: dict[Role, _Wish],
    prefill_role: Role,
    load: RoleLoad,
    up: float,
    reasons: list[str],
) -> None:
    """Over the queue threshold, ask for the workers the measured inflow needs at the TTFT
    target's utilization (not just one more): a burst is met in one step; in disagg mode
    the decode workers its requests will need too."""
    wish = wishes[prefill_role]
    inflow, profile = inputs.prefill_inflow_tps, inputs.profile
    if inflow is None or profile is None or load.queued_prefill_tokens <= up:
        return
    per_worker = prefill_worker_tps(config, profile, isl)
    busy = prefill_utilization(profile.prefill.ttft(isl), config.ttft_ms)
    if per_worker <= 0:
        return
    need = math.ceil(inflow / (per_worker * busy) - 1e-9)
    if need > wish.up:
        wish.up = need
        reasons.append(
            f"queue grows: {inflow:.0f} tok/s arriving / {per_worker * busy:.0f} per worker at "
            f"{busy:.0%} busy = {need} workers, one more"
        )
    _decode_follows(config, inputs, isl, wishes, prefill_role, inflow, reasons)


def _size_to_arrivals(
    config: PlannerConfig,
    inputs: Inputs,
    isl: float,
    wishes: dict[Role, _Wish],
    prefill_role: Role,
    live: Mapping[Role, int],
    reasons: list[str],
) -> None:
    """The frontends' arrival rate over the last seconds, when even its lower bound (the
    count less two Poisson standard deviations) is more than the live workers clear at the
    TTFT target's utilization: ask for the workers the measured rate needs. It sees a burst
    as it arrives, whether or not the workers' queues show it yet (an engine that batches
    takes a step's worth of prompts out of its queue at once, and new workers idle beside an
    old one's backlog hide a burst that goes on); the lower bound keeps a noisy second of a
    steady load from adding workers."""
    profile = inputs.profile
    if inputs.arrivals is None or profile is None:
        return
    count, window_s = inputs.arrivals
    per_worker = prefill_worker_tps(config, profile, isl)
    busy = prefill_utilization(profile.prefill.ttft(isl), config.ttft_ms)
    if count <= 0 or window_s <= 0 or per_worker <= 0:
        return
    capacity = per_worker * busy
    low = max(0.0, count - 2 * math.sqrt(count)) / window_s * isl
    if low <= live[prefill_role] * capacity:
        return
    inflow = count / window_s * isl
    need = math.ceil(inflow / capacity - 1e-9)
    wish = wishes[prefill_role]
    if need > wish.up:
        wish.up = need
        reasons.append(
            f"arrivals {count / window_s:.1f} req/s ({count:.0f} in {window_s:.1f}s) = "
            f"{inflow:.0f} tok/s / {capacity:.0f} per worker at {busy:.0%} busy = {need} "
            "workers, one more"
        )
    _decode_follows(config, inputs, isl, wishes, prefill_role, inflow, reasons)


def _decode_follows(
    config: PlannerConfig,
    inputs: Inputs,
    isl: float,
    wishes: dict[Role, _Wish],
    prefill_role: Role,
    inflow: float,
    reasons: list[str],
) -> None:
    """In disagg mode, the decode workers the prompts arriving at `inflow` tok/s will need
    once prefilled."""
    profile = inputs.profile
    decode = wishes.get("decode")
    if decode is None or prefill_role != "prefill" or profile is None:
        return
    # the same requests reach decode once prefilled: size it for them now, not after its ITL
    osl = inputs.forecast.osl if inputs.forecast else float(config.osl)
    per_gpu, _ = profile.decode.best_throughput_per_gpu(config.itl_ms, isl + osl / 2)
    decode_tps = inflow / max(isl, 1.0) * osl
    need = math.ceil(decode_tps / (per_gpu * config.decode_engine_num_gpu) - 1e-9)
    if need > decode.up:
        decode.up = need
        reasons.append(
            f"decode {decode_tps:.0f} tok/s follows that prefill burst = {need} workers, one more"
        )


def _threshold(
    wish: _Wish,
    now: int,
    serving: int,
    value: float,
    up: float,
    down: float,
    what: str,
    reasons: list[str],
) -> None:
    """`serving`: the workers that report load. Over `up`, one more than those: workers
    still starting count already, so a queue that waits for them adds no more each check."""
    if value > up:
        wish.up = max(wish.up, min(now, serving) + 1)
        reasons.append(f"{what} > {up:.4g}: one more")
        floor = now
    else:
        floor = now - 1 if value < down else now
        reasons.append(f"{what} (one more above {up:.4g}, one fewer below {down:.4g})")
    # a load signal never asks for less than the other signals allow; it may veto a descent
    wish.down = floor if wish.signals == 0 else max(wish.down, floor)
    wish.signals += 1


def _apply_budget(config: PlannerConfig, targets: dict[Role, int], reasons: list[str]) -> None:
    budget = config.max_gpu_budget
    if budget == -1:
        return
    total = sum(n * config.engine_gpus(r) for r, n in targets.items())
    if total <= budget:
        return
    minimum = config.min_endpoint
    if set(targets) == {"prefill", "decode"}:
        p_gpu, d_gpu = config.prefill_engine_num_gpu, config.decode_engine_num_gpu
        scale = budget / total
        num_p = max(minimum, round(targets["prefill"] * scale))
        num_d = max(minimum, (budget - num_p * p_gpu) // d_gpu)
        targets["prefill"], targets["decode"] = num_p, num_d
    else:
        for role in targets:
            targets[role] = max(minimum, budget // config.engine_gpus(role))
    reasons.append(f"capped by --max-gpu-budget {budget} (wanted {total} GPUs)")
