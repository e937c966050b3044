"""Prompt encoding: long texts go to the encoder threads and come back exactly as encoded inline."""

from __future__ import annotations

import asyncio
import json
import os
import random
import threading
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from tokenizers import Tokenizer

from dynamo.frontend.preprocess import INLINE_ENCODE_CHARS, Preprocessor
from dynamo.frontend.preprocessor_cache import (
    TOKENIZERS_PARALLELISM,
    PreprocessorCache,
    serial_tokenizers,
)
from dynamo.frontend.protocol import ChatCompletionRequest, CompletionRequest, parse_body
from dynamo.mocker.tinymodel import tiny_model_path
from dynamo.testing.frontend_harness import tiny_card


@pytest.fixture
async def cache() -> AsyncIterator[PreprocessorCache]:
    c = PreprocessorCache(encode_threads=2)
    yield c
    await c.close()


@pytest.fixture
async def pre(cache: PreprocessorCache) -> Preprocessor:
    return await cache.get(tiny_card(context_length=100_000))


def texts(n: int, words: int, seed: int = 7) -> list[str]:
    vocab = json.loads((Path(tiny_model_path()) / "tokenizer.json").read_text())["model"]["vocab"]
    pool = sorted(w[1:] for w in vocab if w.startswith("\u0120") and w[1:].isalpha())
    rng = random.Random(seed)
    # mixed content: words, digits, punctuation, non-ASCII, newlines
    extra = ["12345", "?!", "é", "日本", "\n", "  ", "<s>"]
    return [" ".join(rng.choice(pool + extra) for _ in range(words)) for _ in range(n)]


def completion(prompt: str | list[int]) -> CompletionRequest:
    return parse_body(CompletionRequest, json.dumps({"model": "tiny", "prompt": prompt}).encode())


def chat(content: str) -> ChatCompletionRequest:
    body = {"model": "tiny", "messages": [{"role": "user", "content": content}]}
    return parse_body(ChatCompletionRequest, json.dumps(body).encode())


async def test_a_burst_of_long_prompts_encodes_as_one_at_a_time(
    pre: Preprocessor, tokenizer: Tokenizer
) -> None:
    prompts = texts(12, 1500)
    assert all(len(p) >= INLINE_ENCODE_CHARS for p in prompts)
    got = await asyncio.gather(*(pre.prompt_ids(completion(p)) for p in prompts))
    assert got == [tokenizer.encode(p, add_special_tokens=True).ids for p in prompts]
    assert got == [pre.completion_prompt_ids(completion(p)) for p in prompts]


async def test_chat_prompts_encode_the_rendered_template_without_special_tokens(
    pre: Preprocessor, tokenizer: Tokenizer
) -> None:
    contents = [*texts(4, 1500, seed=3), "hi", ""]
    got = await asyncio.gather(*(pre.prompt_ids(chat(c)) for c in contents))
    for content, ids in zip(contents, got, strict=True):
        rendered = pre.chat_prompt_text(chat(content))
        assert ids == tokenizer.encode(rendered, add_special_tokens=False).ids
        assert ids == pre.chat_prompt_ids(chat(content))


async def test_long_texts_are_encoded_off_the_event_loop(
    pre: Preprocessor, monkeypatch: pytest.MonkeyPatch
) -> None:
    threads: list[str] = []
    encode = pre._encode

    def spy(text: str, add_special_tokens: bool) -> list[int]:
        threads.append(threading.current_thread().name)
        return encode(text, add_special_tokens)

    monkeypatch.setattr(pre, "_encode", spy)
    short, long = "a b c", texts(1, 1500)[0]
    await pre.prompt_ids(completion(short))
    await pre.prompt_ids(completion(long))
    assert threads[0] == threading.current_thread().name
    assert threads[1].startswith("encode")


async def test_token_id_prompts_are_checked_not_encoded(pre: Preprocessor) -> None:
    assert await pre.prompt_ids(completion([5, 6, 7])) == [5, 6, 7]
    with pytest.raises(Exception, match="outside the vocabulary"):
        await pre.prompt_ids(completion([5, 10**6]))
    with pytest.raises(Exception, match="must not be empty"):
        await pre.prompt_ids(completion(""))


async def test_cancelling_a_request_while_its_prompt_encodes_leaves_the_encoder_usable(
    pre: Preprocessor, tokenizer: Tokenizer, monkeypatch: pytest.MonkeyPatch
) -> None:
    started, release = threading.Event(), threading.Event()
    encode = pre._encode

    def held(text: str, add_special_tokens: bool) -> list[int]:
        started.set()
        assert release.wait(10), "the test never released the encoder thread"
        return encode(text, add_special_tokens)

    monkeypatch.setattr(pre, "_encode", held)
    long = texts(1, 1500)[0]
    task = asyncio.create_task(pre.prompt_ids(completion(long)))
    assert await asyncio.to_thread(started.wait, 10)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    release.set()  # the thread finishes its encode; its result goes nowhere
    monkeypatch.setattr(pre, "_encode", encode)
    others = texts(4, 1500, seed=11)
    got = await asyncio.gather(*(pre.prompt_ids(completion(p)) for p in others))
    assert got == [tokenizer.encode(p, add_special_tokens=True).ids for p in others]


def test_the_cache_turns_the_tokenizers_own_threads_off_unless_told(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv(TOKENIZERS_PARALLELISM, raising=False)
    serial_tokenizers()
    assert os.environ[TOKENIZERS_PARALLELISM] == "false"
    monkeypatch.setenv(TOKENIZERS_PARALLELISM, "true")
    serial_tokenizers()
    assert os.environ[TOKENIZERS_PARALLELISM] == "true"


@pytest.mark.parametrize("parallelism", ["true", "false"])
async def test_prompts_encode_the_same_with_or_without_the_tokenizers_threads(
    pre: Preprocessor, tokenizer: Tokenizer, monkeypatch: pytest.MonkeyPatch, parallelism: str
) -> None:
    monkeypatch.setenv(TOKENIZERS_PARALLELISM, parallelism)  # read by tokenizers on each call
    prompts = [*texts(6, 1500, seed=5), "a b c"]
    got = await asyncio.gather(*(pre.prompt_ids(completion(p)) for p in prompts))
    assert got == [tokenizer.encode(p, add_special_tokens=True).ids for p in prompts]
    chats = await asyncio.gather(*(pre.prompt_ids(chat(p)) for p in prompts))
    assert chats == [pre.chat_prompt_ids(chat(p)) for p in prompts]
