"""One call a process makes at start: logging from `DYN_LOG`/`DYN_LOGGING_JSONL`, tracing
from `OTEL_*` (spans are flushed at exit)."""

from __future__ import annotations

import atexit
from collections.abc import Mapping

from dynamo.runtime.logging_config import configure_logging
from dynamo.runtime.tracing import configure_tracing


def setup_observability(
    component: str, log_spec: str | None = None, env: Mapping[str, str] | None = None
) -> None:
    """Configure logs and traces for a `component` process; `log_spec` (its `--log-level`)
    beats `DYN_LOG`. Raises ConfigError (MissingExtraError when the `otel` extra is needed)."""
    configure_logging(component, log_spec, env=env)
    provider = configure_tracing(component, env)
    if provider is not None:
        atexit.register(provider.shutdown)
