"""Process logging as Dynamo configures it: `DYN_LOG` filters, `DYN_LOGGING_JSONL=1` lines.

`DYN_LOG` takes Dynamo's (RUST_LOG) syntax: a default level and `target=level` overrides,
comma-separated, e.g. `info`, `warn,dynamo.router=debug` (`::` in a target reads as `.`).
Levels: trace, debug, info, warn, error, off. With `DYN_LOGGING_JSONL=1` each record is one
JSON object per line: time, level, component, target, message, request_id, trace_id.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import IO

import orjson

from dynamo.runtime.errors import ConfigError
from dynamo.runtime.request_scope import current_request_id, current_traceparent, trace_id_of

TRACE = 5
logging.addLevelName(TRACE, "TRACE")
_OFF = logging.CRITICAL + 10
_LEVELS = {
    "trace": TRACE,
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warn": logging.WARNING,
    "warning": logging.WARNING,
    "error": logging.ERROR,
    "critical": logging.CRITICAL,
    "off": _OFF,
}
_TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s%(scope)s"
_TRUE = {"1", "true", "yes", "on"}


@dataclass(frozen=True)
class LogFilter:
    """A parsed `DYN_LOG`: the root level and per-logger overrides."""

    level: int = logging.INFO
    targets: dict[str, int] = field(default_factory=dict)


def parse_log_filter(spec: str) -> LogFilter:
    """Parse `DYN_LOG` syntax; a bad directive is a ConfigError that names it."""
    level = logging.INFO
    targets: dict[str, int] = {}
    for raw in spec.split(","):
        directive = raw.strip()
        if not directive:
            continue
        target, sep, name = directive.rpartition("=")
        if not sep:
            target, name = "", directive
        lvl = _LEVELS.get(name.strip().lower())
        if lvl is None:
            raise ConfigError(
                f"DYN_LOG: unknown level {name.strip()!r} in {directive!r} "
                f"(use {', '.join(k for k in _LEVELS if k not in ('warning', 'critical'))})"
            )
        target = target.strip().replace("::", ".")
        if target:
            targets[target] = lvl
        else:
            level = lvl
    return LogFilter(level, targets)


class _ScopeFilter(logging.Filter):
    """Stamps each record with the component and the current request's scope."""

    def __init__(self, component: str) -> None:
        super().__init__()
        self.component = component

    def filter(self, record: logging.LogRecord) -> bool:
        request_id = current_request_id()
        trace_id = trace_id_of(current_traceparent())
        record.component = self.component
        record.request_id = request_id
        record.trace_id = trace_id
        parts = []
        if request_id:
            parts.append(f"request_id={request_id}")
        if trace_id:
            parts.append(f"trace_id={trace_id}")
        record.scope = f" [{' '.join(parts)}]" if parts else ""
        return True


class JsonlFormatter(logging.Formatter):
    """One JSON object per record, on one line."""

    def format(self, record: logging.LogRecord) -> str:
        obj: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="microseconds"),
            "level": record.levelname,
            "component": getattr(record, "component", None),
            "target": record.name,
            "message": record.getMessage(),
            "request_id": getattr(record, "request_id", None),
            "trace_id": getattr(record, "trace_id", None),
        }
        if record.exc_info:
            obj["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(obj, default=str).decode()


def configure_logging(
    component: str,
    spec: str | None = None,
    *,
    env: Mapping[str, str] | None = None,
    stream: IO[str] | None = None,
) -> LogFilter:
    """Configure the root logger for a `component` process: `spec` (a `--log-level` flag) beats
    `DYN_LOG` beats info; `DYN_LOGGING_JSONL` picks the line format. Returns the filter."""
    env = os.environ if env is None else env
    parsed = parse_log_filter(spec or env.get("DYN_LOG") or "info")
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.addFilter(_ScopeFilter(component))
    if env.get("DYN_LOGGING_JSONL", "").strip().lower() in _TRUE:
        handler.setFormatter(JsonlFormatter())
    else:
        handler.setFormatter(logging.Formatter(_TEXT_FORMAT))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(parsed.level)
    for target, level in parsed.targets.items():
        logging.getLogger(target).setLevel(level)
    return parsed
