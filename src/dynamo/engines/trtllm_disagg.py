"""TensorRT-LLM's side of disaggregated serving (pure functions over plain data).

A prefill worker (`--disaggregation-mode prefill`) runs each request as
`generate_async(..., disaggregated_params=DisaggregatedParams(request_type="context_only"))`:
the engine computes the prompt's KV and the first token and reports a `DisaggregatedParams`
(the first generated tokens, the context request id and an opaque state naming where the KV
lives). That is the request's `disaggregated_params`, the opaque state base64-encoded for the
wire. A decode worker hands it back as `request_type="generation_only"`; its cache transceiver
(`cache_transceiver_config` in `--extra-engine-args`) pulls the KV, and the generation goes on
from the first token.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable
from typing import Any

from dynamo.protocols.engine import EngineRequest
from dynamo.protocols.model_card import WorkerRole
from dynamo.runtime.errors import ConfigError, KvTransferError, UnavailableError

CONTEXT_ONLY = "context_only"
GENERATION_ONLY = "generation_only"


def require_cache_transceiver(llm_kwargs: dict[str, Any], role: WorkerRole) -> None:
    """Refuse at start a prefill/decode worker whose engine cannot move KV."""
    if role is WorkerRole.AGGREGATED:
        return
    config = llm_kwargs.get("cache_transceiver_config")
    if not isinstance(config, dict) or not config.get("backend"):
        raise ConfigError(
            f"a {role.value} worker needs TensorRT-LLM's cache transceiver to move KV: put "
            "`cache_transceiver_config: {backend: DEFAULT}` (or UCX, NIXL, MPI) in the "
            "--extra-engine-args YAML"
        )


def encode_params(params: Any) -> dict[str, object]:
    """A context-only result's `DisaggregatedParams` as the request's `disaggregated_params`."""
    if params is None:
        raise UnavailableError(
            "TensorRT-LLM returned no disaggregated params for a context-only request"
        )
    state = getattr(params, "opaque_state", None)
    draft = getattr(params, "draft_tokens", None)
    return {
        "request_type": getattr(params, "request_type", None),
        "first_gen_tokens": [int(t) for t in params.first_gen_tokens or []],
        "ctx_request_id": params.ctx_request_id,
        "opaque_state": base64.b64encode(bytes(state)).decode("ascii") if state else None,
        "draft_tokens": [int(t) for t in draft] if draft else None,
    }


def leg_params(
    request: EngineRequest, role: WorkerRole, params_cls: Callable[..., Any] | None
) -> Any | None:
    """The `disaggregated_params` argument of `generate_async` for `request` on a worker of
    `role` (None: an ordinary request). Malformed params, or params for a worker that is not a
    decode worker, raise KvTransferError (the frontend then serves the request aggregated)."""
    if role is WorkerRole.PREFILL:
        return _make(params_cls, request_type=CONTEXT_ONLY)
    data = request.get("disaggregated_params")
    if data is None:
        return None
    if role is not WorkerRole.DECODE:
        raise KvTransferError("this TensorRT-LLM worker is not a decode worker: it cannot load KV")
    if not isinstance(data, dict):
        raise KvTransferError(f"disaggregated_params must be an object, got {data!r:.80}")
    first = data.get("first_gen_tokens")
    if not isinstance(first, list) or not first or not all(type(t) is int for t in first):
        raise KvTransferError("first_gen_tokens must be a non-empty list of token ids")
    ctx_id = data.get("ctx_request_id")
    if type(ctx_id) is not int:
        raise KvTransferError(f"ctx_request_id must be an integer, got {ctx_id!r:.80}")
    draft = data.get("draft_tokens")
    if draft is not None and not (isinstance(draft, list) and all(type(t) is int for t in draft)):
        raise KvTransferError("draft_tokens must be a list of token ids")
    return _make(
        params_cls,
        request_type=GENERATION_ONLY,
        first_gen_tokens=first,
        ctx_request_id=ctx_id,
        opaque_state=_state(data.get("opaque_state")),
        draft_tokens=draft,
    )


def _state(value: object) -> bytes | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise KvTransferError("opaque_state must be a base64 string")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise KvTransferError(f"opaque_state is not valid base64: {exc}") from exc


def _make(params_cls: Callable[..., Any] | None, **fields: Any) -> Any:
    if params_cls is None:
        raise UnavailableError("TensorRT-LLM's DisaggregatedParams is not loaded")
    return params_cls(**fields)
