"""One error tree for the whole project, grouped by what the caller can do about it."""

from __future__ import annotations


class DynamoError(Exception):
    """Root of every error pydynamo raises on purpose."""


# --- the caller should fix its request -------------------------------------------------
class InvalidRequestError(DynamoError):
    """The request is malformed or out of range; retrying it unchanged will fail again."""

    def __init__(self, message: str, *, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param


class NotFoundError(DynamoError):
    """The named model, endpoint or instance does not exist."""


class PromptTooLongError(InvalidRequestError):
    """The prompt does not fit the model's context or the engine's KV cache."""


class KvTransferError(InvalidRequestError):
    """A decode request's KV transfer params are malformed, stale or for another engine:
    send the request again without them (the decode worker then prefills it itself)."""


# --- the caller may retry later or elsewhere -------------------------------------------
class UnavailableError(DynamoError):
    """Nothing can serve the request right now (no instance, draining, starting)."""


class OverloadedError(UnavailableError):
    """Every candidate worker is over its busy threshold."""


class TransportError(DynamoError):
    """A connection to a peer failed or was refused."""


class StreamIncompleteError(TransportError):
    """A response stream ended without its final frame: the peer died or the link broke.

    Request migration keys on this error.
    """


class EngineShutdownError(UnavailableError):
    """The engine is shutting down and deliberately ended the stream (migrate it)."""


# --- the caller should give up --------------------------------------------------------
class RemoteError(DynamoError):
    """The peer handled the request and reported an error of its own."""

    def __init__(self, message: str, *, kind: str = "internal", status: int = 500) -> None:
        super().__init__(message)
        self.kind = kind
        self.status = status


class ConfigError(DynamoError):
    """A configuration value (flag, env var, manifest field) is invalid."""


class MissingExtraError(ConfigError):
    """A command needs a package that a plain install lacks: an extra's (`pydynamo[EXTRA]`) or
    an engine's; the message says what to install."""


class CancelledError(DynamoError):
    """The request was cancelled by its caller."""
