"""What the vLLM, SGLang and TensorRT-LLM adapters share: lazy imports, request checks and
sampling translation, finish reasons, output-stream bookkeeping and error translation.

Functions over plain data (and `importlib`), and one loop over any async stream of engine
results (`stream_outputs`), so they are tested without any engine.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import inspect
import logging
from collections.abc import (
    AsyncGenerator,
    AsyncIterator,
    Awaitable,
    Callable,
    Collection,
    Iterable,
    Mapping,
)
from typing import Any, NoReturn, TypeVar

from dynamo.engines.base import EngineInfo
from dynamo.engines.cancellable import STOPPED, until_stopped
from dynamo.protocols.engine import EngineOutput, EngineRequest, FinishReason, Usage
from dynamo.protocols.model_card import WorkerRole
from dynamo.runtime.errors import (
    ConfigError,
    DynamoError,
    EngineShutdownError,
    InvalidRequestError,
    PromptTooLongError,
    UnavailableError,
)
from dynamo.runtime.transport.base import RequestContext

log = logging.getLogger(__name__)

T = TypeVar("T")


def import_engine(module: str, product: str, install_hint: str) -> Any:
    """Import an engine's package when it is first needed, or say how to install it."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ConfigError(
            f"{product} is not installed in this Python environment: {install_hint} ({exc})"
        ) from exc


class ConfigErrorParser(argparse.ArgumentParser):
    """An argument parser that raises ConfigError instead of exiting on a bad flag."""

    def error(self, message: str) -> NoReturn:
        raise ConfigError(message)


def role_of_disaggregation_mode(mode: str | None) -> WorkerRole:
    """The worker role of an engine's `prefill` / `decode` / anything-else mode."""
    return {"prefill": WorkerRole.PREFILL, "decode": WorkerRole.DECODE}.get(
        mode or "", WorkerRole.AGGREGATED
    )


# --- requests ------------------------------------------------------------------------------
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


def max_new_tokens(request: EngineRequest, context_length: int) -> int:
    """The request's `max_tokens`, capped by the room left in the context (all of it when unset).

    An unset `max_tokens` means "up to the context length", not an engine's own default.
    """
    room = context_length - len(request["token_ids"])
    max_tokens = (request.get("stop_conditions") or {}).get("max_tokens")
    if max_tokens is None:
        return room
    if type(max_tokens) is not int or max_tokens < 1:
        raise InvalidRequestError("max_tokens must be an integer >= 1", param="max_tokens")
    return min(max_tokens, room)


def stop_options(
    request: EngineRequest, context_length: int, *, max_key: str, min_key: str
) -> dict[str, Any]:
    """The stop conditions every engine takes, `max_key` / `min_key` naming its token limits:
    the token budget, `ignore_eos`, and the minimum tokens and stop token ids when set."""
    stop = request.get("stop_conditions") or {}
    params: dict[str, Any] = {
        max_key: max_new_tokens(request, context_length),
        "ignore_eos": bool(stop.get("ignore_eos", False)),
    }
    min_tokens = stop.get("min_tokens")
    if min_tokens:
        params[min_key] = int(min_tokens)
    stop_ids = list(stop.get("stop_token_ids") or [])
    if stop_ids:
        params["stop_token_ids"] = stop_ids
    return params


def set_options(sampling: Mapping[str, Any], keys: Iterable[str]) -> dict[str, Any]:
    """The `keys` of the request's sampling options that are set (not None)."""
    return {key: sampling[key] for key in keys if sampling.get(key) is not None}


def build_sampling_params(factory: Callable[..., T], **kwargs: Any) -> T:
    """An engine's sampling-params object; what it refuses is the request's fault."""
    try:
        return factory(**kwargs)
    except (ValueError, TypeError) as exc:
        raise InvalidRequestError(f"invalid sampling parameters: {exc}") from exc


# Finish reasons of requests the engine ended before the model did, not failures: SGLang's
# "abort", TensorRT-LLM's "cancelled" (aborted) and "timeout" (past its time limit).
ENGINE_GAVE_UP = frozenset({"abort", "cancelled", "timeout"})


