"""One chat/completion request from its engine outputs to OpenAI choice steps, and the one
end-of-stream rule that both the unary and the streaming response follow.

`Generation.steps()` reads the worker's `EngineOutput`s and yields a `Step` per output: the new
text (detokenized, stop strings applied), its logprobs and, on the last one, the OpenAI finish
reason. How a stream ends is decided here and nowhere else (`finish_reason`):

- `stop`/`eos` → "stop", `length` → "length", a stop string reached → "stop";
- `error` → `RemoteError` (500 before a stream starts, an in-band error event after);
- `cancelled` that the frontend did not ask for (the engine gave up) → `UnavailableError` (503);
- any other reason → logged, then `RemoteError` like `error`;
- a worker stream that ends without a finish reason or breaks → `StreamIncompleteError`
  (`RoutedModel` migrates it first when `--migration-limit` allows).

A response post-processor (tool calls, reasoning: generated text → structured deltas) belongs
on `Step`: one per choice, fed each `Step.text` and the finish, shared by `_unary` and
`_stream` in `dynamo.frontend.serving`, which only join or render the steps.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from dynamo.frontend import logprobs as lp
from dynamo.frontend.accounting import RequestAccounting
from dynamo.frontend.detokenize import TextStream
from dynamo.frontend.preprocess import Preprocessor
from dynamo.frontend.protocol import ChatCompletionRequest, CompletionRequest
from dynamo.protocols.engine import EngineOutput
from dynamo.runtime.errors import RemoteError, StreamIncompleteError, UnavailableError

log = logging.getLogger(__name__)

_NORMAL = {"stop": "stop", "eos": "stop", "length": "length"}


def finish_reason(engine_reason: str, out: EngineOutput) -> str:
    """The OpenAI finish reason for a normal end; raises the error an abnormal one stands for."""
    normal = _NORMAL.get(engine_reason)
    if normal is not None:
        return normal
    if engine_reason == "error":
        detail = out.get("error") or "no detail given"
        raise RemoteError(f"the engine reported an error: {detail}", kind="engine_error")
    if engine_reason == "cancelled":
        raise UnavailableError("the engine aborted the request before it finished; retry it")
    log.warning("engine finish reason %r is unknown; answering with an error", engine_reason)
    raise RemoteError(
        f"the engine ended the request with an unknown finish reason {engine_reason!r}",
        kind="engine_error",
    )


@dataclass(slots=True)
class Step:
    """What one engine output adds to the choice: text, logprobs, and on the last the finish."""

    text: str
    logprobs: dict[str, Any] | None = None
    finish: str | None = None  # an OpenAI finish reason, on the last step only


class Generation:
    """Everything one chat/completion request needs once it is routed: the request, its
    tokenizer and text stream, its metrics, and the worker's outputs (closed by `close`)."""

    __slots__ = (
        "acct",
        "chat",
        "outputs",
        "pre",
        "req",
        "request_id",
        "started",
        "text",
        "want_logprobs",
    )

    def __init__(
        self,
        *,
        req: ChatCompletionRequest | CompletionRequest,
        request_id: str,
        pre: Preprocessor,
        text: TextStream,
        acct: RequestAccounting,
        outputs: AsyncIterator[EngineOutput],
    ) -> None:
        self.req = req
        self.chat = isinstance(req, ChatCompletionRequest)
        self.request_id = request_id
        self.pre = pre
        self.text = text
        self.acct = acct
        self.outputs = outputs
        self.want_logprobs = req.num_logprobs() is not None
        self.started = False  # the first engine output arrived

    @property
    def model(self) -> str:
        return self.req.model

    async def steps(self) -> AsyncIterator[Step]:
        """A `Step` per engine output, up to the finishing one (see the module docstring)."""
        acct, text = self.acct, self.text
        offset = 0  # characters of text so far (completion logprobs' text_offset)
        async for out in self.outputs:
            ids = out.get("token_ids")
            if not self.started:
                acct.first_output()
                self.started = True
            elif ids:
                acct.more_tokens(len(ids))
            piece = ""
            if ids:
                acct.add_tokens(len(ids))
                piece = text.push(ids)
            usage = out.get("usage")
            if usage:
                acct.cached = usage.get("cached_tokens") or 0
            finish: str | None = None
            if text.stopped:
                finish = "stop"
            else:
                reason = out.get("finish_reason")
                if reason is not None:
                    finish = finish_reason(reason, out)
            if finish is not None:
                piece += text.finish()
            logprobs = None
            if self.want_logprobs and ids and out.get("log_probs"):
                logprobs = self._logprobs(ids, out, offset)
            offset += len(piece)
            yield Step(piece, logprobs, finish)
            if finish is not None:
                return
        raise StreamIncompleteError("the worker ended the stream without a finish reason")

    def _logprobs(self, ids: list[int], out: EngineOutput, offset: int) -> dict[str, Any]:
        values = out.get("log_probs") or []
        if self.chat:
            return lp.chat_logprobs(self.pre.tokenizer, ids, values)
        return lp.completion_logprobs(self.pre.tokenizer, ids, values, offset)

    async def close(self) -> None:
        """Close the worker's stream (cancels the work there if it is still running)."""
        aclose = getattr(self.outputs, "aclose", None)
        if aclose is not None:
            await aclose()
