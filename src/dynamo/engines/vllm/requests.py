"""Translate our token-level requests to vLLM sampling parameters and vLLM results back.

Pure functions over plain data, so they are tested without vLLM installed.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from dynamo.protocols.engine import EngineRequest, FinishReason
from dynamo.runtime.errors import InvalidRequestError, PromptTooLongError


def validate_prompt(request: EngineRequest, max_model_len: int) -> list[int]:
    """The prompt's token ids, checked against the engine's context length."""
    tokens = request.get("token_ids")
    if not isinstance(tokens, list) or not tokens:
        raise InvalidRequestError("token_ids must be a non-empty list", param="token_ids")
    if not all(type(t) is int and t >= 0 for t in tokens):
        raise InvalidRequestError("token_ids must be non-negative integers", param="token_ids")
    if len(tokens) >= max_model_len:
        raise PromptTooLongError(
            f"prompt has {len(tokens)} tokens; this engine's context length is {max_model_len} "
            "and at least one token must be generated",
            param="token_ids",
        )
    return tokens


def sampling_kwargs(request: EngineRequest, max_model_len: int) -> dict[str, Any]:
    """Keyword arguments of `vllm.SamplingParams` for `request` (token output, no text).

    `max_tokens=None` means "up to the context length", not vLLM's default of 16.
    """
    prompt_len = len(request["token_ids"])
    stop = request.get("stop_conditions") or {}
    sampling = request.get("sampling_options") or {}
    room = max_model_len - prompt_len
    max_tokens = stop.get("max_tokens")
    if max_tokens is None:
        max_tokens = room
    elif type(max_tokens) is not int or max_tokens < 1:
        raise InvalidRequestError("max_tokens must be an integer >= 1", param="max_tokens")
    else:
        max_tokens = min(max_tokens, room)
    min_tokens = stop.get("min_tokens") or 0
    if type(min_tokens) is not int or min_tokens < 0:
        raise InvalidRequestError("min_tokens must be an integer >= 0", param="min_tokens")
    ignore_eos = bool(stop.get("ignore_eos", False))
    stop_ids = list(stop.get("stop_token_ids") or [])
    if not ignore_eos:
        stop_ids += [t for t in request.get("eos_token_ids") or [] if t not in stop_ids]
    kwargs: dict[str, Any] = {
        "max_tokens": max_tokens,
        "min_tokens": min(min_tokens, max_tokens),
        "ignore_eos": ignore_eos,
        "detokenize": False,
        "skip_special_tokens": False,
    }
    if stop_ids:
        kwargs["stop_token_ids"] = stop_ids
    for key in ("temperature", "top_p", "seed"):
        if sampling.get(key) is not None:
            kwargs[key] = sampling[key]
    top_k = sampling.get("top_k")
    if top_k is not None:
        kwargs["top_k"] = 0 if top_k < 0 else top_k  # vLLM: 0 disables top-k
    if sampling.get("logprobs") is not None:
        kwargs["logprobs"] = sampling["logprobs"]
    return kwargs


def finish_reason(
    vllm_reason: str | None, stop_reason: int | str | None, eos_token_ids: Collection[int]
) -> FinishReason | None:
    """Our finish reason for vLLM's `(finish_reason, stop_reason)`.

    vLLM says "stop" for EOS too; its `stop_reason` is None then (or the EOS id when EOS ids
    were passed as stop tokens).
    """
    if vllm_reason is None:
        return None
    if vllm_reason == "stop":
        if stop_reason is None or (isinstance(stop_reason, int) and stop_reason in eos_token_ids):
            return "eos"
        return "stop"
    if vllm_reason == "length":
        return "length"
    if vllm_reason == "abort":
        return "cancelled"
    return "error"


def sampled_logprobs(token_ids: list[int], logprobs: Any) -> list[float] | None:
    """Log-probabilities of the sampled tokens from vLLM's per-position `{id: Logprob}` maps."""
    if not logprobs:
        return None
    out: list[float] = []
    for tok, entry in zip(token_ids, logprobs, strict=False):
        lp = entry.get(tok) if hasattr(entry, "get") else None
        out.append(float(lp.logprob) if lp is not None else float("-inf"))
    return out
