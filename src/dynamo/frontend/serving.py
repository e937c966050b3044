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
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass
from typing import Any

from dynamo.frontend import logprobs as lp
from dynamo.frontend import postprocess as pp
from dynamo.frontend import responses as rs
from dynamo.frontend.accounting import RequestAccounting
from dynamo.frontend.detokenize import TextStream
from dynamo.frontend.disagg import DisaggRequest, DisaggRouter, DisaggSettings
from dynamo.frontend.engine_client import WORKER_WAIT_S
from dynamo.frontend.errors import HttpError, to_http_error
from dynamo.frontend.generation import Generation, Step
from dynamo.frontend.metrics import FrontendMetrics
from dynamo.frontend.model_manager import ModelManager
from dynamo.frontend.postprocess import choice_parser
from dynamo.frontend.preprocess import Preprocessor
from dynamo.frontend.preprocessor_cache import PreprocessorCache
from dynamo.frontend.protocol import ChatCompletionRequest, CompletionRequest, parse_body
from dynamo.frontend.tool_choice import check_card
from dynamo.protocols.model_card import ModelCard
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


class OpenAIServing:
    def __init__(
        self,
        models: ModelManager,
        preprocessors: PreprocessorCache,
        metrics: FrontendMetrics,
        *,
        overload_status: int = 503,
        disagg: DisaggRouter | None = None,
        reasoning_field: str = "reasoning_content",
    ) -> None:
        self._models = models
        self._reasoning_field = reasoning_field
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

    def reject(self, exc: BaseException, endpoint: str) -> JsonReply:
        """The error reply for a body that did not parse (counted under `endpoint`)."""
        err = self.error(exc)
        self._metrics.for_model("unknown").request_done(endpoint, False, err.error_type)
        return JsonReply(err.status, err.body())

    async def chat(self, body: bytes) -> Reply:
        return await self._serve(body, chat=True)

    async def completions(self, body: bytes) -> Reply:
        return await self._serve(body, chat=False)

    async def _prepare(self, model: str, kind: str) -> tuple[Preprocessor, Any, ModelCard]:
        entry, routed = self._models.lookup(model)
        if not entry.serves(kind):
            raise InvalidRequestError(f"The model `{model}` does not serve {kind}", param="model")
        # A worker whose card is known before the request plane lists its instance (a
        # frontend that just started, a worker registering) is a moment away: wait for it,
        # bounded, rather than refuse a request that would be served a moment later.
        if not routed.worker_ids() and not await routed.wait_for_worker(WORKER_WAIT_S):
            raise UnavailableError(f"No worker of model `{model}` is ready; retry later")
        try:
            pre = await self._pre.get(entry.card, entry.cards)
        except (ConfigError, UnavailableError) as exc:
            raise UnavailableError(f"The model `{model}` cannot be served: {exc}") from exc
        return pre, routed, entry.card

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
            pre, routed, card = await self._prepare(req.model, "chat" if chat else "completions")
            if req.guided_decoding() is not None and not card.structured_output:
                raise InvalidRequestError(
                    f"{req.guided_param()}: the workers of model `{req.model}` cannot constrain "
                    "their output (structured output needs a vLLM worker)",
                    param=req.guided_param(),
                )
            forced = check_card(req, card) if isinstance(req, ChatCompletionRequest) else None
            started = time.perf_counter()
            with span("tokenize"):
                ids = await pre.prompt_ids(req)
            if isinstance(req, ChatCompletionRequest) or isinstance(req.single_prompt(), str):
                self._metrics.tokenize_ms.observe(1000 * (time.perf_counter() - started))
            request_id = rs.new_id("chatcmpl" if chat else "cmpl")
            engine_requests = [
                pre.engine_request(req, ids, request_id if i == 0 else f"{request_id}-{i}")
                for i in range(req.n)
            ]
            if forced is not None:  # tool_choice required / named, as a JSON schema
                for r in engine_requests:
                    r["sampling_options"]["guided_decoding"] = forced  # type: ignore[typeddict-item]
        except DynamoError as exc:
            return self._error_reply(exc, req.model, endpoint, req.stream)
        # Parsed output keeps special tokens (harmony's <|channel|>, Mistral's [TOOL_CALLS]
        # are special in their tokenizers) but never decodes EOS.
        parsed = chat and (card.tool_call_parser is not None or card.reasoning_parser is not None)
        choices = []
        for i, engine_request in enumerate(engine_requests):
            if i and req.seed is not None:  # n samples of one seed must still differ
                engine_request["sampling_options"]["seed"] = req.seed + i
            text = TextStream(
                pre.tokenizer,
                stop=req.stop_strings(),
                prompt_ids=ids,
                skip_special_tokens=not parsed,
                drop_ids=pre.eos_token_ids if parsed else (),
            )
            acct = RequestAccounting(
                self._metrics.for_model(req.model), endpoint, req.stream, len(ids), text
            )
            outputs = self._disagg.generate(
                DisaggRequest(
                    engine_request,
                    routed,
                    self._models.prefill_of(req.model),
                    card.kv_block_size,
                    backend_instance_id=req.backend_instance_id(),
                    on_route=acct.routed,
                )
            )
            gen = Generation(
                req=req, request_id=request_id, pre=pre, text=text, acct=acct, outputs=outputs
            )
            choices.append(_Choice(i, gen, choice_parser(card, req)))
        echo = _echo_text(req, pre, ids)
        if not req.stream:
            return await self._unary(choices, echo)
        if len(choices) > 1:
            stream = self._stream_many(choices, echo)
        else:
            stream = self._stream(choices[0], echo)
        try:
            first = await stream.__anext__()
        except _FailedBeforeFirstChunk as exc:  # nothing sent yet: a plain HTTP error
            return JsonReply(exc.error.status, exc.error.body())
        return StreamReply(first, stream)

    async def _unary(self, choices: list[_Choice], echo: str) -> Reply:
        try:
            if len(choices) == 1:
                results = [await self._collect(choices[0], echo)]
            else:
                async with asyncio.TaskGroup() as group:
                    tasks = [group.create_task(self._collect(c, echo)) for c in choices]
                results = [t.result() for t in tasks]
        except asyncio.CancelledError:
            self._metrics.disconnected.inc()  # the client went away (handler cancelled)
            raise
        except Exception as exc:
            if isinstance(exc, ExceptionGroup):  # one choice failed: report the first error
                exc = exc.exceptions[0]
            err = self.error(exc)
            return JsonReply(err.status, err.body())
        first = choices[0].gen
        usage = first.acct.usage()
        for c in choices[1:]:  # one prompt, n samples: completion tokens add up
            more = c.gen.acct.usage()
            usage["completion_tokens"] += more["completion_tokens"]
            usage["total_tokens"] += more["completion_tokens"]
        return JsonReply(
            200,
            rs.body_of(
                chat=first.chat,
                request_id=first.request_id,
                model=first.model,
                created=int(time.time()),
                choices=results,
                usage=usage,
            ),
        )

    async def _collect(self, choice: _Choice, echo: str) -> dict[str, Any]:
        """Run one choice to its end; its OpenAI choice object (or the error it raised)."""
        gen, parser = choice.gen, choice.parser
        content: list[str] = [echo]
        reasoning: list[str] = []
        lps: list[dict[str, Any]] = []
        finish: str | None = None
        text: list[str] = []
        error_type: str | None = "cancelled"
        try:
            async for step in gen.steps():
                if step.logprobs is not None:
                    lps.append(step.logprobs)
                if parser is None:
                    content.append(step.text)
                    finish = step.finish
                    continue
                # Unary: the parsers see the whole text at once, so a tool block that
                # turns out malformed is content (a stream cannot take back a call it began).
                text.append(step.text)
                if step.finish is None:
                    continue
                parsed = parser.step(Step("".join(text), finish=step.finish))
                content.append(parsed.content)
                reasoning.append(parsed.reasoning)
                finish = parsed.finish
            error_type = None
        except Exception as exc:
            error_type = self.error(exc).error_type
            raise
        finally:
            await gen.close()
            gen.acct.done(error_type, started=gen.started)
        if not gen.chat:
            return rs.completion_choice(
                choice.index, "".join(content), finish, lp.merge_completion(lps)
            )
        if parser is None:
            msg: dict[str, Any] = {"role": "assistant", "content": "".join(content)}
        else:
            msg = pp.message(
                "".join(content), "".join(reasoning), parser.calls, self._reasoning_field
            )
        return rs.chat_choice(choice.index, msg, finish, lp.merge_chat(lps))

    async def _stream(self, choice: _Choice, echo: str) -> AsyncGenerator[bytes, None]:
        """One choice streamed: its chunks as they come; the finish chunk goes out in one
        write with the usage chunk (when asked) and `[DONE]`."""
        gen = choice.gen
        chunks = self._choice_chunks(choice, echo)
        finished = sent = False
        try:
            async for chunk, finished in chunks:
                if finished:
                    tail = b""
                    if gen.req.include_usage():
                        tpl = rs.ChunkTemplates(
                            chat=gen.chat, request_id=gen.request_id, model=gen.model
                        )
                        tail = tpl.usage(gen.acct.usage())
                    yield chunk + tail + rs.DONE
                    return
                sent = True
                yield chunk
        except (GeneratorExit, asyncio.CancelledError):
            if not finished:  # closed before its last chunk: the client left
                self._metrics.disconnected.inc()
            raise
        except Exception as exc:
            err = self.error(exc)
            if not sent:
                raise _FailedBeforeFirstChunk(err) from exc
            yield rs.error_event(err.body()) + rs.DONE
        finally:
            await chunks.aclose()

    async def _stream_many(self, choices: list[_Choice], echo: str) -> AsyncGenerator[bytes, None]:
        """`n` > 1 streamed: each choice's chunks as they come (with its `index`), then one
        usage chunk for all (completion tokens summed) and `[DONE]`."""
        queue: asyncio.Queue[tuple[bytes | None, BaseException | None]] = asyncio.Queue()

        async def pump(choice: _Choice) -> None:
            try:
                async for chunk, _ in self._choice_chunks(choice, echo):
                    await queue.put((chunk, None))
                await queue.put((None, None))
            except Exception as exc:
                await queue.put((None, exc))

        tasks = [asyncio.create_task(pump(c)) for c in choices]
        sent = False
        done = 0
        try:
            while done < len(choices):
                chunk, exc = await queue.get()
                if exc is not None:
                    err = self.error(exc)
                    if not sent:
                        raise _FailedBeforeFirstChunk(err) from exc
                    yield rs.error_event(err.body()) + rs.DONE
                    return
                if chunk is None:
                    done += 1
                    continue
                sent = True
                yield chunk
            first = choices[0].gen
            tail = b""
            if first.req.include_usage():
                usage = first.acct.usage()
                for c in choices[1:]:
                    more = c.gen.acct.usage()["completion_tokens"]
                    usage["completion_tokens"] += more
                    usage["total_tokens"] += more
                tpl = rs.ChunkTemplates(
                    chat=first.chat, request_id=first.request_id, model=first.model
                )
                tail = tpl.usage(usage)
            yield tail + rs.DONE
        except (GeneratorExit, asyncio.CancelledError):
            if done < len(choices):
                self._metrics.disconnected.inc()
            raise
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _choice_chunks(
        self, choice: _Choice, echo: str
    ) -> AsyncGenerator[tuple[bytes, bool], None]:
        """One choice's chunks, each with whether it is the last (the one with the finish
        reason; no usage, no `[DONE]`); raises what failed the choice; records its outcome.
        The one streaming path: `_stream` (n = 1) and `_stream_many` both read it."""
        gen, parser = choice.gen, choice.parser
        tpl = rs.ChunkTemplates(
            chat=gen.chat, request_id=gen.request_id, model=gen.model, index=choice.index
        )
        # `continuous_usage_stats`: every chunk carries the usage so far (the general chunk
        # form); otherwise text goes through the byte template, the hot path.
        usage = gen.acct.usage if gen.req.continuous_usage() else None
        error_type: str | None = "cancelled"
        pending: list[bytes] = []
        if gen.chat:
            role = {"role": "assistant", "content": ""}
            pending.append(tpl.delta(role, usage=usage()) if usage else tpl.role())
        if echo:
            pending.append(tpl.chunk(echo, usage=usage()) if usage else tpl.text(echo))
        try:
            async for step in gen.steps():
                finish = step.finish
                if parser is not None:
                    parsed = parser.step(step)
                    finish = parsed.finish
                    pending.extend(self._parsed_chunks(tpl, parsed, usage))
                elif step.logprobs is not None or (usage and step.text):
                    pending.append(
                        tpl.chunk(
                            step.text, logprobs=step.logprobs, usage=usage() if usage else None
                        )
                    )
                elif step.text:
                    pending.append(tpl.text(step.text))
                if finish is not None:
                    pending.append(tpl.chunk(None, finish=finish, usage=usage() if usage else None))
                    error_type = None
                    yield b"".join(pending), True
                    return
                if pending:
                    yield pending[0] if len(pending) == 1 else b"".join(pending), False
                    pending = []
        except Exception as exc:
            error_type = self.error(exc).error_type
            raise
        finally:
            await gen.close()
            gen.acct.done(error_type, started=gen.started)

    def _parsed_chunks(
        self,
        tpl: rs.ChunkTemplates,
        parsed: pp.ParsedStep,
        usage: Callable[[], dict[str, Any]] | None,
    ) -> list[bytes]:
        deltas = pp.deltas(parsed, self._reasoning_field)
        if parsed.logprobs is not None and not deltas:
            deltas = [{}]  # the tokens' logprobs still go out (their text is held back)
        return [
            tpl.delta(
                d,
                logprobs=parsed.logprobs if i == 0 else None,
                usage=usage() if usage else None,
            )
            for i, d in enumerate(deltas)
        ]


@dataclass(slots=True)
class _Choice:
    index: int
    gen: Generation
    parser: pp.ChoiceParser | None


def _echo_text(
    req: ChatCompletionRequest | CompletionRequest, pre: Preprocessor, ids: list[int]
) -> str:
    """The prompt a completion echoes before its text ("" when not asked)."""
    if not isinstance(req, CompletionRequest) or not req.echo:
        return ""
    prompt = req.single_prompt()
    return prompt if isinstance(prompt, str) else pre.tokenizer.decode(ids)


class _FailedBeforeFirstChunk(Exception):
    """A stream failed before sending anything; `_serve` answers with `error` instead."""

    def __init__(self, error: HttpError) -> None:
        super().__init__(error.message)
        self.error = error
