"""The `dynamo top` frame: per-model and per-worker rows computed from two scrapes of the
frontends' and workers' `/metrics` (rates and latency percentiles over the interval between
them), rendered as text. Pure: no I/O."""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from prometheus_client.parser import text_string_to_metric_families

Labels = tuple[tuple[str, str], ...]
Samples = dict[str, dict[Labels, float]]  # sample name -> labels -> value
F = "dynamo_frontend_"


def parse_metrics(text: str) -> Samples:
    samples: Samples = defaultdict(dict)
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            samples[s.name][tuple(sorted(s.labels.items()))] = s.value
    return dict(samples)


@dataclass(frozen=True)
class Scrape:
    """What one round of scraping saw, at `at_s` (monotonic seconds)."""

    at_s: float
    frontends: list[Samples] = field(default_factory=list)
    workers: list[Samples] = field(default_factory=list)
    unreachable: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class ModelRow:
    model: str
    workers: int
    requests_per_s: float | None
    errors_per_s: float | None
    inflight: int
    queued: int
    output_tokens_per_s: float | None
    ttft_p50_s: float | None
    ttft_p95_s: float | None
    itl_p50_s: float | None
    e2e_p50_s: float | None
    kv_hit_rate: float | None


@dataclass(frozen=True)
class WorkerRow:
    component: str
    worker_id: str
    dp_rank: str
    kv_usage: float | None
    kv_active_blocks: int | None
    kv_total_blocks: int | None
    prefix_hit_rate: float | None
    router_decode_blocks: float | None
    last_ttft_s: float | None


def _sum_by(
    sources: Iterable[Samples], name: str, key: str, where: Mapping[str, str] | None = None
) -> dict[str, float]:
    out: dict[str, float] = defaultdict(float)
    for samples in sources:
        for labels, value in samples.get(name, {}).items():
            d = dict(labels)
            if where and any(d.get(k) != v for k, v in where.items()):
                continue
            out[d.get(key, "")] += value
    return dict(out)


def _rate(
    prev: Scrape | None, cur: Scrape, name: str, key: str, where: Mapping[str, str] | None = None
) -> dict[str, float]:
    if prev is None or cur.at_s <= prev.at_s:
        return {}
    now, before = (
        _sum_by(cur.frontends, name, key, where),
        _sum_by(prev.frontends, name, key, where),
    )
    dt = cur.at_s - prev.at_s
    # a counter that went down restarted: count from zero
    return {
        k: ((v - before.get(k, 0.0)) if v >= before.get(k, 0.0) else v) / dt for k, v in now.items()
    }


def _buckets(sources: Iterable[Samples], name: str, model: str) -> dict[float, float]:
    out: dict[float, float] = defaultdict(float)
    for samples in sources:
        for labels, value in samples.get(f"{name}_bucket", {}).items():
            d = dict(labels)
            if d.get("model") == model:
                out[float(d["le"])] += value
    return dict(out)


def quantile(q: float, buckets: Mapping[float, float]) -> float | None:
    """Prometheus' `histogram_quantile` over cumulative `le -> count` buckets (None if empty)."""
    if not buckets:
        return None
    bounds = sorted(buckets)
    total = buckets[bounds[-1]]
    if total <= 0:
        return None
    rank = q * total
    lower_bound, lower_count = 0.0, 0.0
    for bound in bounds:
        count = buckets[bound]
        if count >= rank:
            if math.isinf(bound):
                return lower_bound  # above the highest finite bucket: its bound, as Prometheus
            if count == lower_count:
                return bound
            return lower_bound + (bound - lower_bound) * (rank - lower_count) / (
                count - lower_count
            )
        lower_bound, lower_count = bound, count
    return bounds[-1]


def _window_quantile(
    prev: Scrape | None, cur: Scrape, name: str, model: str, q: float
) -> float | None:
    now = _buckets(cur.frontends, name, model)
    if prev is not None:
        before = _buckets(prev.frontends, name, model)
        window = {le: c - before.get(le, 0.0) for le, c in now.items()}
        if any(c < 0 for c in window.values()):  # a restart: the whole history
            window = now
        now = window
    return quantile(q, now)


def model_rows(prev: Scrape | None, cur: Scrape) -> list[ModelRow]:
    workers = _sum_by(cur.frontends, f"{F}model_workers", "model")
    inflight = _sum_by(cur.frontends, f"{F}inflight_requests", "model")
    queued = _sum_by(cur.frontends, f"{F}queued_requests", "model")
    requests = _rate(prev, cur, f"{F}requests_total", "model")
    errors = _rate(prev, cur, f"{F}requests_total", "model", {"status": "error"})
    tokens = _rate(prev, cur, f"{F}output_tokens_total", "model")
    cached = _rate(prev, cur, f"{F}cached_tokens_sum", "model")
    prompt = _rate(prev, cur, f"{F}input_sequence_tokens_sum", "model")
    models = sorted(set(workers) | set(inflight) | set(requests))
    rows = []
    for m in models:
        hit = cached.get(m, 0.0) / prompt[m] if prompt.get(m) else None
        has_rates = prev is not None
        rows.append(
            ModelRow(
                model=m,
                workers=int(workers.get(m, 0)),
                requests_per_s=requests.get(m, 0.0) if has_rates else None,
                errors_per_s=errors.get(m, 0.0) if has_rates else None,
                inflight=int(inflight.get(m, 0)),
                queued=int(queued.get(m, 0)),
                output_tokens_per_s=tokens.get(m, 0.0) if has_rates else None,
                ttft_p50_s=_window_quantile(prev, cur, f"{F}time_to_first_token_seconds", m, 0.5),
                ttft_p95_s=_window_quantile(prev, cur, f"{F}time_to_first_token_seconds", m, 0.95),
                itl_p50_s=_window_quantile(prev, cur, f"{F}inter_token_latency_seconds", m, 0.5),
                e2e_p50_s=_window_quantile(prev, cur, f"{F}request_duration_seconds", m, 0.5),
                kv_hit_rate=hit,
            )
        )
    return rows


