"""The official `openai` client against a live frontend: models, chat, completions, streaming."""

from __future__ import annotations

import openai
import pytest
from tokenizers import Tokenizer

from dynamo.testing.fake_worker import FakeWorker
from dynamo.testing.frontend_harness import MODEL, Harness, tiny_card

TEXT = "the cat sat on the mat"


def ids_of(tokenizer: Tokenizer, text: str) -> list[int]:
    return tokenizer.encode(text, add_special_tokens=False).ids


async def test_models_appear_and_vanish_with_their_workers(
    harness: Harness, client: openai.AsyncOpenAI
) -> None:
    assert [m.id async for m in client.models.list()] == []
    a1 = await harness.add(FakeWorker(tiny_card("model-a")))
    a2 = await harness.add(FakeWorker(tiny_card("model-a")))
    await harness.add(FakeWorker(tiny_card("model-b")))
    listed = await client.models.list()
    assert sorted(m.id for m in listed.data) == ["model-a", "model-b"]
    assert all(m.object == "model" for m in listed.data)
    await harness.remove(a1)
    assert sorted([m.id async for m in client.models.list()]) == ["model-a", "model-b"]
    await harness.remove(a2)
    assert [m.id async for m in client.models.list()] == ["model-b"]
    assert harness.metric("dynamo_frontend_model_workers", model="model-b") == 1


async def test_chat_completion(
    harness: Harness, client: openai.AsyncOpenAI, tokenizer: Tokenizer
) -> None:
    script = ids_of(tokenizer, TEXT)
    worker = await harness.add(FakeWorker(tiny_card(), script=script, cached_tokens=5))
    resp = await client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "hello"}],
        max_tokens=len(script),
        temperature=0.5,
        top_p=0.9,
        seed=7,
        user="me",
    )
    choice = resp.choices[0]
    assert choice.message.role == "assistant"
    assert choice.message.content == TEXT
    assert choice.finish_reason == "length"
    assert resp.object == "chat.completion"
    assert resp.model == MODEL
    prompt = worker.requests[0]["token_ids"]
    assert prompt == ids_of(tokenizer, "<s>user: hello\n<s>assistant: ")
    assert resp.usage is not None
    assert resp.usage.prompt_tokens == len(prompt)
    assert resp.usage.completion_tokens == len(script)
    assert resp.usage.total_tokens == len(prompt) + len(script)
    assert resp.usage.prompt_tokens_details is not None
    assert resp.usage.prompt_tokens_details.cached_tokens == 5
    sent = worker.requests[0]
    assert sent["sampling_options"] == {"temperature": 0.5, "top_p": 0.9, "seed": 7}
    assert sent["stop_conditions"]["max_tokens"] == len(script)
    assert sent["eos_token_ids"] == [2]


async def test_chat_stream_with_usage(
    harness: Harness, client: openai.AsyncOpenAI, tokenizer: Tokenizer
) -> None:
    script = ids_of(tokenizer, TEXT)
    await harness.add(FakeWorker(tiny_card(), script=script, cached_tokens=3))
    stream = await client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "hi"}],
        max_tokens=len(script),
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = [c async for c in stream]
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == TEXT
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finishes[-1] == "length" and set(finishes[:-1]) == {None}
    assert chunks[-1].choices == []
    usage = chunks[-1].usage
    assert usage is not None and usage.completion_tokens == len(script)
    assert usage.prompt_tokens_details is not None
    assert usage.prompt_tokens_details.cached_tokens == 3
    assert all(c.usage is None for c in chunks[:-1])
    assert len({c.id for c in chunks}) == 1


async def test_continuous_usage_stats_puts_the_usage_so_far_on_every_chunk(
    harness: Harness, client: openai.AsyncOpenAI, tokenizer: Tokenizer
) -> None:
    """vLLM's `continuous_usage_stats`: each chunk's completion tokens count what was
    generated up to it, ending at the total; the final usage chunk still comes."""
    script = ids_of(tokenizer, TEXT)
    await harness.add(FakeWorker(tiny_card(), script=script))
    stream = await client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "hi"}],
        max_tokens=len(script),
        stream=True,
        stream_options={"include_usage": True, "continuous_usage_stats": True},  # type: ignore[typeddict-unknown-key]
    )
    chunks = [c async for c in stream]
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == TEXT
    counts = [c.usage.completion_tokens for c in chunks if c.usage is not None]
    assert len(counts) == len(chunks)  # every chunk, the role chunk included
    assert counts[0] == 0 and counts == sorted(counts) and counts[-1] == len(script)
    assert all(c.usage is not None and c.usage.prompt_tokens > 0 for c in chunks)
    assert chunks[-1].choices == []  # the usage chunk of include_usage


