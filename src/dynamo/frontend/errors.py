"""Translate pydynamo errors into OpenAI error bodies and HTTP statuses (the one seam for it).

Body: `{"error": {"message", "type", "param", "code"}}`. Unexpected exceptions become a
generic 500 and are logged here with their traceback, which never reaches the client.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import orjson

from dynamo.runtime import errors as e

log = logging.getLogger(__name__)


class ModelNotFoundError(e.NotFoundError):
    """No worker has ever registered this model name (or its last one left)."""

    def __init__(self, model: str) -> None:
        super().__init__(f"The model `{model}` does not exist.")
        self.model = model


class NotImplementedFeatureError(e.DynamoError):
    """The request asks for something this frontend or model does not provide."""


class ToolChoiceNotHonouredError(e.DynamoError):
    """The model answered without the tool call that `tool_choice` requires (an engine that
    cannot constrain its output); OpenAI answers a model that broke its contract so."""


@dataclass(frozen=True, slots=True)
class HttpError:
    status: int
    message: str
    type: str
    param: str | None = None
    code: str | None = None
    error_type: str = "internal"  # the `error_type` metric label

    def body(self) -> bytes:
        return orjson.dumps(
            {
                "error": {
                    "message": self.message,
                    "type": self.type,
                    "param": self.param,
                    "code": self.code,
                }
            }
        )


def bad_request(message: str, *, param: str | None = None, code: str | None = None) -> HttpError:
    return HttpError(400, message, "invalid_request_error", param, code, "validation")


def to_http_error(exc: BaseException, *, overload_status: int = 503) -> HttpError:
    """The OpenAI error for `exc`; logs unexpected ones (with traceback) as bugs."""
    if isinstance(exc, e.PromptTooLongError):
        return bad_request(str(exc), param=exc.param or "messages", code="context_length_exceeded")
    if isinstance(exc, e.InvalidRequestError):
        return bad_request(str(exc), param=exc.param)
    if isinstance(exc, ModelNotFoundError):
        return HttpError(
            404, str(exc), "invalid_request_error", "model", "model_not_found", "not_found"
        )
    if isinstance(exc, e.NotFoundError):
        return HttpError(404, str(exc), "invalid_request_error", None, "not_found", "not_found")
    if isinstance(exc, e.OverloadedError):
        return HttpError(
            overload_status,
            str(exc) or "All workers are busy; retry later",
            "overloaded_error",
            None,
            "overloaded",
            "overload",
        )
    if isinstance(exc, e.UnavailableError):
        return HttpError(
            503,
            str(exc) or "Service is not ready",
            "service_unavailable",
            None,
            "service_unavailable",
            "unavailable",
        )
    if isinstance(exc, e.TransportError):
        return HttpError(
            503,
            f"Lost the connection to the worker: {exc}",
            "service_unavailable",
            None,
            "worker_unavailable",
            "unavailable",
        )
    if isinstance(exc, e.RemoteError):
        if 400 <= exc.status < 500:
            return HttpError(
                exc.status, str(exc), "invalid_request_error", None, exc.kind, "validation"
            )
        return HttpError(
            500,
            f"The worker failed: {str(exc)[:500]}",
            "internal_error",
            None,
            "worker_error",
            "internal",
        )
    if isinstance(exc, e.CancelledError):
        return HttpError(499, "Request cancelled", "cancelled", None, "cancelled", "cancelled")
    if isinstance(exc, NotImplementedFeatureError):
        return HttpError(
            501, str(exc), "not_implemented", None, "not_implemented", "not_implemented"
        )
    if isinstance(exc, ToolChoiceNotHonouredError):
        return HttpError(500, str(exc), "model_error", "tool_choice", "tool_choice_not_honoured")
    log.error("unexpected error while serving a request", exc_info=exc)
    return HttpError(500, "Internal server error", "internal_error", None, "internal_error")
