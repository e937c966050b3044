"""Model registry bookkeeping, request continuation for migration, preprocessing details."""

from __future__ import annotations

import pytest

from dynamo.frontend.chat_template import ChatTemplate
from dynamo.frontend.engine_client import continued
from dynamo.frontend.models import ModelRegistry, parse_card_key
from dynamo.frontend.preprocessor_cache import PreprocessorCache
from dynamo.frontend.protocol import ChatCompletionRequest, parse_body
from dynamo.protocols.engine import EngineRequest
from dynamo.runtime.addressing import EndpointAddress
from dynamo.runtime.discovery.base import WatchEvent
from dynamo.runtime.errors import InvalidRequestError, PromptTooLongError
from dynamo.testing.frontend_harness import tiny_card


def put(iid: int, name: str, ep: str = "generate") -> WatchEvent:
    card = tiny_card(name).model_dump(mode="json")
    return WatchEvent("put", f"v1/mdc/ns/backend/{ep}/{iid:x}", card)


def delete(iid: int, ep: str = "generate") -> WatchEvent:
    return WatchEvent("delete", f"v1/mdc/ns/backend/{ep}/{iid:x}", None)


def test_parse_card_key() -> None:
    assert parse_card_key("v1/mdc/ns/c/e/ff") == (EndpointAddress("ns", "c", "e"), 255)
    assert parse_card_key("v1/instances/ns/c/e/ff") is None
    assert parse_card_key("v1/mdc/ns/c/e/zz") is None


def test_registry_tracks_models_by_their_workers() -> None:
    reg = ModelRegistry()
    assert [c.kind for c in reg.apply(put(1, "a"))] == ["model_added", "worker_added"]
    assert [c.kind for c in reg.apply(put(2, "a"))] == ["worker_added"]
    assert [c.kind for c in reg.apply(put(2, "a"))] == []  # refreshed card
    assert [c.kind for c in reg.apply(put(3, "b", ep="other"))] == ["model_added", "worker_added"]
    assert sorted(reg.names()) == ["a", "b"]
    assert [c.kind for c in reg.apply(delete(1))] == ["worker_removed"]
    assert [c.kind for c in reg.apply(delete(2))] == ["worker_removed", "model_removed"]
    assert reg.names() == ["b"]
    assert reg.apply(delete(2)) == []
    # an instance that re-registers under another name moves
    kinds = [c.kind for c in reg.apply(put(3, "c", ep="other"))]
    assert kinds == ["worker_removed", "model_removed", "model_added", "worker_added"]


def test_invalid_card_is_ignored() -> None:
    reg = ModelRegistry()
    assert reg.apply(WatchEvent("put", "v1/mdc/ns/c/e/1", {"context_length": -1})) == []
    assert reg.names() == []


def test_continued_request_appends_tokens_and_shrinks_budgets() -> None:
    req: EngineRequest = {
        "request_id": "r",
        "model": "m",
        "token_ids": [1, 2],
        "stop_conditions": {"max_tokens": 5, "min_tokens": 4},
        "sampling_options": {},
    }
    nxt = continued(req, [7, 8, 9])
    assert nxt is not None
    assert nxt["token_ids"] == [1, 2, 7, 8, 9]
    assert nxt["stop_conditions"] == {"max_tokens": 2, "min_tokens": 1}
    assert req["token_ids"] == [1, 2]  # the original is untouched
    assert continued(req, [1, 1, 1, 1, 1]) is None


async def test_preprocessor_chat_and_limits() -> None:
    cache = PreprocessorCache()
    card = tiny_card(context_length=40)
    pre = await cache.get(card)
    assert await cache.get(card) is pre
    req = parse_body(
        ChatCompletionRequest,
        b'{"model":"tiny","messages":[{"role":"user","content":[{"type":"text","text":"hi"}]}]}',
    )
    ids = pre.chat_prompt_ids(req)
    assert pre.tokenizer.decode(ids, skip_special_tokens=False) == "<s>user: hi\n<s>assistant: "
    er = pre.engine_request(req, ids, "rid")
    assert er["stop_conditions"] == {"max_tokens": 40 - len(ids)}
    with pytest.raises(PromptTooLongError, match="maximum context length is 40"):
        pre.check_length(40, None)
    bad = parse_body(
        ChatCompletionRequest,
        b'{"model":"tiny","messages":[{"role":"user","content":[{"type":"image_url"}]}]}',
    )
    with pytest.raises(InvalidRequestError, match="image_url"):
        pre.chat_prompt_ids(bad)


def test_chat_template_raise_exception_is_a_client_error() -> None:
    tpl = ChatTemplate(
        "{% if messages[0]['role'] != 'user' %}{{ raise_exception('first must be user') }}"
        "{% endif %}{{ messages | tojson }}",
        bos_token="<s>",
        eos_token="</s>",
    )
    assert tpl.render([{"role": "user", "content": "é"}]) == '[{"role": "user", "content": "é"}]'
    with pytest.raises(InvalidRequestError, match="first must be user"):
        tpl.render([{"role": "system", "content": "x"}])
