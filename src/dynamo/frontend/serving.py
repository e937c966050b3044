"""Serve chat and text completions: validate, preprocess, route, detokenize, respond.

Each call returns a `JsonReply` (a full response or an error) or a `StreamReply` (SSE bytes).
A stream is only returned once the first output arrived, so routing and worker failures up to
then are plain HTTP errors; later failures are sent in-band, followed by `data: [DONE]`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass
from typing import Any

from dynamo.frontend import logprobs as lp
from dynamo.frontend import responses as rs
from dynamo.frontend.detokenize import TextStream
from dynamo.frontend.disagg import DisaggRequest, DisaggRouter, DisaggSettings
from dynamo.frontend.errors import HttpError, to_http_error
from dynamo.frontend.metrics import FrontendMetrics, ModelMetrics, WorkerLast
from dynamo.frontend.model_manager import ModelManager
from dynamo.frontend.preprocess import Preprocessor
from dynamo.frontend.preprocessor_cache import PreprocessorCache
from dynamo.frontend.protocol import ChatCompletionRequest, CompletionRequest, parse_body
from dynamo.protocols.engine import EngineOutput
from dynamo.runtime.errors import (
    ConfigError,
    DynamoError,
    InvalidRequestError,
    UnavailableError,
)
from dynamo.runtime.tracing import span


@dataclass(slots=True)
class JsonReply:
    status: int
    body: bytes


@dataclass(slots=True)
class StreamReply:
    first: bytes  # already produced: the stream is started, so closing it cleans up
    rest: AsyncGenerator[bytes, None]


Reply = JsonReply | StreamReply


class _Accounting:
    """Metrics of one request, recorded exactly once by `done`."""

    __slots__ = (
        "cached",
        "endpoint",
        "last",
        "mm",
        "prompt",
        "recorded",
        "start",
        "stream",
        "text",
        "tokens",
        "worker",
    )

    def __init__(
        self, mm: ModelMetrics, endpoint: str, stream: bool, prompt: int, text: TextStream
    ) -> None:
        self.mm = mm
        self.endpoint = endpoint
        self.stream = stream
        self.prompt = prompt
        self.text = text
        self.tokens = 0
        self.cached = 0
        self.worker: WorkerLast | None = None  # the per-worker gauges of the current worker
        self.start = self.last = time.monotonic()
        self.recorded = False
        mm.inflight.inc()
        mm.queued.inc()

    def routed(self, instance_id: int, dp_rank: int) -> None:
        self.worker = self.mm.parent.worker_last(self.mm.model, instance_id, dp_rank)

    def first_output(self) -> None:
        now = time.monotonic()
        self.mm.queued.dec()
        self.mm.ttft.observe(now - self.start)
        worker = self.worker
        if worker is not None:
            worker.ttft_s = now - self.start
            worker.isl = self.prompt
        self.last = now

    def more_tokens(self, n: int) -> None:
        now = time.monotonic()
        itl = (now - self.last) / n
        self.mm.itl.observe(itl)
        if self.worker is not None:
            self.worker.itl_s = itl
        self.last = now

    def add_tokens(self, n: int) -> None:
        self.tokens += n
        self.mm.output_tokens += n

    def done(self, error_type: str | None, *, started: bool) -> None:
        if self.recorded:
            return
        self.recorded = True
        mm = self.mm
        if not started:
            mm.queued.dec()
        mm.inflight.dec()
        mm.duration.observe(time.monotonic() - self.start)
        mm.request_done(self.endpoint, self.stream, error_type)
        detokenize_ms = self.text.mean_step_ms()
        if detokenize_ms is not None:
            mm.parent.detokenize_ms.observe(detokenize_ms)
        if error_type is None:
            mm.tokens_done(self.prompt, self.tokens, self.cached)

    def usage(self) -> dict[str, Any]:
        return rs.usage_dict(self.prompt, self.tokens, min(self.cached, self.prompt))


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
            with span("tokenize"):
                ids = await pre.prompt_ids(req)
            if isinstance(req, ChatCompletionRequest) or isinstance(req.single_prompt(), str):
                self._metrics.tokenize_ms.observe(1000 * (time.perf_counter() - started))
            request_id = rs.new_id("chatcmpl" if chat else "cmpl")
            engine_request = pre.engine_request(req, ids, request_id)
        except DynamoError as exc:
            return self._error_reply(exc, req.model, endpoint, req.stream)
        text = TextStream(pre.tokenizer, stop=req.stop_strings(), prompt_ids=ids)
        acct = _Accounting(self._metrics.for_model(req.model), endpoint, req.stream, len(ids), text)
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
        want_lp = req.num_logprobs() is not None
        if req.stream:
            tpl = rs.ChunkTemplates(chat=chat, request_id=request_id, model=req.model)
            gen = self._stream(acct, outputs, text, tpl, req.include_usage(), pre, want_lp)
            try:
                first = await gen.__anext__()
            except Exception as exc:
                err = self.error(exc)
                acct.done(err.error_type, started=False)
                return JsonReply(err.status, err.body())
            return StreamReply(first, gen)
        return await self._unary(acct, outputs, text, pre, req, request_id, chat, want_lp)

    async def _unary(
        self,
        acct: _Accounting,
        outputs: AsyncIterator[EngineOutput],
        text: TextStream,
        pre: Preprocessor,
        req: ChatCompletionRequest | CompletionRequest,
        request_id: str,
        chat: bool,
        want_lp: bool,
    ) -> Reply:
        parts: list[str] = []
        text_len = 0
        lps: list[dict[str, Any]] = []
        finish: str | None = None
        started = False
        error_type: str | None = "cancelled"
        try:
            async for out in outputs:
                ids = out.get("token_ids")
                if not started:
                    acct.first_output()
                    started = True
                elif ids:
                    acct.more_tokens(len(ids))
                if ids:
                    acct.add_tokens(len(ids))
                    if want_lp and out.get("log_probs"):
                        lps.append(self._lp(pre, ids, out, chat, text_len))
                    piece = text.push(ids)
                    parts.append(piece)
                    text_len += len(piece)
                usage = out.get("usage")
                if usage:
                    acct.cached = usage.get("cached_tokens") or 0
                if text.stopped:
                    finish = "stop"
                    break
                if out.get("finish_reason") is not None:
                    finish = rs.finish_reason(out.get("finish_reason"))
                    break
            parts.append(text.finish())
            error_type = None
        except asyncio.CancelledError:
            self._metrics.disconnected.inc()  # the client went away (handler cancelled)
            raise
        except Exception as exc:
            err = self.error(exc)
            error_type = err.error_type
            return JsonReply(err.status, err.body())
        finally:
            await _close(outputs)
            acct.done(error_type, started=started)
        build = rs.chat_completion if chat else rs.completion
        merged = lp.merge_chat(lps) if chat else lp.merge_completion(lps)
        return JsonReply(
            200,
            build(
                request_id=request_id,
                model=req.model,
                created=int(time.time()),
                text="".join(parts),
                finish=finish,
                usage=acct.usage(),
                logprobs=merged,
            ),
        )

    def _lp(
        self, pre: Preprocessor, ids: list[int], out: EngineOutput, chat: bool, offset: int
    ) -> dict[str, Any]:
        values = out.get("log_probs") or []
        if chat:
            return lp.chat_logprobs(pre.tokenizer, ids, values)
        return lp.completion_logprobs(pre.tokenizer, ids, values, offset)

    async def _stream(
        self,
        acct: _Accounting,
        outputs: AsyncIterator[EngineOutput],
        text: TextStream,
        tpl: rs.ChunkTemplates,
        include_usage: bool,
        pre: Preprocessor,
        want_lp: bool,
    ) -> AsyncGenerator[bytes, None]:
        is_chat = tpl.is_chat
        started = False
        error_type: str | None = "cancelled"
        offset = 0
        try:
            it = outputs.__aiter__()
            try:
                out = await it.__anext__()
            except StopAsyncIteration:
                out = _ENDED
            acct.first_output()
            started = True
            pending = [tpl.role()] if is_chat else []
            while True:
                ids = out.get("token_ids")
                chunk_text = ""
                if ids:
                    acct.add_tokens(len(ids))
                    chunk_text = text.push(ids)
                finish = out.get("finish_reason")
                usage = out.get("usage")
                if usage:
                    acct.cached = usage.get("cached_tokens") or 0
                if text.stopped:
                    finish = "stop"
                if finish is not None:
                    chunk_text += text.finish()
                logprobs = None
                if want_lp and ids and out.get("log_probs"):
                    logprobs = self._lp(pre, ids, out, is_chat, offset)
                if chunk_text or logprobs is not None:
                    offset += len(chunk_text)
                    if logprobs is None:
                        pending.append(tpl.text(chunk_text))
                    else:
                        pending.append(tpl.chunk(chunk_text, logprobs=logprobs))
                if finish is not None:
                    pending.append(tpl.chunk(None, finish=rs.finish_reason(finish)))
                    if include_usage:
                        pending.append(tpl.usage(acct.usage()))
                    pending.append(rs.DONE)
                    error_type = None
                    yield b"".join(pending)
                    return
                if pending:
                    yield pending[0] if len(pending) == 1 else b"".join(pending)
                    pending = []
                try:
                    out = await it.__anext__()
                except StopAsyncIteration:
                    out = _ENDED
                if out.get("token_ids"):
                    acct.more_tokens(len(out["token_ids"]))
        except (GeneratorExit, asyncio.CancelledError):
            if error_type is not None:  # closed before its last chunk: the client left
                self._metrics.disconnected.inc()
            raise
        except Exception as exc:
            if not started:
                raise
            err = self.error(exc)
            error_type = err.error_type
            yield rs.error_event(err.body()) + rs.DONE
        finally:
            await _close(outputs)
            acct.done(error_type, started=started)


# A worker stream that ended without a finish reason ends the response normally.
_ENDED: EngineOutput = {"token_ids": [], "finish_reason": "stop"}


async def _close(stream: AsyncIterator[Any]) -> None:
    aclose = getattr(stream, "aclose", None)
    if aclose is not None:
        await aclose()
