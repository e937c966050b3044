"""Request parsing: the token-ids-first try of completions bodies accepts and rejects exactly
what `CompletionRequest` does, with the same values and the same error messages."""

from __future__ import annotations

import json
from typing import Any

import aiohttp
import openai
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from dynamo.frontend.protocol import CompletionRequest, _to_invalid_request, parse_body
from dynamo.runtime.errors import InvalidRequestError
from dynamo.testing.fake_worker import FakeWorker
from dynamo.testing.frontend_harness import MODEL, Harness, tiny_card

COMPLETIONS = "/v1/completions"

# Messages as the frontend worded them before the token-ids-first try existed.
WORDED_BEFORE = [
    (
        [1, True],
        "Invalid request: prompt: Input should be a valid string; prompt.1: invalid type; "
        "expected integer or string or array; prompt.0: invalid type; expected string or array",
    ),
    (
        [1, "a"],
        "Invalid request: prompt: Input should be a valid string; prompt.1: invalid type; "
        "expected integer or array; prompt.0: invalid type; expected string or array",
    ),
    ([], "Invalid request: prompt: must not be empty"),
    (
        ["a", "b"],
        "Invalid request: prompt: batched prompts are not supported; send one prompt",
    ),
    (5, "Invalid request: prompt: invalid type; expected string or array"),
    (None, "Invalid request: prompt: invalid type; expected string or array"),
    (
        [1] * 8000 + [2.0],
        "Invalid request: prompt: Input should be a valid string; prompt.8000: invalid type; "
        "expected integer or string or array; prompt.0: invalid type; expected string or array; "
        "prompt.1: invalid type; expected string or array; prompt.2: invalid type; expected "
        "string or array (and 7997 more)",
    ),
]


async def post(harness: Harness, payload: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    async with aiohttp.ClientSession() as s, s.post(harness.url + COMPLETIONS, json=payload) as r:
        return r.status, await r.json()


def body(prompt: Any, **kw: Any) -> bytes:
    return json.dumps({"model": MODEL, "prompt": prompt, **kw}).encode()


def full_model(raw: bytes) -> CompletionRequest | InvalidRequestError:
    """What `CompletionRequest` alone makes of `raw` (the behaviour before the fast try)."""
    try:
        return CompletionRequest.model_validate_json(raw)
    except ValidationError as exc:
        return _to_invalid_request(exc)


def parsed(raw: bytes) -> CompletionRequest | InvalidRequestError:
    try:
        return parse_body(CompletionRequest, raw)
    except InvalidRequestError as exc:
        return exc


def assert_same(raw: bytes) -> None:
    got, want = parsed(raw), full_model(raw)
    if isinstance(want, InvalidRequestError):
        assert isinstance(got, InvalidRequestError)
        assert (str(got), got.param) == (str(want), want.param)
    else:
        assert isinstance(got, CompletionRequest)
        assert got.model_dump() == want.model_dump()
        assert got.single_prompt() == want.single_prompt()


@pytest.mark.parametrize(("prompt", "message"), WORDED_BEFORE)
def test_bad_prompts_are_worded_as_before(prompt: Any, message: str) -> None:
    with pytest.raises(InvalidRequestError) as info:
        parse_body(CompletionRequest, body(prompt))
    assert str(info.value) == message
    assert info.value.param == "prompt"


@pytest.mark.parametrize(
    "prompt",
    [[5, 6, 7], list(range(8192)), "text", "", ["one text"], [[1, 2]], [-1, 2**70], [0]],
)
def test_good_prompts_parse_to_the_same_request(prompt: Any) -> None:
    assert_same(body(prompt, max_tokens=4, temperature=0.5))
    req = parse_body(CompletionRequest, body(prompt))
    assert isinstance(req, CompletionRequest)


def test_other_fields_fail_the_same_with_a_token_id_prompt() -> None:
    for extra in ({"max_tokens": 0}, {"echo": True, "logprobs": 1}, {"suffix": "x"}, {"n": 17}):
        raw = body(list(range(3000)), **extra)
        assert isinstance(parsed(raw), InvalidRequestError)
        assert_same(raw)
    assert_same(b'{"model": "tiny", "prompt": [1, 2')
    assert_same(b"[1, 2]")
    assert_same(b'{"prompt": [1, 2]}')


json_scalars = st.one_of(
    st.integers(min_value=-(2**70), max_value=2**70),
    st.booleans(),
    st.none(),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=5),
)
prompts = st.one_of(
    json_scalars,
    st.lists(st.integers(min_value=-5, max_value=10**6), max_size=40),
    st.lists(json_scalars, max_size=6),
    st.lists(st.lists(json_scalars, max_size=4), max_size=3),
    st.lists(st.text(max_size=4), max_size=3),
    st.dictionaries(st.text(max_size=3), json_scalars, max_size=2),
)


@settings(max_examples=300, deadline=None)
@given(prompt=prompts, stream=st.one_of(st.booleans(), st.just("yes")))
def test_any_prompt_parses_or_fails_as_the_full_model_decides(prompt: Any, stream: Any) -> None:
    assert_same(body(prompt, stream=stream))


async def test_a_long_token_id_prompt_over_http(
    harness: Harness, client: openai.AsyncOpenAI
) -> None:
    await harness.add(FakeWorker(tiny_card(context_length=10_000)))
    ids = [(i * 7919) % 2048 for i in range(8192)]
    resp = await client.completions.create(model=MODEL, prompt=ids, max_tokens=2)
    assert resp.usage is not None and resp.usage.prompt_tokens == 8192
    status, payload = await post(harness, {"model": MODEL, "prompt": [*ids, True]})
    assert status == 400
    err = payload["error"]
    assert (err["type"], err["param"]) == ("invalid_request_error", "prompt")
    assert err["message"].startswith(
        "Invalid request: prompt: Input should be a valid string; prompt.8192: invalid type; "
        "expected integer or string or array;"
    )
    status, payload = await post(harness, {"model": MODEL, "prompt": [*ids, 5000]})
    assert status == 400
    assert (
        payload["error"]["message"] == "prompt: token id 5000 is outside the vocabulary (0..2047)"
    )
    resp = await client.completions.create(model=MODEL, prompt=ids[:5], max_tokens=2)
    assert resp.choices[0].finish_reason == "length"
