"""`OTEL_*` configuration: export over OTLP/HTTP to a real receiver, off by default, and clear
messages for what is not supported or not installed."""

from __future__ import annotations

import http.server
import sys
import threading
from collections.abc import Iterator

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from dynamo.runtime.errors import ConfigError, MissingExtraError
from dynamo.runtime.request_scope import current_traceparent, request_scope, trace_id_of
from dynamo.runtime.tracing import configure_tracing, span, tracing_enabled, use_tracer_provider


class _Receiver(http.server.BaseHTTPRequestHandler):
    bodies: list[tuple[str, bytes]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.bodies.append((self.path, body))
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def receiver() -> Iterator[str]:
    _Receiver.bodies = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Receiver)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()
    thread.join(5)


def test_off_unless_asked() -> None:
    assert configure_tracing("frontend", {}) is None
    assert configure_tracing("frontend", {"OTEL_EXPORT_ENABLED": "0"}) is None
    assert not tracing_enabled()
    with span("http"):  # a no-op, and no traceparent appears
        assert current_traceparent() is None


def test_spans_reach_an_otlp_http_receiver(receiver: str) -> None:
    env = {
        "OTEL_EXPORT_ENABLED": "true",
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": receiver + "/v1/traces",
        "OTEL_SERVICE_NAME": "my-frontend",
    }
    provider = configure_tracing("frontend", env)
    try:
        with (
            request_scope("r1", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
            span("http", route="/v1/chat/completions"),
        ):
            inner = current_traceparent()
            with pytest.raises(ValueError), span("tokenize"):
                raise ValueError("bad prompt")
    finally:
        use_tracer_provider(None)
        provider.shutdown()  # flushes the batch
    assert trace_id_of(inner) == "4bf92f3577b34da6a3ce929d0e0e4736"
    assert [path for path, _ in _Receiver.bodies] == ["/v1/traces"]
    export = ExportTraceServiceRequest.FromString(_Receiver.bodies[0][1])
    (resource_spans,) = export.resource_spans
    service = {a.key: a.value.string_value for a in resource_spans.resource.attributes}
    assert service["service.name"] == "my-frontend"
    spans = {s.name: s for scope in resource_spans.scope_spans for s in scope.spans}
    assert sorted(spans) == ["http", "tokenize"]
    assert spans["http"].trace_id.hex() == "4bf92f3577b34da6a3ce929d0e0e4736"
    assert spans["http"].parent_span_id.hex() == "00f067aa0ba902b7"
    assert spans["tokenize"].parent_span_id == spans["http"].span_id
    assert spans["tokenize"].status.code == 2  # ERROR
    assert spans["tokenize"].status.message == "bad prompt"
    assert [e.name for e in spans["tokenize"].events] == ["exception"]


def test_grpc_is_refused_with_a_reason() -> None:
    env = {"OTEL_EXPORT_ENABLED": "1", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "grpc"}
    with pytest.raises(ConfigError) as err:
        configure_tracing("worker", env)
    assert str(err.value) == (
        "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL='grpc' is not supported: spans are exported over "
        "OTLP/HTTP (http/protobuf, a collector's port 4318)"
    )


def test_a_missing_extra_names_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "opentelemetry.sdk.trace", None)
    with pytest.raises(MissingExtraError) as err:
        configure_tracing("worker", {"OTEL_EXPORT_ENABLED": "1"})
    assert str(err.value) == (
        "opentelemetry.sdk.trace is not installed: pip install 'pydynamo[otel]'"
    )
