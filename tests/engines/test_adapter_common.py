"""engines/adapter_common.py: what the vLLM, SGLang and TensorRT-LLM adapters share."""

from __future__ import annotations

import logging
from types import SimpleNamespace
from typing import Any

import pytest

from dynamo.engines.adapter_common import (
    OutputStream,
    build_sampling_params,
    finish_reason,
    import_engine,
    max_new_tokens,
    request_error,
    role_of_disaggregation_mode,
    set_options,
)
from dynamo.engines.vllm.engine import VllmEngine
from dynamo.protocols.engine import EngineRequest
from dynamo.protocols.model_card import WorkerRole
from dynamo.runtime.errors import (
    ConfigError,
    InvalidRequestError,
    NotFoundError,
    UnavailableError,
)


def req(max_tokens: Any = None) -> EngineRequest:
    stop = {} if max_tokens is None else {"max_tokens": max_tokens}
    return {"token_ids": [1, 2, 3], "stop_conditions": stop}  # type: ignore[typeddict-item]


def test_import_engine_names_the_product_and_how_to_install_it() -> None:
    with pytest.raises(ConfigError) as err:
        import_engine("no_such_engine_pkg", "NoSuch", "pip install no-such")
    assert str(err.value).startswith(
        "NoSuch is not installed in this Python environment: pip install no-such ("
    )
    assert import_engine("json", "JSON", "-").__name__ == "json"


def test_max_new_tokens_fills_the_context_or_caps_the_request() -> None:
    assert max_new_tokens(req(), 10) == 7
    assert max_new_tokens(req(4), 10) == 4
    assert max_new_tokens(req(50), 10) == 7
    for bad in (0, -1, 2.5, True):
        with pytest.raises(InvalidRequestError, match="max_tokens must be an integer >= 1"):
            max_new_tokens(req(bad), 10)


def test_set_options_and_sampling_params_errors() -> None:
    assert set_options({"a": 0, "b": None, "c": 1}, ("a", "b", "d")) == {"a": 0}

    def refuse(**kwargs: Any) -> None:
        raise ValueError("top_p must be in (0, 1]")

    with pytest.raises(InvalidRequestError, match=r"invalid sampling parameters: top_p must"):
        build_sampling_params(refuse, top_p=2)
    assert build_sampling_params(dict, x=1) == {"x": 1}


def test_roles_of_disaggregation_modes() -> None:
    assert role_of_disaggregation_mode("prefill") is WorkerRole.PREFILL
    assert role_of_disaggregation_mode("decode") is WorkerRole.DECODE
    for other in ("null", "prefill_and_decode", None):
        assert role_of_disaggregation_mode(other) is WorkerRole.AGGREGATED


def test_output_stream_counts_tokens_and_ends_with_the_usage() -> None:
    out = OutputStream(3)
    assert out.output([7, 8], None, cached_tokens=2) == {"token_ids": [7, 8]}
    assert out.new_tokens([7, 8, 9]) == [9]
    last = out.output([9], "eos", log_probs=[-0.5])
    assert last == {
        "token_ids": [9],
        "log_probs": [-0.5],
        "finish_reason": "eos",
        "usage": {"prompt_tokens": 3, "completion_tokens": 3, "cached_tokens": 2},
    }
    assert out.finished
    assert OutputStream(4).cancelled() == {
        "token_ids": [],
        "finish_reason": "cancelled",
        "usage": {"prompt_tokens": 4, "completion_tokens": 0, "cached_tokens": 0},
    }


def test_request_error_blames_the_request_only_for_value_errors() -> None:
    same = NotFoundError("gone")
    assert request_error(same, "X") is same
    invalid = request_error(ValueError("bad"), "X")
    assert isinstance(invalid, InvalidRequestError)
    assert str(invalid) == "X rejected the request: bad"
    failed = request_error(RuntimeError("boom"), "X")
    assert isinstance(failed, UnavailableError)
    assert str(failed) == "X failed the request: RuntimeError: boom"


def test_vllm_delta_outputs_become_ours() -> None:
    """`VllmEngine._chunk` on vLLM-shaped (DELTA) outputs, without vLLM installed."""

    def vllm_out(tokens: list[int], reason: str | None, cached: int, done: bool) -> Any:
        completion = SimpleNamespace(
            token_ids=tokens, logprobs=None, finish_reason=reason, stop_reason=None
        )
        return SimpleNamespace(outputs=[completion], num_cached_tokens=cached, finished=done)

    stream = OutputStream(5)
    first = VllmEngine._chunk(vllm_out([4, 5], None, 2, False), stream, frozenset({2}))
    assert first == {"token_ids": [4, 5]}
    last = VllmEngine._chunk(vllm_out([6], "length", 0, True), stream, frozenset({2}))
    assert last == {
        "token_ids": [6],
        "finish_reason": "length",
        "usage": {"prompt_tokens": 5, "completion_tokens": 3, "cached_tokens": 2},
    }


def test_engine_ended_requests_finish_as_cancelled_not_error() -> None:
    # SGLang's "abort"; TensorRT-LLM's "cancelled" and "timeout" (CompletionOutput.finish_reason)
    assert [finish_reason(r, None, ()) for r in ("abort", "cancelled", "timeout")] == [
        "cancelled",
        "cancelled",
        "cancelled",
    ]
    assert finish_reason("something-new", None, ()) == "error"


def test_unknown_engine_finish_reason_is_logged_as_an_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING, logger="dynamo.engines.adapter_common"):
        assert finish_reason("something-new", None, ()) == "error"
        assert finish_reason("error", None, ()) == "error"
    assert [r.getMessage() for r in caplog.records] == [
        "unknown engine finish reason 'something-new': reported as an error"
    ]
