"""Load a model's tokenizer, chat template and special tokens from its files.

The files (HF's `tokenizer.json`, `tokenizer_config.json`, `chat_template.jinja`,
`generation_config.json`) come through a `FileReader`: the ones fetched from the model's workers
(`model_files`), or a local directory (`source_path` of cards that list no files). Loading is
blocking (a large tokenizer.json takes ~100 ms); callers run it in a thread.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from tokenizers import Tokenizer

from dynamo.protocols.model_card import ModelCard
from dynamo.runtime.errors import ConfigError


@dataclass(frozen=True)
class TokenizerFiles:
    tokenizer: Tokenizer
    chat_template: str | None
    bos_token: str | None
    eos_token: str | None
    eos_token_ids: list[int] = field(default_factory=list)


# file name -> its content, or None when the model has no such file
FileReader = Callable[[str], bytes | None]


def directory_reader(directory: str | None) -> FileReader:
    """Read files from a local directory (none if it does not exist here)."""

    def read(name: str) -> bytes | None:
        if not directory or not os.path.isfile(os.path.join(directory, name)):
            return None
        with open(os.path.join(directory, name), "rb") as f:
            return f.read()

    return read


def _read_json(read: FileReader, name: str) -> dict[str, Any]:
    raw = read(name)
    if raw is None:
        return {}
    try:
        data = json.loads(raw)
    except ValueError as exc:
        raise ConfigError(f"{name}: invalid JSON: {exc}") from exc
    return data if isinstance(data, dict) else {}


def _token_text(value: Any) -> str | None:
    """tokenizer_config stores special tokens as a string or as {"content": ...}."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and isinstance(value.get("content"), str):
        return value["content"]
    return None


def _pick_template(value: Any) -> str | None:
    """`chat_template` is a string, or a list of {"name", "template"} (use "default")."""
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        named = {t.get("name"): t.get("template") for t in value if isinstance(t, dict)}
        chosen = named.get("default") or next(iter(named.values()), None)
        return chosen if isinstance(chosen, str) else None
    return None


def load_tokenizer_files(card: ModelCard, read: FileReader) -> TokenizerFiles:
    """Everything the preprocessor needs for `card`; raises ConfigError if it cannot."""
    raw = read("tokenizer.json")
    if raw is None:
        where = "its files" if card.files else f"source_path {card.source_path!r}"
        raise ConfigError(f"model {card.name!r}: {where} hold no tokenizer.json")
    try:
        tokenizer = Tokenizer.from_str(raw.decode("utf-8"))
    except Exception as exc:  # tokenizers raises plain Exception on bad JSON
        raise ConfigError(f"model {card.name!r}: cannot load its tokenizer: {exc}") from exc

    config = _read_json(read, "tokenizer_config.json")
    template = card.chat_template or _pick_template(config.get("chat_template"))
    if template is None:
        jinja = read("chat_template.jinja")
        template = jinja.decode("utf-8") if jinja is not None else None
    bos = card.bos_token or _token_text(config.get("bos_token"))
    eos = card.eos_token or _token_text(config.get("eos_token"))

    eos_ids = list(card.eos_token_ids)
    if not eos_ids:
        raw_ids = _read_json(read, "generation_config.json").get("eos_token_id")
        if isinstance(raw_ids, int):
            eos_ids = [raw_ids]
        elif isinstance(raw_ids, list):
            eos_ids = [x for x in raw_ids if isinstance(x, int)]
    if not eos_ids and eos is not None:
        eos_id = tokenizer.token_to_id(eos)
        if eos_id is not None:
            eos_ids = [eos_id]
    return TokenizerFiles(tokenizer, template, bos, eos, eos_ids)
