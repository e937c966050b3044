"""Our requests as vLLM sampling parameters, vLLM finish reasons as ours (no vLLM needed)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from dynamo.engines.adapter_common import finish_reason, validate_prompt
from dynamo.engines.vllm.requests import sampled_logprobs, sampling_kwargs
from dynamo.protocols.engine import EngineRequest
from dynamo.runtime.errors import InvalidRequestError, PromptTooLongError


def req(tokens: list[int] | None = None, **fields: Any) -> EngineRequest:
    r: dict[str, Any] = {
        "request_id": "r",
        "model": "m",
        "token_ids": [1, 2, 3, 4] if tokens is None else tokens,
        "stop_conditions": {},
        "sampling_options": {},
    }
    r.update(fields)
    return r  # type: ignore[return-value]


def test_defaults_fill_the_context_not_vllms_16_tokens() -> None:
    assert sampling_kwargs(req(), 100) == {
        "max_tokens": 96,
        "min_tokens": 0,
        "ignore_eos": False,
        "detokenize": False,
        "skip_special_tokens": False,
    }


def test_all_options_map() -> None:
    kwargs = sampling_kwargs(
        req(
            stop_conditions={
                "max_tokens": 10,
                "min_tokens": 2,
                "stop_token_ids": [7],
                "ignore_eos": False,
            },
            sampling_options={
                "temperature": 0.0,
                "top_p": 0.9,
                "top_k": 5,
                "seed": 3,
                "logprobs": 1,
            },
            eos_token_ids=[2, 7],
        ),
        100,
    )
    assert kwargs == {
        "max_tokens": 10,
        "min_tokens": 2,
        "ignore_eos": False,
        "detokenize": False,
        "skip_special_tokens": False,
        "stop_token_ids": [7, 2],
        "temperature": 0.0,
        "top_p": 0.9,
        "top_k": 5,
        "seed": 3,
        "logprobs": 1,
    }


def test_ignore_eos_keeps_eos_out_of_the_stop_tokens() -> None:
    kwargs = sampling_kwargs(req(stop_conditions={"ignore_eos": True}, eos_token_ids=[2]), 50)
    assert kwargs["ignore_eos"] is True
    assert "stop_token_ids" not in kwargs


def test_max_tokens_is_capped_by_the_room_left() -> None:
    assert sampling_kwargs(req(stop_conditions={"max_tokens": 500}), 10)["max_tokens"] == 6
    assert sampling_kwargs(req(stop_conditions={"max_tokens": 9, "min_tokens": 9}), 10) == {
        "max_tokens": 6,
        "min_tokens": 6,
        "ignore_eos": False,
        "detokenize": False,
        "skip_special_tokens": False,
    }


def test_negative_top_k_means_disabled() -> None:
    assert sampling_kwargs(req(sampling_options={"top_k": -1}), 50)["top_k"] == 0


@pytest.mark.parametrize(
    ("stop", "message"),
    [
        ({"max_tokens": 0}, "max_tokens must be an integer >= 1"),
        ({"max_tokens": 2.5}, "max_tokens must be an integer >= 1"),
        ({"min_tokens": -1}, "min_tokens must be an integer >= 0"),
    ],
)
def test_bad_stop_conditions(stop: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidRequestError, match=message):
        sampling_kwargs(req(stop_conditions=stop), 50)


def test_prompt_validation() -> None:
    assert validate_prompt(req([5, 6]), 10) == [5, 6]
    with pytest.raises(InvalidRequestError, match="non-empty list"):
        validate_prompt(req([]), 10)
    with pytest.raises(InvalidRequestError, match="non-negative integers"):
        validate_prompt(req([1, -2]), 10)
    with pytest.raises(PromptTooLongError) as err:
        validate_prompt(req(list(range(10))), 10)
    assert str(err.value) == (
        "prompt has 10 tokens; this engine's context length is 10 and at least one token must "
        "be generated"
    )


@pytest.mark.parametrize(
    ("vllm_reason", "stop_reason", "ours"),
    [
        (None, None, None),
        ("stop", None, "eos"),
        ("stop", 2, "eos"),
        ("stop", 7, "stop"),
        ("stop", "###", "stop"),
        ("length", None, "length"),
        ("abort", None, "cancelled"),
        ("error", None, "error"),
    ],
)
def test_finish_reasons(vllm_reason: str | None, stop_reason: Any, ours: str | None) -> None:
    assert finish_reason(vllm_reason, stop_reason, {2}) == ours


def test_sampled_logprobs() -> None:
    lp = SimpleNamespace
    entries = [{5: lp(logprob=-0.5), 6: lp(logprob=-2.0)}, {9: lp(logprob=-0.1)}]
    assert sampled_logprobs([5, 9], entries) == [-0.5, -0.1]
    assert sampled_logprobs([6, 8], entries) == [-2.0, float("-inf")]
    assert sampled_logprobs([5], None) is None


def test_guided_decoding_becomes_structured_outputs() -> None:
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}}
    kwargs = sampling_kwargs(req(sampling_options={"guided_decoding": {"json": schema}}), 100)
    assert kwargs["structured_outputs"] == {"json": schema}
    assert "structured_outputs" not in sampling_kwargs(req(), 100)
