"""Which ids the mocker emits: whole text alone, through the frontend's streaming decoder."""

from __future__ import annotations

from pathlib import Path

import pytest
from tokenizers import Tokenizer
from tokenizers.decoders import DecodeStream

from dynamo.engines.mocker.sampling import TokenSampler
from dynamo.engines.mocker.vocab import silent_token_ids
from dynamo.mocker.tinymodel import (
    TINY_MODEL_SPECIAL_TOKEN_IDS,
    TINY_MODEL_VOCAB_SIZE,
    tiny_model_path,
)
from dynamo.runtime.errors import ConfigError

TOKENIZER = Path(tiny_model_path()) / "tokenizer.json"


def test_special_tokens_and_byte_fragments_are_silent_and_words_are_not() -> None:
    tok = Tokenizer.from_file(str(TOKENIZER))
    silent = silent_token_ids(TOKENIZER, TINY_MODEL_VOCAB_SIZE)
    assert set(TINY_MODEL_SPECIAL_TOKEN_IDS) <= silent
    fragment = tok.token_to_id("Ã")  # the first byte of a 2-byte UTF-8 character
    word, char = tok.token_to_id("Ġsasu"), tok.token_to_id("x")
    assert fragment in silent and word not in silent and char not in silent
    assert 0 < len(silent) < TINY_MODEL_VOCAB_SIZE // 10


def test_ids_past_the_tokenizer_are_silent() -> None:
    silent = silent_token_ids(TOKENIZER, TINY_MODEL_VOCAB_SIZE + 64)
    assert set(range(TINY_MODEL_VOCAB_SIZE, TINY_MODEL_VOCAB_SIZE + 64)) <= silent


def test_a_sampled_stream_gives_text_for_every_token() -> None:
    # What the frontend does with a stream: a DecodeStream step per token, None = held back.
    tok = Tokenizer.from_file(str(TOKENIZER))
    sampler = TokenSampler(
        TINY_MODEL_VOCAB_SIZE, silent_token_ids(TOKENIZER, TINY_MODEL_VOCAB_SIZE)
    )
    for seed in range(20):
        decoder = DecodeStream(skip_special_tokens=True)
        pieces = [decoder.step(tok, sampler.token(seed, i)) for i in range(64)]
        assert all(pieces), f"seed {seed}: a token gave no text: {pieces}"
        assert "\ufffd" not in "".join(pieces)


def test_the_unrestricted_vocabulary_would_hold_tokens_back() -> None:
    # The reason for the exclusion: drawn from the whole vocabulary, streams lose chunks.
    tok = Tokenizer.from_file(str(TOKENIZER))
    sampler = TokenSampler(TINY_MODEL_VOCAB_SIZE, TINY_MODEL_SPECIAL_TOKEN_IDS)
    held = 0
    for seed in range(20):
        decoder = DecodeStream(skip_special_tokens=True)
        held += sum(decoder.step(tok, sampler.token(seed, i)) is None for i in range(64))
    assert held > 0


def test_a_bad_tokenizer_file_is_a_config_error(tmp_path: Path) -> None:
    bad = tmp_path / "tokenizer.json"
    bad.write_text("{not json")
    with pytest.raises(ConfigError, match="cannot load the tokenizer"):
        silent_token_ids(bad, 100)
