"""OpenAI `logprobs` objects from the per-token log probabilities an engine reports."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from tokenizers import Tokenizer


def _token_texts(tokenizer: Tokenizer, ids: Sequence[int]) -> list[str]:
    return [tokenizer.decode([i], skip_special_tokens=False) for i in ids]


def chat_logprobs(
    tokenizer: Tokenizer, ids: Sequence[int], logprobs: Sequence[float]
) -> dict[str, Any]:
    """`choices[].logprobs` of a chat completion: {"content": [{token, logprob, bytes, ...}]}."""
    content = [
        {"token": t, "logprob": lp, "bytes": list(t.encode()), "top_logprobs": []}
        for t, lp in zip(_token_texts(tokenizer, ids), logprobs, strict=False)
    ]
    return {"content": content}


def completion_logprobs(
    tokenizer: Tokenizer, ids: Sequence[int], logprobs: Sequence[float], text_offset: int
) -> dict[str, Any]:
    """`choices[].logprobs` of a completion: parallel token / logprob / offset lists."""
    tokens = _token_texts(tokenizer, ids)
    offsets = []
    pos = text_offset
    for t in tokens:
        offsets.append(pos)
        pos += len(t)
    return {
        "tokens": tokens,
        "token_logprobs": list(logprobs[: len(tokens)]),
        "top_logprobs": None,
        "text_offset": offsets,
    }


def merge_chat(parts: list[dict[str, Any]]) -> dict[str, Any] | None:
    if not parts:
        return None
    return {"content": [c for p in parts for c in p["content"]]}


def merge_completion(parts: list[dict[str, Any]]) -> dict[str, Any] | None:
    if not parts:
        return None
    return {
        "tokens": [t for p in parts for t in p["tokens"]],
        "token_logprobs": [t for p in parts for t in p["token_logprobs"]],
        "top_logprobs": None,
        "text_offset": [t for p in parts for t in p["text_offset"]],
    }
