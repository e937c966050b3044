"""Which token ids the mocker may emit: those a detokenizer turns into text on their own.

A byte-level BPE vocabulary holds pieces of multi-byte characters (`Ã`, `Ċ`, ...) and a
SentencePiece one byte-fallback tokens (`<0xE2>`): alone they decode to U+FFFD or to nothing,
so a streaming detokenizer holds them back until the character is complete, and the frontend
sends no chunk for them. Drawn uniformly, about 6% of a small vocabulary's ids are such
fragments: a 64-token stream would lose ~4 chunks and show ~4 double inter-chunk gaps, which
inflates the measured ITL tail though no step was slow. Special tokens (skipped from the text)
and ids past the tokenizer's vocabulary (padded embedding rows) are silent too.

Dynamo's own mocker sidesteps this by drawing ids from 1000..1999 only; excluding exactly the
ids that cannot stand alone keeps any tokenizer's whole vocabulary of words and symbols.
"""

from __future__ import annotations

from pathlib import Path

from tokenizers import Tokenizer

from dynamo.runtime.errors import ConfigError

REPLACEMENT_CHAR = "\ufffd"


def silent_token_ids(tokenizer_file: str | Path, vocab_size: int) -> frozenset[int]:
    """Ids in `[0, vocab_size)` that decode, alone and skipping special tokens, to no text or
    to text with a replacement character (an incomplete UTF-8 sequence).

    Decodes the whole vocabulary once (about 0.1 s for 50k ids)."""
    try:
        tokenizer = Tokenizer.from_file(str(tokenizer_file))
    except Exception as exc:  # the library raises a bare Exception for a bad file
        raise ConfigError(f"{tokenizer_file}: cannot load the tokenizer: {exc}") from exc
    known = min(vocab_size, tokenizer.get_vocab_size(with_added_tokens=True))
    texts = tokenizer.decode_batch([[i] for i in range(known)], skip_special_tokens=True)
    silent = {i for i, text in enumerate(texts) if not text or REPLACEMENT_CHAR in text}
    silent.update(range(known, vocab_size))
    return frozenset(silent)
