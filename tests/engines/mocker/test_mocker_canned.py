"""`--canned-outputs`: scripted texts by prompt match, through the real mocker engine."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from tokenizers import Tokenizer

from dynamo.engines.mocker.canned import CannedOutput, CannedOutputs, load_canned_outputs
from dynamo.engines.mocker.config import MockerConfig
from dynamo.engines.mocker.engine import MockerEngine
from dynamo.mocker.tinymodel import (
    TINY_MODEL_EOS_TOKEN_ID,
    TINY_MODEL_SPECIAL_TOKEN_IDS,
    TINY_MODEL_VOCAB_SIZE,
    tiny_model_path,
)
from dynamo.protocols.engine import EngineOutput, EngineRequest
from dynamo.runtime.errors import ConfigError
from dynamo.runtime.transport.base import RequestContext
from dynamo.testing.engine_sink import RecordingEngineSink

TOOL_TEXT = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "東京"}}\n</tool_call>'


@pytest.fixture
def tokenizer() -> Tokenizer:
    return Tokenizer.from_file(str(Path(tiny_model_path()) / "tokenizer.json"))


@pytest.fixture
async def engine(tmp_path: Path) -> AsyncIterator[MockerEngine]:
    path = tmp_path / "canned.jsonl"
    path.write_text(
        '{"match": "weather", "text": ' + _json(TOOL_TEXT) + "}\n"
        "\n"
        '{"match": "", "text": "fallback for everything else"}\n',
        encoding="utf-8",
    )
    canned = CannedOutputs.from_files(path, Path(tiny_model_path()))
    engine = MockerEngine(
        MockerConfig(num_gpu_blocks=256, block_size=16, speedup_ratio=100.0),
        TINY_MODEL_VOCAB_SIZE,
        [TINY_MODEL_EOS_TOKEN_ID],
        special_token_ids=TINY_MODEL_SPECIAL_TOKEN_IDS,
        canned=canned,
    )
    await engine.start(RecordingEngineSink())
    yield engine
    await engine.shutdown()


def _json(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)


def request(tokens: list[int], max_tokens: int = 500, **stop: object) -> EngineRequest:
    return {
        "request_id": "r",
        "model": "tiny",
        "token_ids": tokens,
        "stop_conditions": {"max_tokens": max_tokens, **stop},  # type: ignore[typeddict-item]
        "sampling_options": {},
    }


async def run(engine: MockerEngine, req: EngineRequest) -> tuple[list[int], str | None]:
    outs: list[EngineOutput] = [o async for o in engine.generate(req, RequestContext("r"))]
    return [t for o in outs for t in o.get("token_ids", [])], outs[-1].get("finish_reason")


async def test_a_matching_prompt_gets_the_text_then_eos(
    engine: MockerEngine, tokenizer: Tokenizer
) -> None:
    prompt = tokenizer.encode("What is the weather in Tokyo?").ids
    tokens, reason = await run(engine, request(prompt))
    assert tokenizer.decode(tokens, skip_special_tokens=False) == TOOL_TEXT
    assert reason == "eos"


async def test_the_first_match_wins_and_the_empty_match_catches_the_rest(
    engine: MockerEngine, tokenizer: Tokenizer
) -> None:
    tokens, reason = await run(engine, request(tokenizer.encode("Hello").ids))
    assert tokenizer.decode(tokens) == "fallback for everything else"
    assert reason == "eos"


async def test_max_tokens_cuts_the_script(engine: MockerEngine, tokenizer: Tokenizer) -> None:
    tokens, reason = await run(engine, request(tokenizer.encode("weather").ids, max_tokens=3))
    full = tokenizer.encode(TOOL_TEXT, add_special_tokens=False).ids
    assert (tokens, reason) == (full[:3], "length")


async def test_ignore_eos_samples_on_after_the_script(
    engine: MockerEngine, tokenizer: Tokenizer
) -> None:
    full = tokenizer.encode(TOOL_TEXT, add_special_tokens=False).ids
    req = request(tokenizer.encode("weather").ids, max_tokens=len(full) + 5, ignore_eos=True)
    tokens, reason = await run(engine, req)
    assert tokens[: len(full)] == full and len(tokens) == len(full) + 5
    assert reason == "length"


def test_no_match_gives_no_script(tokenizer: Tokenizer) -> None:
    canned = CannedOutputs([CannedOutput("needle", "x")], tokenizer)
    assert canned.script_for(tokenizer.encode("haystack").ids) is None


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json\n", r"canned.jsonl:1: not JSON"),
        ('\n{"match": "a"}\n', r"canned.jsonl:2: expected \{\"match\""),
        ('{"match": "a", "text": ""}\n', r"canned.jsonl:1: match must be a string and text a"),
        ('{"match": 1, "text": "x"}\n', r"canned.jsonl:1: match must be a string"),
        ("\n\n", r"canned.jsonl: no outputs in the file"),
    ],
)
def test_bad_files_name_the_line(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "canned.jsonl"
    path.write_text(content)
    with pytest.raises(ConfigError, match=message):
        load_canned_outputs(path)


def test_a_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="No such file"):
        load_canned_outputs(tmp_path / "nope.jsonl")
