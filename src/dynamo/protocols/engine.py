"""Token-level request and response frames between a frontend/router and an engine worker.

These are plain dicts on the wire (msgpack); the TypedDicts document their shape.
"""

from __future__ import annotations

from typing import Literal, NotRequired, TypedDict

FinishReason = Literal["stop", "length", "cancelled", "error", "eos"]


class StopConditions(TypedDict, total=False):
    max_tokens: int | None
    min_tokens: int | None
    ignore_eos: bool
    stop_token_ids: list[int]


class GuidedDecoding(TypedDict, total=False):
    """Constrain the output (one of these): a JSON schema, any JSON object, a regex, one of
    several strings, or an EBNF grammar. Engines without structured output never get it."""

    json: dict[str, object] | str
    json_object: bool
    regex: str
    choice: list[str]
    grammar: str


class SamplingOptions(TypedDict, total=False):
    temperature: float | None
    top_p: float | None
    top_k: int | None
    seed: int | None
    logprobs: int | None
    min_p: float | None
    presence_penalty: float | None
    frequency_penalty: float | None
    repetition_penalty: float | None
    guided_decoding: GuidedDecoding


class EngineRequest(TypedDict):
    """`PreprocessedRequest`: what a worker's `generate` endpoint receives."""

    request_id: str
    model: str
    token_ids: list[int]
    stop_conditions: StopConditions
    sampling_options: SamplingOptions
    eos_token_ids: NotRequired[list[int]]
    extra_args: NotRequired[dict[str, object]]
    # Disaggregation: what a prefill worker returned, handed to the decode worker as is
    # (vLLM: {"kv_transfer_params": {...}}; the mocker: {"kv_transfer_params": {...}}).
    disaggregated_params: NotRequired[dict[str, object]]


class Usage(TypedDict, total=False):
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int


class KvTransferStats(TypedDict):
    """What a decode worker's KV transfer cost (sent once, on its first output)."""

    seconds: float
    bytes: int
    blocks: int


class EngineOutput(TypedDict, total=False):
    """`LLMEngineOutput`: one streamed chunk; `token_ids` are the new tokens only."""

    token_ids: list[int]
    finish_reason: FinishReason | None
    usage: Usage
    log_probs: list[float]
    error: str
    disaggregated_params: dict[str, object]  # a prefill worker's result, for the decode worker
    kv_transfer: KvTransferStats  # a decode worker pulled the prompt's KV from a prefill worker
