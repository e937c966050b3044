"""Load a model's tokenizer, chat template and special tokens from its model card.

The card carries them inline (`tokenizer_json`, `chat_template`) or names a directory
(`source_path`) holding HF's `tokenizer.json`, `tokenizer_config.json` and
`generation_config.json`. Loading is blocking (a large tokenizer.json takes ~100 ms);
callers run it in a thread.
"""

from __future__ import annotations

import json
import os
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


def _read_json(path: str) -> dict[str, Any]:
    if not os.path.isfile(path):
        return {}
    with open(path, encoding="utf-8") as f:
        data = json.load(f)
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


def load_tokenizer_files(card: ModelCard) -> TokenizerFiles:
    """Everything the preprocessor needs for `card`; raises ConfigError if it cannot."""
    src = card.source_path if card.source_path and os.path.isdir(card.source_path) else None
    try:
        if card.tokenizer_json:
            tokenizer = Tokenizer.from_str(card.tokenizer_json)
        elif src and os.path.isfile(os.path.join(src, "tokenizer.json")):
            tokenizer = Tokenizer.from_file(os.path.join(src, "tokenizer.json"))
        else:
            raise ConfigError(
                f"model {card.name!r}: the card has no tokenizer_json and source_path "
                f"{card.source_path!r} holds no tokenizer.json"
            )
    except ConfigError:
        raise
    except Exception as exc:  # tokenizers raises plain Exception on bad JSON
        raise ConfigError(f"model {card.name!r}: cannot load its tokenizer: {exc}") from exc

    config = _read_json(os.path.join(src, "tokenizer_config.json")) if src else {}
    template = card.chat_template or _pick_template(config.get("chat_template"))
    if template is None and src and os.path.isfile(os.path.join(src, "chat_template.jinja")):
        with open(os.path.join(src, "chat_template.jinja"), encoding="utf-8") as f:
            template = f.read()
    bos = card.bos_token or _token_text(config.get("bos_token"))
    eos = card.eos_token or _token_text(config.get("eos_token"))

    eos_ids = list(card.eos_token_ids)
    if not eos_ids and src:
        gen = _read_json(os.path.join(src, "generation_config.json"))
        raw = gen.get("eos_token_id")
        if isinstance(raw, int):
            eos_ids = [raw]
        elif isinstance(raw, list):
            eos_ids = [x for x in raw if isinstance(x, int)]
    if not eos_ids and eos is not None:
        eos_id = tokenizer.token_to_id(eos)
        if eos_id is not None:
            eos_ids = [eos_id]
    return TokenizerFiles(tokenizer, template, bos, eos, eos_ids)
