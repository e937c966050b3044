"""One `/metrics` view over several processes: real `FrontendMetrics` rendered and merged."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from dynamo.frontend.metrics import FrontendMetrics
from dynamo.frontend.metrics_merge import merge_expositions
from dynamo.protocols.model_card import ModelCard

Series = dict[tuple[str, frozenset[tuple[str, str]]], float]
MODEL = frozenset({("model", "m")})


def parse(text: str) -> tuple[Series, dict[str, str]]:
    series: Series = {}
    types: dict[str, str] = {}
    for family in text_string_to_metric_families(text):
        types[family.name] = family.type
        for sample in family.samples:
            series[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return series, types


def process(requests: int, prompt: int, cached: int, inflight: int, ttft_s: float) -> bytes:
    metrics = FrontendMetrics()
    card = ModelCard(name="m", total_kv_blocks=1000, kv_block_size=16, context_length=4096)
    metrics.set_model_config(card, workers=2, migration_limit=0)
    mm = metrics.for_model("m")
    for _ in range(requests):
        mm.request_done("completions", streaming=True, error_type=None)
        mm.tokens_done(prompt, 8, cached)
        mm.ttft.observe(ttft_s)
        mm.output_tokens += 8
    mm.inflight.inc(inflight)
    return metrics.render()


def test_counters_histograms_and_held_requests_add_up_views_do_not() -> None:
    a = process(requests=3, prompt=100, cached=50, inflight=2, ttft_s=0.02)
    b = process(requests=1, prompt=100, cached=0, inflight=1, ttft_s=0.2)
    merged, types = parse(merge_expositions([a.decode(), b.decode()], "dynamo_frontend").decode())

    requests = frozenset(
        {
            ("model", "m"),
            ("endpoint", "completions"),
            ("request_type", "stream"),
            ("status", "success"),
            ("error_type", ""),
        }
    )
    assert merged[("dynamo_frontend_requests_total", requests)] == 4
    assert merged[("dynamo_frontend_output_tokens_total", MODEL)] == 32
    assert merged[("dynamo_frontend_time_to_first_token_seconds_count", MODEL)] == 4
    assert abs(merged[("dynamo_frontend_time_to_first_token_seconds_sum", MODEL)] - 0.26) < 1e-9
    le_50ms = MODEL | {("le", "0.05")}
    assert merged[("dynamo_frontend_time_to_first_token_seconds_bucket", le_50ms)] == 3
    assert merged[("dynamo_frontend_inflight_requests", MODEL)] == 3  # each holds its own
    # the same model config seen by both processes: not doubled
    assert merged[("dynamo_frontend_model_workers", MODEL)] == 2
    assert merged[("dynamo_frontend_model_total_kv_blocks", MODEL)] == 1000
    # the ratio of the totals: 150 cached of 400 prompt tokens (neither process's own ratio)
    assert merged[("dynamo_frontend_kv_hit_rate", MODEL)] == 150 / 400
    # names and types are those of one process
    _, one_types = parse(a.decode())
    assert types == one_types


def test_one_process_merges_to_itself() -> None:
    text = process(requests=2, prompt=64, cached=16, inflight=0, ttft_s=0.01).decode()
    assert parse(merge_expositions([text], "dynamo_frontend").decode()) == parse(text)
