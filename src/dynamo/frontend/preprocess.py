"""Turn a validated OpenAI request into the `EngineRequest` a worker receives.

One `Preprocessor` per model (cached by `preprocessor_cache.PreprocessorCache`): chat template,
tokenizer, context length. It checks the prompt against the context window, fills stop
conditions and sampling options, and leaves routing to the engine client.
"""

from __future__ import annotations

import asyncio
import json
import time
from concurrent.futures import Executor
from typing import Any

from tokenizers import Tokenizer

from dynamo.frontend.chat_template import ChatTemplate, fallback_template
from dynamo.frontend.protocol import (
    AssistantToolCall,
    ChatCompletionRequest,
    CompletionRequest,
    _SamplingFields,
)
from dynamo.frontend.tokenizer_files import TokenizerFiles
from dynamo.protocols.engine import EngineRequest, SamplingOptions, StopConditions
from dynamo.protocols.model_card import ModelCard
from dynamo.runtime.errors import InvalidRequestError, PromptTooLongError
from dynamo.runtime.tracing import past_span, tracing_enabled

# Texts shorter than this are encoded on the event loop (~1 us per token, ~5 characters a
# token): handing them to a thread would cost more than it frees.
INLINE_ENCODE_CHARS = 2048


class Preprocessor:
    """Chat template + tokenizer + limits of one model."""

    def __init__(
        self, card: ModelCard, files: TokenizerFiles, encoder: Executor | None = None
    ) -> None:
        self.model = card.name
        self.tokenizer: Tokenizer = files.tokenizer
        self.context_length = card.context_length
        self.eos_token_ids = list(files.eos_token_ids)
        self.vocab_size = files.tokenizer.get_vocab_size(with_added_tokens=True)
        self._fast = hasattr(files.tokenizer, "encode_batch_fast")
        # Only the batch call releases the GIL while it encodes: threads pay off with it alone.
        self._encoder = encoder if self._fast else None
        self._template = ChatTemplate(
            files.chat_template or fallback_template(),
            bos_token=files.bos_token,
            eos_token=files.eos_token,
        )

    # --- prompts -----------------------------------------------------------------------
    async def prompt_ids(self, req: ChatCompletionRequest | CompletionRequest) -> list[int]:
        """The request's prompt as token ids; long texts are encoded off the event loop."""
        if isinstance(req, ChatCompletionRequest):
            return await self.encode_async(self.chat_prompt_text(req), add_special_tokens=False)
        prompt = self._completion_prompt(req)
        if isinstance(prompt, str):
            return await self.encode_async(prompt, add_special_tokens=True)
        return prompt

    def chat_prompt_ids(self, req: ChatCompletionRequest) -> list[int]:
        # The template already holds the BOS token if the model wants one.
        return self._encode(self.chat_prompt_text(req), False)

    def chat_prompt_text(self, req: ChatCompletionRequest) -> str:
        messages: list[dict[str, Any]] = []
        for m in req.messages:
            msg: dict[str, Any] = {"role": m.role, "content": m.text()}
            if m.name is not None:
                msg["name"] = m.name
            if m.tool_call_id is not None:
                msg["tool_call_id"] = m.tool_call_id
            if m.tool_calls is not None:
                msg["tool_calls"] = [_template_tool_call(c) for c in m.tool_calls]
            messages.append(msg)
        extra = dict(req.chat_template_kwargs or {})
        if req.tool_choice is not None:
            choice = req.tool_choice
            extra["tool_choice"] = choice if isinstance(choice, str) else choice.model_dump()
        return self._template.render(
            messages,
            add_generation_prompt=req.add_generation_prompt,
            tools=req.rendered_tools(),
            extra=extra,
        )

    def completion_prompt_ids(self, req: CompletionRequest) -> list[int]:
        prompt = self._completion_prompt(req)
        return self._encode(prompt, True) if isinstance(prompt, str) else prompt

    def _completion_prompt(self, req: CompletionRequest) -> str | list[int]:
        """The text to encode, or the checked token ids."""
        prompt = req.single_prompt()
        if isinstance(prompt, str):
            if not prompt:
                raise InvalidRequestError("prompt: must not be empty", param="prompt")
            return prompt
        bad = next((t for t in prompt if not 0 <= t < self.vocab_size), None)
        if bad is not None:
            raise InvalidRequestError(
                f"prompt: token id {bad} is outside the vocabulary (0..{self.vocab_size - 1})",
                param="prompt",
            )
        return list(prompt)

    def encode(self, text: str) -> list[int]:
        return self._encode(text, True)

    async def encode_async(self, text: str, *, add_special_tokens: bool) -> list[int]:
        """Encode `text`; a long one in the encoder threads, so the loop serves streams meanwhile
        and a burst of prompts is encoded on every core (`encode_batch_fast` drops the GIL)."""
        if self._encoder is None or len(text) < INLINE_ENCODE_CHARS:
            return self._encode(text, add_special_tokens)
        loop = asyncio.get_running_loop()
        if not tracing_enabled():
            return await loop.run_in_executor(self._encoder, self._encode, text, add_special_tokens)
        # traced: an `encode` span for the thread's part, so the wait for a free encoder
        # thread (before it) and for the loop to take the result (after it) show
        ids, start_ns, end_ns = await loop.run_in_executor(
            self._encoder, self._timed_encode, text, add_special_tokens
        )
        past_span("encode", start_ns, end_ns, tokens=len(ids))
        return ids

    def _timed_encode(self, text: str, add_special_tokens: bool) -> tuple[list[int], int, int]:
        start_ns = time.time_ns()
        ids = self._encode(text, add_special_tokens)
        return ids, start_ns, time.time_ns()

    def _encode(self, text: str, add_special_tokens: bool) -> list[int]:
        # encode_batch_fast skips offset tracking: about twice as fast for short prompts
        if self._fast:
            batch = self.tokenizer.encode_batch_fast([text], add_special_tokens=add_special_tokens)
            return batch[0].ids
        return self.tokenizer.encode(text, add_special_tokens=add_special_tokens).ids

    # --- the engine request ------------------------------------------------------------
    def check_length(self, n_prompt: int, max_tokens: int | None) -> int:
        """The max new tokens to ask for; raises PromptTooLongError if it cannot fit."""
        ctx = self.context_length
        if n_prompt >= ctx:
            raise PromptTooLongError(
                f"This model's maximum context length is {ctx} tokens. However, your prompt "
                f"has {n_prompt} tokens. Please reduce the length of the prompt.",
                param="messages",
            )
        if max_tokens is None:
            return ctx - n_prompt
        if n_prompt + max_tokens > ctx:
            raise PromptTooLongError(
                f"This model's maximum context length is {ctx} tokens. However, you requested "
                f"{n_prompt + max_tokens} tokens ({n_prompt} in the prompt, {max_tokens} for "
                "the completion). Please reduce the length of the prompt or of max_tokens.",
                param="max_tokens",
            )
        return max_tokens

    def engine_request(
        self,
        req: ChatCompletionRequest | CompletionRequest,
        token_ids: list[int],
        request_id: str,
    ) -> EngineRequest:
        max_tokens = self.check_length(len(token_ids), req.max_new_tokens())
        stop: StopConditions = {"max_tokens": max_tokens}
        min_tokens = req.effective_min_tokens()
        if min_tokens is not None:
            if min_tokens > max_tokens:
                raise InvalidRequestError(
                    f"min_tokens ({min_tokens}) must not exceed max_tokens ({max_tokens})",
                    param="min_tokens",
                )
            stop["min_tokens"] = min_tokens
        if req.effective_ignore_eos():
            stop["ignore_eos"] = True
        if req.stop_token_ids:
            stop["stop_token_ids"] = list(req.stop_token_ids)
        out: EngineRequest = {
            "request_id": request_id,
            "model": self.model,
            "token_ids": token_ids,
            "stop_conditions": stop,
            "sampling_options": _sampling(req),
        }
        if self.eos_token_ids:
            out["eos_token_ids"] = self.eos_token_ids
        if req.extra_args:
            out["extra_args"] = dict(req.extra_args)
        return out


