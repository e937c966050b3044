"""The non-OpenAI-chat endpoints served as chat completions: `/v1/responses` and Anthropic's
`/v1/messages`. Each converts its request to a chat request, lets `OpenAIServing` serve it (same
template, parsers, routing, metrics under `chat_completions`) and converts the answer back."""

from __future__ import annotations

import time

import orjson

from dynamo.frontend import anthropic_api as aa
from dynamo.frontend import responses_api as ra
from dynamo.frontend.anthropic_stream import MessageEvents
from dynamo.frontend.chat_events import convert as chat_events
from dynamo.frontend.protocol import parse_body
from dynamo.frontend.responses_stream import ResponseEvents
from dynamo.frontend.serving import JsonReply, OpenAIServing, Reply, StreamReply
from dynamo.runtime.errors import DynamoError


async def responses(serving: OpenAIServing, body: bytes) -> Reply:
    """`POST /v1/responses` (`responses_api`)."""
    try:
        req = parse_body(ra.ResponsesRequest, body)
        chat_body = orjson.dumps(ra.to_chat_body(req))
    except DynamoError as exc:
        return serving.reject(exc, "responses")
    reply = await serving.chat(chat_body)
    if isinstance(reply, JsonReply):
        if reply.status != 200:
            return reply
        return JsonReply(200, orjson.dumps(ra.to_response(req, orjson.loads(reply.body))))
    events = ResponseEvents(req, ra.new_id("resp"), int(time.time()))
    stream = chat_events(events, reply.first, reply.rest)
    return StreamReply(await stream.__anext__(), stream)


async def messages(serving: OpenAIServing, body: bytes) -> Reply:
    """`POST /v1/messages` (`anthropic_api`); errors in Anthropic's shape."""
    try:
        req = parse_body(aa.MessagesRequest, body)
        chat_body = orjson.dumps(aa.to_chat_body(req))
    except DynamoError as exc:
        rejected = serving.reject(exc, "messages")
        return JsonReply(rejected.status, aa.error_body(rejected.status, rejected.body))
    reply = await serving.chat(chat_body)
    if isinstance(reply, JsonReply):
        if reply.status != 200:
            return JsonReply(reply.status, aa.error_body(reply.status, reply.body))
        return JsonReply(200, orjson.dumps(aa.to_message(req, orjson.loads(reply.body))))
    stream = chat_events(MessageEvents(req), reply.first, reply.rest)
    return StreamReply(await stream.__anext__(), stream)