def finish_reason(
    engine_reason: str | None, stop_reason: int | str | None, eos_token_ids: Collection[int]
) -> FinishReason | None:
    """Our finish reason for an engine's `(finish_reason, stop_reason)`.

    Engines say "stop" for EOS too; the stop reason is None then (or the EOS id when EOS ids
    were passed as stop tokens); a string or another id is a stop sequence or stop token.
    """
    if engine_reason is None:
        return None
    if engine_reason == "stop":
        if stop_reason is None or (isinstance(stop_reason, int) and stop_reason in eos_token_ids):
            return "eos"
        return "stop"
    if engine_reason == "length":
        return "length"
    if engine_reason in ENGINE_GAVE_UP:
        return "cancelled"
    # "error" for an engine's own error, and for a reason we do not know (which the frontend
    # then answers as an error rather than guessing it was a normal end)
    if engine_reason != "error":
        log.warning("unknown engine finish reason %r: reported as an error", engine_reason)
    return "error"


# --- responses -----------------------------------------------------------------------------
class OutputStream:
    """The bookkeeping of one request's output stream: usage so far and whether it finished."""

    def __init__(self, prompt_tokens: int) -> None:
        self.usage: Usage = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": 0,
            "cached_tokens": 0,
        }
        self.finished = False

    @property
    def sent(self) -> int:
        """Tokens generated so far."""
        return self.usage["completion_tokens"]

    def new_tokens(self, cumulative: list[int]) -> list[int]:
        """The tokens of a cumulative output that were not sent yet."""
        return cumulative[self.sent :]

    def cancelled(self) -> EngineOutput:
        """The last output of a request its caller gave up on."""
        return {"token_ids": [], "finish_reason": "cancelled", "usage": self.usage}

    def output(
        self,
        new_tokens: list[int],
        reason: FinishReason | None,
        *,
        cached_tokens: int | None = None,
        log_probs: list[float] | None = None,
    ) -> EngineOutput:
        """The output carrying `new_tokens`; the last one (with `reason`) carries the usage."""
        self.usage["completion_tokens"] = self.sent + len(new_tokens)
        if cached_tokens is not None:
            self.usage["cached_tokens"] = cached_tokens
        out: EngineOutput = {"token_ids": new_tokens}
        if log_probs is not None:
            out["log_probs"] = log_probs
        if reason is not None:
            out["finish_reason"] = reason
            out["usage"] = dict(self.usage)  # type: ignore[typeddict-item]
            self.finished = True
        return out


def serving(
    product: str, closing: bool, engine: T | None, info: EngineInfo | None
) -> tuple[T, EngineInfo]:
    """The engine and its info for a request; refused while shutting down or before start."""
    if closing:
        raise EngineShutdownError(f"{product} engine is shutting down")
    if engine is None or info is None:
        raise UnavailableError(f"{product} engine is not started")
    return engine, info


async def stream_outputs(
    product: str,
    results: AsyncIterator[Any] | Awaitable[AsyncIterator[Any]],
    context: RequestContext,
    out: OutputStream,
    convert: Callable[[Any], EngineOutput],
) -> AsyncGenerator[EngineOutput, None]:
    """Our outputs for an engine's stream of `results` (or an awaitable of it), `convert`
    making each (through `out`): a cancelled output if `context` stops first, the end at the
    finishing output, and the engine's errors as ours (`request_error`)."""
    try:
        if inspect.isawaitable(results):
            results = await results
        async with contextlib.aclosing(until_stopped(results, context)) as items:
            async for item in items:
                if item is STOPPED:
                    yield out.cancelled()
                    return
                yield convert(item)
                if out.finished:
                    return
        raise UnavailableError(f"{product} ended the stream without a finish reason")
    except DynamoError:
        raise
    except Exception as exc:
        raise request_error(exc, product) from exc


def request_error(exc: Exception, engine: str) -> DynamoError:
    """Ours for an engine's exception out of a request: a ValueError is the request's fault,
    anything else makes the engine unavailable for it."""
    if isinstance(exc, DynamoError):
        return exc
    if isinstance(exc, ValueError):
        return InvalidRequestError(f"{engine} rejected the request: {exc}")
    return UnavailableError(f"{engine} failed the request: {type(exc).__name__}: {exc}")
