"""The benchmark clients' pure parts (benchmarks/clients): trace reading, prompts, the LRU bound,
the replay summary and the load client's requests."""

from __future__ import annotations

import gzip
import hashlib
import json
import lzma
import sys
from pathlib import Path
from typing import Any

import pytest
from tokenizers import Tokenizer

from dynamo.mocker.tinymodel import tiny_model_path

CLIENTS = Path(__file__).resolve().parents[2] / "benchmarks" / "clients"
TRACE = CLIENTS.parent / "traces" / "mooncake_conversation_trace.jsonl.xz"
sys.path.insert(0, str(CLIENTS))

import load  # noqa: E402
import lru_bound  # noqa: E402
import mooncake  # noqa: E402
import replay  # noqa: E402

ROWS = [
    {"timestamp": 0, "input_length": 1024, "output_length": 5, "hash_ids": [1, 2]},
    {"timestamp": 10, "input_length": 1024, "output_length": 7, "hash_ids": [1, 3]},
]


def _write(path: Path, rows: list[dict[str, Any]]) -> Path:
    text = "".join(json.dumps(r) + "\n" for r in rows) + "\n"
    opener = {".gz": gzip.open, ".xz": lzma.open}.get(path.suffix)
    if opener is None:
        path.write_text(text)
    else:
        with opener(path, "wt") as f:
            f.write(text)
    return path


@pytest.mark.parametrize("name", ["t.jsonl", "t.jsonl.gz", "t.jsonl.xz"])
def test_read_rows_reads_plain_and_compressed_traces_alike(tmp_path: Path, name: str) -> None:
    path = _write(tmp_path / name, ROWS)
    assert mooncake.read_rows(path) == ROWS
    assert mooncake.read_rows(path, 1) == ROWS[:1]


def test_read_rows_names_a_row_without_its_fields(tmp_path: Path) -> None:
    path = _write(tmp_path / "t.jsonl", [ROWS[0], {"timestamp": 1, "hash_ids": [4]}])
    with pytest.raises(ValueError, match=r"row 2 lacks input_length, output_length"):
        mooncake.read_rows(path)


def test_the_committed_conversation_trace_is_the_mooncake_release_file() -> None:
    # the digest of the uncompressed file, as benchmarks/traces/README.md gives it
    with lzma.open(TRACE) as f:
        data = f.read()
    assert hashlib.sha256(data).hexdigest() == (
        "b8cbb061a85206d729d91cdc2981f43c9e0d99209dce588d3af5f7934408b9df"
    )
    rows = mooncake.read_rows(TRACE)
    assert len(rows) == 12_031
    assert rows[0] == {
        "timestamp": 0, "input_length": 6758, "output_length": 500, "hash_ids": list(range(14)),
    }  # fmt: skip


def test_prompts_are_one_token_a_word_and_share_prefixes_as_hash_ids_do() -> None:
    vocab = Path(tiny_model_path()) / "tokenizer.json"
    builder = mooncake.PromptBuilder(mooncake.words_of_tokenizer(vocab), block=64)
    tokenizer = Tokenizer.from_file(str(vocab))
    first, second = (tokenizer.encode(builder.prompt(r)).ids for r in ROWS)
    assert len(first) == len(second) == 128  # 1,024 tokens scaled by 64 / 512
    assert first[:64] == second[:64]  # hash id 1
    assert first[64] != second[64]  # hash ids 2 and 3


def test_a_short_last_block_is_cut_to_the_rows_length() -> None:
    row = {"timestamp": 0, "input_length": 600, "output_length": 1, "hash_ids": [1, 2]}
    builder = mooncake.PromptBuilder(["aa", "bb", "cc"], block=64)
    assert len(builder.words_for(row)) == 75  # 600 * 64 // 512


def test_words_of_the_tiny_model_are_enough_for_replay() -> None:
    words = mooncake.words_of_tokenizer(Path(tiny_model_path()) / "tokenizer.json")
    assert len(words) == 1365


def test_lru_bound_counts_a_shared_prefix_and_nothing_after_the_first_miss() -> None:
    # 128 prompt tokens each (8 blocks of 16); the second shares the first hash id (4 blocks)
    assert lru_bound.hit_rate_bound(ROWS, 64, 16, 1000) == 64 / 256
    assert lru_bound.hit_rate_bound([ROWS[0], ROWS[0]], 64, 16, 1000) == 128 / 256


def test_lru_bound_evicts_the_least_recently_used_blocks() -> None:
    # 4 blocks of room: the first prompt's leading blocks are gone when the second arrives
    assert lru_bound.hit_rate_bound(ROWS, 64, 16, 4) == 0.0
    assert lru_bound.hit_rate_bound([ROWS[0], ROWS[0]], 64, 16, 8) == 0.5


def test_lru_bound_refuses_a_block_larger_than_the_traces() -> None:
    with pytest.raises(ValueError, match="tokens_per_hash <= 512"):
        lru_bound.hit_rate_bound(ROWS, 1024, 16, 10)


def test_lru_bound_of_the_routing_profile_is_the_documented_0_161() -> None:
    rows = mooncake.read_rows(TRACE, 1000)
    assert round(lru_bound.hit_rate_bound(rows, 64, 16, 4 * 8192), 4) == 0.1615


def test_replay_summary_takes_the_hit_rate_from_the_servers_usage() -> None:
    ok: dict[str, Any] = {"ttft": 0.1, "itl": 0.01, "error": None}
    results = [
        ok | {"usage": {"prompt_tokens": 100, "prompt_tokens_details": {"cached_tokens": 40}}},
        ok | {"ttft": 0.3, "usage": {"prompt_tokens": 100, "prompt_tokens_details": None}},
        {"ttft": None, "itl": None, "usage": None, "error": "http 503: busy"},
    ]
    summary = replay.summarize(results, wall_s=2.0)
    assert summary["hit_rate"] == 0.2
    assert (summary["requests"], summary["errors"]) == (3, 1)
    assert summary["first_errors"] == ["http 503: busy"]
    assert summary["ttft_p50"] == 0.3  # nearest rank of [0.1, 0.3]
    assert replay.percentile([], 50) is None


def test_replay_requests_stream_exactly_their_output_length() -> None:
    body = replay.request_body("tiny", " aa bb", 7)
    assert body["max_tokens"] == body["min_tokens"] == 7
    assert body["ignore_eos"] and body["stream"]
    assert body["stream_options"] == {"include_usage": True}


def test_load_sends_chat_or_completions() -> None:
    assert load.request("m", 16, chat=False) == (
        "/v1/completions",
        {"model": "m", "max_tokens": 16, "stream": True, "ignore_eos": True, "min_tokens": 16,
         "prompt": load.PROMPT},
    )  # fmt: skip
    path, body = load.request("m", 4, chat=True)
    assert path == "/v1/chat/completions"
    assert body["messages"] == [{"role": "user", "content": load.PROMPT}]
