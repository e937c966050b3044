"""The one error the Kubernetes client layer raises, translated from lightkube/httpx at one seam."""

from __future__ import annotations

import contextlib

from dynamo.runtime.errors import TransportError

# Statuses worth retrying unchanged: unreachable (0), timeouts, throttling, server trouble.
TRANSIENT_STATUSES = frozenset({0, 408, 429, 500, 502, 503, 504})


class KubeApiError(TransportError):
    """The API server refused a request (`status`: its HTTP code) or could not be reached
    (`status` 0). `transient` says whether the same request may succeed later."""

    def __init__(self, message: str, *, status: int = 0) -> None:
        super().__init__(message)
        self.status = status

    @property
    def transient(self) -> bool:
        return self.status in TRANSIENT_STATUSES


class KubeWatchExpiredError(KubeApiError):
    """410 Gone: the resourceVersion a watch started from is too old; list again."""


def translate(action: str, exc: Exception) -> KubeApiError:
    """`exc` (lightkube `ApiError`, httpx status or transport error, `OSError`) as a
    `KubeApiError`. lightkube raises `ApiError` with a Status only for a bare
    `application/json` reply and a plain `HTTPStatusError` otherwise, so both are read."""
    api_status = getattr(exc, "status", None)
    status = int(getattr(api_status, "code", 0) or 0)
    detail = str(getattr(api_status, "message", "") or "")
    response = exc.__dict__.get("response")  # httpx's property raises when unset
    if response is not None:
        status = status or int(getattr(response, "status_code", 0) or 0)
        if not detail:
            with contextlib.suppress(RuntimeError):  # a streamed body that was not read
                detail = response.text[:300]
    detail = detail or str(exc) or type(exc).__name__
    cls = KubeWatchExpiredError if status == 410 else KubeApiError
    return cls(f"{action}: {status or 'unreachable'}: {detail}", status=status)
