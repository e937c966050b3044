"""Serve chat and text completions: validate, preprocess, route, then answer from the steps
of one `Generation` (the per-request object of `dynamo.frontend.generation`).

Each call returns a `JsonReply` (a full response or an error) or a `StreamReply` (SSE bytes).
Both paths read the same `Generation.steps()`, so they end by the same rule: a normal finish
answers 200; an engine error, an engine abort or a broken stream answers an OpenAI error (a
5xx body when unary; when streaming, a plain HTTP error while no chunk was sent, else an
in-band `{"error": ...}` event followed by `data: [DONE]`), counted as an error in
`requests_total`. Post-processing of the generated text (tool calls, reasoning) plugs in on
`Step`, before `_unary` joins the steps and `_stream` renders them.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from typing import Any

from dynamo.frontend import logprobs as lp
from dynamo.frontend import responses as rs
from dynamo.frontend.accounting import RequestAccounting
from dynamo.frontend.detokenize import TextStream
from dynamo.frontend.disagg import DisaggRequest, DisaggRouter, DisaggSettings
from dynamo.frontend.errors import HttpError, to_http_error
from dynamo.frontend.generation import Generation
from dynamo.frontend.metrics import FrontendMetrics
from dynamo.frontend.model_manager import ModelManager
from dynamo.frontend.preprocess import Preprocessor
from dynamo.frontend.preprocessor_cache import PreprocessorCache
from dynamo.frontend.protocol import ChatCompletionRequest, CompletionRequest, parse_body
from dynamo.runtime.errors import (
    ConfigError,
    DynamoError,
    InvalidRequestError,
    UnavailableError,
)


@dataclass(slots=True)
class JsonReply:
    status: int
    body: bytes


@dataclass(slots=True)
class StreamReply:
    first: bytes  # already produced: the stream is started, so closing it cleans up
    rest: AsyncGenerator[bytes, None]


Reply = JsonReply | StreamReply


class OpenAIServing:
    def __init__(
        self,
        models: ModelManager,
        preprocessors: PreprocessorCache,
        metrics: FrontendMetrics,
        *,
        overload_status: int = 503,
        disagg: DisaggRouter | None = None,
    ) -> None:
        self._models = models
        self._pre = preprocessors
        self._metrics = metrics
        self._overload_status = overload_status
        self._disagg = disagg or DisaggRouter(DisaggSettings())

    def error(self, exc: BaseException) -> HttpError:
        return to_http_error(exc, overload_status=self._overload_status)

    def _error_reply(self, exc: BaseException, model: str, endpoint: str, stream: bool) -> Reply:
        err = self.error(exc)
        label = model if self._models.registry.get(model) is not None else "unknown"
        self._metrics.for_model(label).request_done(endpoint, stream, err.error_type)
        return JsonReply(err.status, err.body())

    async def chat(self, body: bytes) -> Reply:
        return await self._serve(body, chat=True)

    async def completions(self, body: bytes) -> Reply:
        return await self._serve(body, chat=False)

    async def _prepare(self, model: str, kind: str) -> tuple[Preprocessor, Any, int]:
        entry, routed = self._models.lookup(model)
        if not entry.serves(kind):
            raise InvalidRequestError(f"The model `{model}` does not serve {kind}", param="model")
        if not routed.worker_ids():
            raise UnavailableError(f"No worker of model `{model}` is ready; retry later")
        try:
            pre = await self._pre.get(entry.card, entry.cards)
        except (ConfigError, UnavailableError) as exc:
            raise UnavailableError(f"The model `{model}` cannot be served: {exc}") from exc
        return pre, routed, entry.card.kv_block_size

    async def _serve(self, body: bytes, *, chat: bool) -> Reply:
        endpoint = "chat_completions" if chat else "completions"
        req: ChatCompletionRequest | CompletionRequest
        try:
            if chat:
                req = parse_body(ChatCompletionRequest, body)
            else:
                req = parse_body(CompletionRequest, body)
        except DynamoError as exc:
            return self._error_reply(exc, "", endpoint, False)
        try:
            pre, routed, block_size = await self._prepare(
                req.model, "chat" if chat else "completions"
            )
            started = time.perf_counter()
            ids = await pre.prompt_ids(req)
            if isinstance(req, ChatCompletionRequest) or isinstance(req.single_prompt(), str):
                self._metrics.tokenize_ms.observe(1000 * (time.perf_counter() - started))
            request_id = rs.new_id("chatcmpl" if chat else "cmpl")
            engine_request = pre.engine_request(req, ids, request_id)
        except DynamoError as exc:
            return self._error_reply(exc, req.model, endpoint, req.stream)
        text = TextStream(pre.tokenizer, stop=req.stop_strings(), prompt_ids=ids)
        acct = RequestAccounting(
            self._metrics.for_model(req.model), endpoint, req.stream, len(ids), text
        )
        outputs = self._disagg.generate(
            DisaggRequest(
                engine_request,
                routed,
                self._models.prefill_of(req.model),
                block_size,
                backend_instance_id=req.backend_instance_id(),
                on_route=acct.routed,
            )
        )
        gen = Generation(
            req=req, request_id=request_id, pre=pre, text=text, acct=acct, outputs=outputs
        )
        if not req.stream:
            return await self._unary(gen)
        stream = self._stream(gen)
        try:
            first = await stream.__anext__()
        except _FailedBeforeFirstChunk as exc:  # nothing sent yet: a plain HTTP error
            return JsonReply(exc.error.status, exc.error.body())
        return StreamReply(first, stream)

    async def _unary(self, gen: Generation) -> Reply:
        parts: list[str] = []
        lps: list[dict[str, Any]] = []
        finish: str | None = None
        error_type: str | None = "cancelled"
        try:
            async for step in gen.steps():
                parts.append(step.text)
                if step.logprobs is not None:
                    lps.append(step.logprobs)
                finish = step.finish
            error_type = None
        except asyncio.CancelledError:
            self._metrics.disconnected.inc()  # the client went away (handler cancelled)
            raise
        except Exception as exc:
            err = self.error(exc)
            error_type = err.error_type
            return JsonReply(err.status, err.body())
        finally:
            await gen.close()
            gen.acct.done(error_type, started=gen.started)
        build = rs.chat_completion if gen.chat else rs.completion
        merged = lp.merge_chat(lps) if gen.chat else lp.merge_completion(lps)
        return JsonReply(
            200,
            build(
                request_id=gen.request_id,
                model=gen.model,
                created=int(time.time()),
                text="".join(parts),
                finish=finish,
                usage=gen.acct.usage(),
                logprobs=merged,
            ),
        )

    async def _stream(self, gen: Generation) -> AsyncGenerator[bytes, None]:
        tpl = rs.ChunkTemplates(chat=gen.chat, request_id=gen.request_id, model=gen.model)
        error_type: str | None = "cancelled"
        pending = [tpl.role()] if gen.chat else []
        sent = False
        try:
            async for step in gen.steps():
                if step.logprobs is not None:
                    pending.append(tpl.chunk(step.text, logprobs=step.logprobs))
                elif step.text:
                    pending.append(tpl.text(step.text))
                if step.finish is not None:
                    pending.append(tpl.chunk(None, finish=step.finish))
                    if gen.req.include_usage():
                        pending.append(tpl.usage(gen.acct.usage()))
                    pending.append(rs.DONE)
                    error_type = None
                    yield b"".join(pending)
                    return
                if pending:
                    sent = True
                    yield pending[0] if len(pending) == 1 else b"".join(pending)
                    pending = []
        except (GeneratorExit, asyncio.CancelledError):
            if error_type is not None:  # closed before its last chunk: the client left
                self._metrics.disconnected.inc()
            raise
        except Exception as exc:
            err = self.error(exc)
            error_type = err.error_type
            if not sent:
                raise _FailedBeforeFirstChunk(err) from exc
            yield rs.error_event(err.body()) + rs.DONE
        finally:
            await gen.close()
            gen.acct.done(error_type, started=gen.started)


class _FailedBeforeFirstChunk(Exception):
    """A stream failed before sending anything; `_serve` answers with `error` instead."""

    def __init__(self, error: HttpError) -> None:
        super().__init__(error.message)
        self.error = error
