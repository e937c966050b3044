"""The serving-stack model rapid adds to TTFT, and how it is set."""

from __future__ import annotations

import pytest

from dynamo.profiler.config import parse_request
from dynamo.profiler.overhead import MEASURED, NONE, ServingOverhead, parse_overhead
from dynamo.runtime.errors import ConfigError


def test_the_model_is_a_fixed_cost_plus_a_cost_per_prompt_token() -> None:
    model = ServingOverhead(fixed_ms=1.5, per_1k_tokens_ms=0.8)
    assert model.ttft_ms(0) == 1.5
    assert model.ttft_ms(3000) == pytest.approx(1.5 + 2.4)
    assert NONE.ttft_ms(100_000) == 0.0
    assert str(model) == "1.5 ms + 0.8 ms per 1000 prompt tokens"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1.6,0.9", ServingOverhead(1.6, 0.9)),
        ("4", ServingOverhead(4.0, 0.0)),
        (0, NONE),
        (" 2 , 0.25 ", ServingOverhead(2.0, 0.25)),
    ],
)
def test_parse(text: object, expected: ServingOverhead) -> None:
    assert parse_overhead(text, "x") == expected


@pytest.mark.parametrize("text", ["", "a,b", "1,2,3", "-1", "1,-0.5", "nan", "inf,1"])
def test_bad_values_are_named(text: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_overhead(text, "sweep.serving_overhead")
    assert str(info.value) == (
        "sweep.serving_overhead: expected FIXED_MS[,PER_1K_TOKENS_MS] with values >= 0 "
        f"(e.g. 2.3,0.85), got {text!r}"
    )


def test_the_request_carries_the_measured_default_or_the_dgdr_setting() -> None:
    spec = {"model": "m", "backend": "vllm", "profilingConfig": {"config": {}}}
    assert parse_request(spec).serving_overhead == MEASURED
    spec["profilingConfig"]["config"] = {"sweep": {"servingOverhead": "3,0.5"}}
    assert parse_request(spec).serving_overhead == ServingOverhead(3.0, 0.5)
    assert parse_request(spec, mode="thorough").ignored == (
        "sweep.serving_overhead (thorough measures the serving stack itself)",
    )
    spec["profilingConfig"]["config"] = {"sweep": {"servingOverhead": "fast"}}
    with pytest.raises(ConfigError, match=r"sweep\.serving_overhead: expected"):
        parse_request(spec)