async def test_continuous_usage_stats_alone_adds_nothing(
    harness: Harness, client: openai.AsyncOpenAI, tokenizer: Tokenizer
) -> None:
    """As in vLLM, `continuous_usage_stats` takes effect only with `include_usage`."""
    script = ids_of(tokenizer, TEXT)
    await harness.add(FakeWorker(tiny_card(), script=script))
    stream = await client.completions.create(
        model=MODEL,
        prompt="once upon",
        max_tokens=len(script),
        stream=True,
        stream_options={"continuous_usage_stats": True},  # type: ignore[typeddict-unknown-key]
    )
    chunks = [c async for c in stream]
    assert "".join(c.choices[0].text for c in chunks if c.choices) == TEXT
    assert all(c.usage is None for c in chunks)


async def test_completion_unary_and_stream(
    harness: Harness, client: openai.AsyncOpenAI, tokenizer: Tokenizer
) -> None:
    script = ids_of(tokenizer, TEXT)
    await harness.add(FakeWorker(tiny_card(), script=script))
    resp = await client.completions.create(model=MODEL, prompt="once upon", max_tokens=len(script))
    assert resp.choices[0].text == TEXT
    assert resp.object == "text_completion"
    assert resp.usage is not None
    assert resp.usage.prompt_tokens == len(ids_of(tokenizer, "once upon"))
    stream = await client.completions.create(
        model=MODEL, prompt=[5, 6, 7], max_tokens=len(script), stream=True
    )
    chunks = [c async for c in stream]
    assert "".join(c.choices[0].text for c in chunks) == TEXT
    assert chunks[-1].choices[0].finish_reason == "length"
    assert all(c.usage is None for c in chunks)


async def test_max_tokens_ends_with_length(harness: Harness, client: openai.AsyncOpenAI) -> None:
    worker = await harness.add(FakeWorker(tiny_card()))
    resp = await client.completions.create(model=MODEL, prompt="a b c d e f g", max_tokens=3)
    assert resp.choices[0].finish_reason == "length"
    assert resp.usage is not None and resp.usage.completion_tokens == 3
    assert worker.requests[0]["stop_conditions"]["max_tokens"] == 3


async def test_eos_finish_reads_as_stop(
    harness: Harness, client: openai.AsyncOpenAI, tokenizer: Tokenizer
) -> None:
    script = [*ids_of(tokenizer, "the cat"), 2]
    await harness.add(FakeWorker(tiny_card(), script=script))
    resp = await client.completions.create(model=MODEL, prompt="x", max_tokens=50)
    assert resp.choices[0].text == "the cat"
    assert resp.choices[0].finish_reason == "stop"
    assert resp.usage is not None and resp.usage.completion_tokens == len(script)


@pytest.mark.parametrize("stream", [False, True])
async def test_stop_string_is_not_emitted_and_cancels_the_worker(
    harness: Harness, client: openai.AsyncOpenAI, tokenizer: Tokenizer, stream: bool
) -> None:
    script = ids_of(tokenizer, "the cat sat on the mat and more text follows")
    worker = await harness.add(FakeWorker(tiny_card(), script=script))
    kwargs = {"model": MODEL, "prompt": "x", "max_tokens": 40, "stop": ["on the", "zzz"]}
    if stream:
        chunks = [c async for c in await client.completions.create(stream=True, **kwargs)]
        text = "".join(c.choices[0].text for c in chunks)
        finish = chunks[-1].choices[0].finish_reason
    else:
        resp = await client.completions.create(**kwargs)
        text, finish = resp.choices[0].text, resp.choices[0].finish_reason
    assert text == "the cat sat "
    assert finish == "stop"
    assert worker.active == set()
    assert len(worker.cancelled) == 1


