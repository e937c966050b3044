"""OpenTelemetry tracing, an optional extra (`pydynamo[otel]`), switched on as Dynamo does.

`OTEL_EXPORT_ENABLED=1` makes a process export spans over OTLP/HTTP to
`OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` (default `http://localhost:4318/v1/traces`) under
`OTEL_SERVICE_NAME` (default `dynamo-<component>`). Without it `span()` costs one global
read. Each span also becomes the request scope's W3C `traceparent`, which the request plane
carries to workers (`dynamo.runtime.request_scope`), so their spans join the same trace.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping
from typing import Any

from dynamo.runtime.errors import ConfigError
from dynamo.runtime.extras import import_extra
from dynamo.runtime.request_scope import current_traceparent, traceparent_scope

EXTRA = "otel"
_TRUE = {"1", "true", "yes", "on"}
_tracer: Any = None  # an opentelemetry Tracer once tracing is on
_propagate: Any = None
_trace: Any = None


def tracing_requested(env: Mapping[str, str] | None = None) -> bool:
    env = os.environ if env is None else env
    return env.get("OTEL_EXPORT_ENABLED", "").strip().lower() in _TRUE


def configure_tracing(component: str, env: Mapping[str, str] | None = None) -> Any:
    """Start exporting spans when `OTEL_EXPORT_ENABLED` asks; return the TracerProvider (call
    its `shutdown()` at exit to flush) or None. MissingExtraError names the extra to install."""
    env = os.environ if env is None else env
    if not tracing_requested(env):
        return None
    protocol = env.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or env.get(
        "OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"
    )
    if protocol != "http/protobuf":
        raise ConfigError(
            f"OTEL_EXPORTER_OTLP_TRACES_PROTOCOL={protocol!r} is not supported: spans are "
            "exported over OTLP/HTTP (http/protobuf, a collector's port 4318)"
        )
    sdk = import_extra("opentelemetry.sdk.trace", EXTRA)
    export = import_extra("opentelemetry.sdk.trace.export", EXTRA)
    resources = import_extra("opentelemetry.sdk.resources", EXTRA)
    otlp = import_extra("opentelemetry.exporter.otlp.proto.http.trace_exporter", EXTRA)
    endpoint = env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or None
    service = env.get("OTEL_SERVICE_NAME") or f"dynamo-{component}"
    provider = sdk.TracerProvider(resource=resources.Resource.create({"service.name": service}))
    provider.add_span_processor(export.BatchSpanProcessor(otlp.OTLPSpanExporter(endpoint=endpoint)))
    use_tracer_provider(provider)
    return provider


def use_tracer_provider(provider: Any) -> None:
    """Trace through `provider` from now on (None turns tracing off); tests pass an SDK
    provider with an in-memory exporter."""
    global _tracer, _propagate, _trace
    if provider is None:
        _tracer = None
        return
    _propagate = import_extra("opentelemetry.propagate", EXTRA)
    _trace = import_extra("opentelemetry.trace", EXTRA)
    _tracer = provider.get_tracer("dynamo")


def tracing_enabled() -> bool:
    return _tracer is not None


def past_span(
    name: str, start_ns: int, end_ns: int, **attributes: str | int | float | bool
) -> None:
    """A span, child of the current scope, for work timed elsewhere (in a thread that does
    not carry the scope): from `start_ns` to `end_ns` (`time.time_ns()`). No-op while off."""
    tracer = _tracer
    if tracer is None:
        return
    parent = current_traceparent()
    context = _propagate.extract({"traceparent": parent}) if parent else _trace.Context()
    tracer.start_span(name, context=context, attributes=attributes, start_time=start_ns).end(
        end_time=end_ns
    )


@contextlib.contextmanager
def span(name: str, **attributes: str | int | float | bool) -> Iterator[None]:
    """A span named `name`, child of the current scope's `traceparent` (local or received);
    a no-op while tracing is off. An error raised inside is recorded on the span.

    OpenTelemetry's own current context is never attached: the scope's `traceparent` is the
    one notion of "current", so spans opened in async generators end cleanly wherever the
    generator is closed.
    """
    tracer = _tracer
    if tracer is None:
        yield
        return
    parent = current_traceparent()
    context = _propagate.extract({"traceparent": parent}) if parent else _trace.Context()
    current = tracer.start_span(name, context=context, attributes=attributes)
    try:
        carrier: dict[str, str] = {}
        _propagate.inject(carrier, context=_trace.set_span_in_context(current))
        traceparent = carrier.get("traceparent")
        if traceparent is None:  # a non-recording (sampled-out) span keeps the parent's
            yield
        else:
            with traceparent_scope(traceparent):
                yield
    except Exception as exc:
        current.record_exception(exc)
        current.set_status(_trace.Status(_trace.StatusCode.ERROR, str(exc)))
        raise
    finally:
        current.end()
