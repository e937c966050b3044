"""The OpenAPI document lists the agent endpoints: /v1/responses always, /v1/messages when
`--enable-anthropic-api` serves it."""

from __future__ import annotations

from dynamo.frontend.openapi import openapi_document


def test_openapi_lists_v1_messages_only_when_enabled() -> None:
    assert "/v1/messages" not in openapi_document("t")["paths"]
    doc = openapi_document("t", anthropic_api=True)
    assert "MessagesRequest" in doc["components"]["schemas"]
    assert "ResponsesRequest" in doc["components"]["schemas"]
    assert "/v1/responses" in doc["paths"] and "/v1/messages" in doc["paths"]
