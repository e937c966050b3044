"""The frontend's OpenAPI 3.1 document, generated from the pydantic request models."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from dynamo.frontend.anthropic_api import MessagesRequest
from dynamo.frontend.protocol import ChatCompletionRequest, CompletionRequest, EmbeddingRequest
from dynamo.frontend.responses_api import ResponsesRequest

_REF = "#/components/schemas/{model}"

_ERROR = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["message", "type", "param", "code"],
            "properties": {
                "message": {"type": "string"},
                "type": {"type": "string"},
                "param": {"type": ["string", "null"]},
                "code": {"type": ["string", "null"]},
            },
        }
    },
}


def _schema(model: type[BaseModel], schemas: dict[str, Any]) -> dict[str, str]:
    doc = model.model_json_schema(ref_template=_REF)
    schemas.update(doc.pop("$defs", {}))
    schemas[model.__name__] = doc
    return {"$ref": _REF.format(model=model.__name__)}


def _errors(*codes: int) -> dict[str, Any]:
    ref = {"application/json": {"schema": {"$ref": _REF.format(model="Error")}}}
    return {str(c): {"description": "OpenAI-shaped error", "content": ref} for c in codes}


def _post(summary: str, body: dict[str, str], stream: bool) -> dict[str, Any]:
    content: dict[str, Any] = {"application/json": {"schema": {"type": "object"}}}
    if stream:
        content["text/event-stream"] = {"schema": {"type": "string"}}
    return {
        "post": {
            "summary": summary,
            "requestBody": {"required": True, "content": {"application/json": {"schema": body}}},
            "responses": {
                "200": {"description": "the response", "content": content},
                **_errors(400, 404, 408, 413, 500, 501, 503),
            },
        }
    }


def _get(summary: str, codes: tuple[int, ...] = ()) -> dict[str, Any]:
    responses: dict[str, Any] = {"200": {"description": summary}}
    responses.update(_errors(*codes))
    return {"get": {"summary": summary, "responses": responses}}


def openapi_document(version: str, *, anthropic_api: bool = False) -> dict[str, Any]:
    schemas: dict[str, Any] = {"Error": _ERROR}
    chat = _schema(ChatCompletionRequest, schemas)
    completion = _schema(CompletionRequest, schemas)
    embedding = _schema(EmbeddingRequest, schemas)
    responses = _schema(ResponsesRequest, schemas)
    paths: dict[str, Any] = {}
    if anthropic_api:
        messages = _schema(MessagesRequest, schemas)
        paths["/v1/messages"] = _post(
            "Create an Anthropic message (--enable-anthropic-api)", messages, True
        )
    return {
        "openapi": "3.1.0",
        "info": {"title": "pydynamo OpenAI-compatible frontend", "version": version},
        "paths": {
            "/v1/chat/completions": _post("Create a chat completion", chat, True),
            "/v1/completions": _post("Create a text completion", completion, True),
            "/v1/responses": _post("Create a model response (stateless)", responses, True),
            "/v1/embeddings": _post("Create embeddings", embedding, False),
            "/v1/models": _get("List the served models"),
            "/health": _get("Ready when at least one model has a worker", (503,)),
            "/live": _get("The process is up"),
            "/metrics": _get("Prometheus metrics"),
            **paths,
        },
        "components": {"schemas": schemas},
    }