def _per_worker(sources: Iterable[Samples], name: str) -> dict[tuple[str, str], tuple[str, float]]:
    out: dict[tuple[str, str], tuple[str, float]] = {}
    for samples in sources:
        for labels, value in samples.get(name, {}).items():
            d = dict(labels)
            component = d.get("dynamo_component") or d.get("worker_type", "")
            out[(d.get("worker_id", ""), d.get("dp_rank", "0"))] = (component, value)
    return out


def _value(table: dict[tuple[str, str], tuple[str, float]], key: tuple[str, str]) -> float | None:
    found = table.get(key)
    return None if found is None else found[1]


def worker_rows(cur: Scrape) -> list[WorkerRow]:
    usage = _per_worker(cur.workers, "dynamo_component_kvstats_gpu_cache_usage_percent")
    active = _per_worker(cur.workers, "dynamo_component_kvstats_active_blocks")
    total = _per_worker(cur.workers, "dynamo_component_kvstats_total_blocks")
    hit = _per_worker(cur.workers, "dynamo_component_kvstats_gpu_prefix_cache_hit_rate")
    router = _per_worker(cur.frontends, f"{F}worker_active_decode_blocks")
    ttft = _per_worker(cur.frontends, f"{F}worker_last_time_to_first_token_seconds")
    rows = []
    for key in sorted(set(usage) | set(router), key=lambda k: (k[0], int(k[1] or 0))):
        component = (usage.get(key) or router.get(key) or ("", 0.0))[0]
        act, tot = _value(active, key), _value(total, key)
        rows.append(
            WorkerRow(
                component=component,
                worker_id=key[0],
                dp_rank=key[1],
                kv_usage=_value(usage, key),
                kv_active_blocks=None if act is None else int(act),
                kv_total_blocks=None if tot is None else int(tot),
                prefix_hit_rate=_value(hit, key),
                router_decode_blocks=_value(router, key),
                last_ttft_s=_value(ttft, key),
            )
        )
    return rows


def _num(v: float | None, fmt: str = "{:.1f}") -> str:
    return "-" if v is None else fmt.format(v)


def _ms(v: float | None) -> str:
    if v is None:
        return "-"
    return f"{v * 1000:.1f}ms" if v < 0.01 else f"{v * 1000:.0f}ms"


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{v * 100:.0f}%"


def render(prev: Scrape | None, cur: Scrape, *, title: str) -> str:
    """One frame: a header, the model table, the worker table, unreachable targets."""
    window = f"{cur.at_s - prev.at_s:.1f}s window" if prev is not None else "first scrape"
    lines = [
        f"{title}  ({len(cur.frontends)} frontend(s), {len(cur.workers)} worker process(es), "
        f"{window})",
        "",
        f"{'MODEL':<20} {'WORKERS':>7} {'REQ/S':>7} {'ERR/S':>6} {'INFLIGHT':>8} {'QUEUED':>6} "
        f"{'TOK/S':>8} {'TTFT50':>7} {'TTFT95':>7} {'ITL50':>7} {'E2E50':>7} {'KVHIT':>6}",
    ]
    models = model_rows(prev, cur)
    for r in models:
        lines.append(
            f"{r.model[:20]:<20} {r.workers:>7} {_num(r.requests_per_s):>7} "
            f"{_num(r.errors_per_s):>6} {r.inflight:>8} {r.queued:>6} "
            f"{_num(r.output_tokens_per_s):>8} {_ms(r.ttft_p50_s):>7} {_ms(r.ttft_p95_s):>7} "
            f"{_ms(r.itl_p50_s):>7} {_ms(r.e2e_p50_s):>7} {_pct(r.kv_hit_rate):>6}"
        )
    if not models:
        lines.append("(no model served yet)")
    lines += [
        "",
        f"{'WORKER':<22} {'COMPONENT':<10} {'DP':>3} {'KV USE':>7} {'BLOCKS':>13} "
        f"{'PREFIX HIT':>10} {'ROUTER LOAD':>11} {'LAST TTFT':>9}",
    ]
    workers = worker_rows(cur)
    for w in workers:
        blocks = (
            "-"
            if w.kv_active_blocks is None or w.kv_total_blocks is None
            else f"{w.kv_active_blocks}/{w.kv_total_blocks}"
        )
        lines.append(
            f"{w.worker_id[:22]:<22} {w.component[:10]:<10} {w.dp_rank:>3} {_pct(w.kv_usage):>7} "
            f"{blocks:>13} {_pct(w.prefix_hit_rate):>10} "
            f"{_num(w.router_decode_blocks, '{:.0f}'):>11} {_ms(w.last_ttft_s):>9}"
        )
    if not workers:
        lines.append("(no worker found)")
    for target in cur.unreachable:
        lines.append(f"unreachable: {target}")
    return "\n".join(lines)
