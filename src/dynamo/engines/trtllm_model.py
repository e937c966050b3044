"""What the TensorRT-LLM worker reads from the model directory itself.

TensorRT-LLM runs with `skip_tokenizer_init=True` (token ids in and out), so it has no tokenizer
to fill `SamplingParams.end_id`/`pad_id` and refuses every request without them; we load the
model's HF tokenizer (`tokenizer.json`, with the `tokenizers` library) to find them. The
context length comes from `config.json` when the PyTorch backend leaves `max_seq_len` unset.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tokenizers import Tokenizer

from dynamo.runtime.errors import ConfigError


@dataclass(frozen=True, slots=True)
class ModelFacts:
    """`end_id` (the tokenizer's EOS id, as TensorRT-LLM's own `SamplingParams._setup` picks),
    `pad_id` (the pad token, else `end_id`), every EOS id the model declares (the others are
    sent as stop tokens) and `config.json`'s `max_position_embeddings`."""

    end_id: int
    pad_id: int
    eos_token_ids: tuple[int, ...]
    max_position_embeddings: int | None


def read_model_facts(model_dir: str | Path) -> ModelFacts:
    """The facts of the HF model directory `model_dir` (blocking file I/O: call off the loop)."""
    root = Path(model_dir)
    tokenizer_file = root / "tokenizer.json"
    if not tokenizer_file.is_file():
        raise ConfigError(
            f"{root}: no tokenizer.json; the TensorRT-LLM worker loads the model's tokenizer "
            "to give TensorRT-LLM its end_id and pad_id"
        )
    try:
        tokenizer = Tokenizer.from_file(str(tokenizer_file))
    except Exception as exc:  # tokenizers raises a bare Exception on a malformed file
        raise ConfigError(f"{tokenizer_file}: cannot load the tokenizer: {exc}") from exc
    config = _read_json(root / "config.json")
    generation = _read_json(root / "generation_config.json")
    tokenizer_config = _read_json(root / "tokenizer_config.json")
    eos_ids = _unique(
        _token_id(tokenizer, tokenizer_config.get("eos_token"))
        + _ids(generation.get("eos_token_id"))
        + _ids(config.get("eos_token_id"))
    )
    if not eos_ids:
        raise ConfigError(
            f"{root}: no EOS token in tokenizer_config.json, generation_config.json or "
            "config.json; TensorRT-LLM needs one as end_id"
        )
    pad_ids = (
        _token_id(tokenizer, tokenizer_config.get("pad_token"))
        + _ids(generation.get("pad_token_id"))
        + _ids(config.get("pad_token_id"))
    )
    context = config.get("max_position_embeddings")
    return ModelFacts(
        end_id=eos_ids[0],
        pad_id=pad_ids[0] if pad_ids else eos_ids[0],
        eos_token_ids=tuple(eos_ids),
        max_position_embeddings=int(context) if isinstance(context, int) and context > 0 else None,
    )


def _token_id(tokenizer: Tokenizer, token: Any) -> list[int]:
    if isinstance(token, dict):  # {"content": "</s>", ...} in older tokenizer_config files
        token = token.get("content")
    if not isinstance(token, str):
        return []
    token_id = tokenizer.token_to_id(token)
    return [] if token_id is None else [int(token_id)]


def _ids(value: Any) -> list[int]:
    if isinstance(value, bool):
        return []
    if isinstance(value, int):
        return [value]
    if isinstance(value, list):
        return [int(v) for v in value if isinstance(v, int) and not isinstance(v, bool)]
    return []


def _unique(ids: list[int]) -> list[int]:
    return list(dict.fromkeys(ids))


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read it as JSON: {exc}") from exc
    return data if isinstance(data, dict) else {}
