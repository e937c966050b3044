"""Translate our token-level requests to vLLM sampling parameters and vLLM results back.

What all engine adapters share (prompt checks, finish reasons) is in `engines/adapter_common`.

Pure functions over plain data, so they are tested without vLLM installed.
"""

from __future__ import annotations

from typing import Any

from dynamo.engines.adapter_common import max_new_tokens, set_options
from dynamo.protocols.engine import EngineRequest
from dynamo.runtime.errors import InvalidRequestError


def sampling_kwargs(request: EngineRequest, max_model_len: int) -> dict[str, Any]:
    """Keyword arguments of `vllm.SamplingParams` for `request` (token output, no text).

    `max_tokens=None` means "up to the context length", not vLLM's default of 16.
    """
    stop = request.get("stop_conditions") or {}
    sampling = request.get("sampling_options") or {}
    max_tokens = max_new_tokens(request, max_model_len)
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
    kwargs.update(set_options(sampling, ("temperature", "top_p", "seed")))
    top_k = sampling.get("top_k")
    if top_k is not None:
        kwargs["top_k"] = 0 if top_k < 0 else top_k  # vLLM: 0 disables top-k
    if sampling.get("logprobs") is not None:
        kwargs["logprobs"] = sampling["logprobs"]
    guided = sampling.get("guided_decoding")
    if guided:  # vllm.sampling_params.StructuredOutputsParams keyword arguments
        kwargs["structured_outputs"] = dict(guided)
    return kwargs


def sampled_logprobs(token_ids: list[int], logprobs: Any) -> list[float] | None:
    """Log-probabilities of the sampled tokens from vLLM's per-position `{id: Logprob}` maps."""
    if not logprobs:
        return None
    out: list[float] = []
    for tok, entry in zip(token_ids, logprobs, strict=False):
        lp = entry.get(tok) if hasattr(entry, "get") else None
        out.append(float(lp.logprob) if lp is not None else float("-inf"))
    return out