async def test_stop_prefix_that_does_not_complete_is_emitted(
    harness: Harness, client: openai.AsyncOpenAI, tokenizer: Tokenizer
) -> None:
    script = ids_of(tokenizer, "the cat sat on")
    await harness.add(FakeWorker(tiny_card(), script=script))
    resp = await client.completions.create(
        model=MODEL, prompt="x", max_tokens=len(script), stop="on the"
    )
    assert resp.choices[0].text == "the cat sat on"
    assert resp.choices[0].finish_reason == "length"


async def test_multibyte_characters_are_never_split(
    harness: Harness, client: openai.AsyncOpenAI, tokenizer: Tokenizer
) -> None:
    text = "café 日本 😀 ok"
    script = ids_of(tokenizer, text)
    # really split: some tokens alone are not valid UTF-8
    assert any("\ufffd" in tokenizer.decode([t]) for t in script)
    await harness.add(FakeWorker(tiny_card(), script=script))
    stream = await client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "x"}],
        max_tokens=len(script),
        stream=True,
    )
    deltas = [c.choices[0].delta.content or "" async for c in stream if c.choices]
    assert all("\ufffd" not in d for d in deltas)
    assert "".join(deltas) == text


async def test_chunked_worker_output_and_ignore_eos(
    harness: Harness, client: openai.AsyncOpenAI, tokenizer: Tokenizer
) -> None:
    script = ids_of(tokenizer, TEXT)
    worker = await harness.add(FakeWorker(tiny_card(), script=[*script, 2], chunk_tokens=4))
    resp = await client.completions.create(
        model=MODEL,
        prompt="x",
        max_tokens=2 * len(script) + 2,
        extra_body={"ignore_eos": True, "min_tokens": 2, "top_k": 5},
    )
    assert resp.choices[0].text == TEXT + TEXT
    assert resp.choices[0].finish_reason == "length"
    stop = worker.requests[0]["stop_conditions"]
    assert stop["ignore_eos"] is True and stop["min_tokens"] == 2
    assert worker.requests[0]["sampling_options"]["top_k"] == 5


async def test_direct_routing_with_nvext(harness: Harness, client: openai.AsyncOpenAI) -> None:
    w1 = await harness.add(FakeWorker(tiny_card()))
    w2 = await harness.add(FakeWorker(tiny_card()))
    for _ in range(3):
        await client.completions.create(
            model=MODEL,
            prompt="x",
            max_tokens=2,
            extra_body={"nvext": {"backend_instance_id": w2.instance_id}},
        )
    assert len(w2.requests) == 3 and w1.requests == []
    with pytest.raises(openai.NotFoundError):
        await client.completions.create(
            model=MODEL, prompt="x", max_tokens=2, extra_body={"nvext": {"backend_instance_id": 1}}
        )


async def test_data_parallel_rank_is_sent_to_the_worker(
    harness: Harness, client: openai.AsyncOpenAI
) -> None:
    worker = await harness.add(FakeWorker(tiny_card(data_parallel_size=2)))
    for _ in range(2):
        await client.completions.create(model=MODEL, prompt="x", max_tokens=1)
    assert sorted(r["extra_args"]["dp_rank"] for r in worker.requests) == [0, 1]


async def test_logprobs_when_the_engine_reports_them(
    harness: Harness, client: openai.AsyncOpenAI, tokenizer: Tokenizer
) -> None:
    script = ids_of(tokenizer, TEXT)
    await harness.add(FakeWorker(tiny_card(), script=script))
    chat = await client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "x"}], max_tokens=3, logprobs=True
    )
    assert chat.choices[0].logprobs is not None
    content = chat.choices[0].logprobs.content
    assert content is not None
    assert [c.logprob for c in content] == [-0.25, -0.25, -0.25]
    assert "".join(c.token for c in content) == tokenizer.decode(script[:3])
    comp = await client.completions.create(model=MODEL, prompt="x", max_tokens=3, logprobs=1)
    lp = comp.choices[0].logprobs
    assert lp is not None and lp.token_logprobs == [-0.25, -0.25, -0.25]
    assert lp.text_offset is not None and lp.text_offset[0] == 0
    stream = await client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "x"}],
        max_tokens=2,
        logprobs=True,
        stream=True,
    )
    with_lp = [c async for c in stream if c.choices and c.choices[0].logprobs]
    assert len(with_lp) == 2
    plain = await client.completions.create(model=MODEL, prompt="x", max_tokens=2)
    assert plain.choices[0].logprobs is None
