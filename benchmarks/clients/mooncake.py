"""Mooncake-format traces and the prompts a replay builds from them (pure, no I/O but reading).

A trace row is one request: `timestamp` (ms from the start), `input_length`, `output_length`
and `hash_ids`, one id per 512-token prompt block (equal ids at the same position mean an equal
prefix). The trace carries no text: every hash id becomes a fixed block of single-token words,
so requests that share hash-id prefixes share token prefixes exactly. A block of B tokens a hash
id (B < 512) scales every prompt by B / 512 and keeps the prefix structure.
"""

from __future__ import annotations

import gzip
import itertools
import json
import lzma
import random
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

TRACE_BLOCK_TOKENS = 512  # the Mooncake release hashes prompts in blocks of 512 tokens
BYTE_LEVEL_SPACE = "\u0120"  # how a byte-level BPE vocabulary spells a leading space


def _open_text(path: Path) -> IO[str]:
    """The trace as text: plain `.jsonl`, or compressed `.jsonl.gz` / `.jsonl.xz`."""
    if path.suffix == ".gz":
        return gzip.open(path, "rt", encoding="utf-8")
    if path.suffix == ".xz":
        return lzma.open(path, "rt", encoding="utf-8")
    return path.open(encoding="utf-8")


def read_rows(path: str | Path, limit: int | None = None) -> list[dict[str, Any]]:
    """The first `limit` rows (all when None) of a trace file, each checked for its fields."""
    with _open_text(Path(path)) as lines:
        rows = [json.loads(line) for line in itertools.islice(_nonblank(lines), limit)]
    for number, row in enumerate(rows, 1):
        missing = {"timestamp", "input_length", "output_length", "hash_ids"} - row.keys()
        if missing:
            raise ValueError(f"{path}: row {number} lacks {', '.join(sorted(missing))}")
    return rows


def _nonblank(lines: IO[str]) -> Iterator[str]:
    return (line for line in lines if line.strip())


def scaled_length(row: dict[str, Any], block: int) -> int:
    """Prompt tokens of `row` when a hash id stands for `block` tokens instead of 512."""
    return max(1, int(row["input_length"]) * block // TRACE_BLOCK_TOKENS)


def single_token_words(vocab: dict[str, int]) -> list[str]:
    """Words that a byte-level BPE encodes as one token after a space (alphabetic, 2+ letters)."""
    return sorted(
        w[1:] for w in vocab if w.startswith(BYTE_LEVEL_SPACE) and w[1:].isalpha() and len(w) > 2
    )


def words_of_tokenizer(tokenizer_json: str | Path) -> list[str]:
    """`single_token_words` of a `tokenizer.json`."""
    model = json.loads(Path(tokenizer_json).read_text())["model"]
    return single_token_words(model["vocab"])


def block_text(hash_id: int, words: list[str], block: int) -> str:
    """The fixed text of one hash id: `block` words, each after a space (one token each)."""
    rnd = random.Random(hash_id * 7919 + 17)
    return " " + " ".join(rnd.choice(words) for _ in range(block))


class PromptBuilder:
    """Prompts for trace rows; each hash id's block is built once and reused."""

    def __init__(self, words: list[str], block: int) -> None:
        if not words:
            raise ValueError("no single-token words to build prompts from")
        self.words = words
        self.block = block
        self._blocks: dict[int, list[str]] = {}

    def words_for(self, row: dict[str, Any]) -> list[str]:
        """The prompt's words: its hash ids' blocks, cut to the row's scaled length."""
        out: list[str] = []
        for hash_id in row["hash_ids"]:
            if hash_id not in self._blocks:
                self._blocks[hash_id] = block_text(hash_id, self.words, self.block).split(" ")[1:]
            out += self._blocks[hash_id]
        return out[: min(len(out), scaled_length(row, self.block))]

    def prompt(self, row: dict[str, Any]) -> str:
        """The prompt text of `row`: its words, each preceded by a space."""
        return " " + " ".join(self.words_for(row))