def _template_tool_call(call: AssistantToolCall) -> dict[str, Any]:
    """A past call as chat templates expect it: arguments as a mapping (templates write them
    with `tojson`; a JSON string would be quoted twice), as transformers and vLLM pass them."""
    out = call.model_dump()
    try:
        args = json.loads(call.function.arguments)
    except json.JSONDecodeError:
        return out  # not JSON: the template gets the text as the client sent it
    if isinstance(args, dict):
        out["function"]["arguments"] = args
    return out


def _sampling(req: _SamplingFields) -> SamplingOptions:
    s: SamplingOptions = {}
    if req.temperature is not None:
        s["temperature"] = req.temperature
    if req.top_p is not None:
        s["top_p"] = req.top_p
    top_k = req.effective_top_k()
    if top_k is not None:
        s["top_k"] = top_k
    if req.seed is not None:
        s["seed"] = req.seed
    if req.min_p is not None:
        s["min_p"] = req.min_p
    if req.presence_penalty is not None:
        s["presence_penalty"] = req.presence_penalty
    if req.frequency_penalty is not None:
        s["frequency_penalty"] = req.frequency_penalty
    if req.repetition_penalty is not None:
        s["repetition_penalty"] = req.repetition_penalty
    guided = req.guided_decoding()
    if guided is not None:
        s["guided_decoding"] = guided
    n_logprobs = req.num_logprobs()  # type: ignore[attr-defined]
    if n_logprobs is not None:
        s["logprobs"] = n_logprobs
    return s
