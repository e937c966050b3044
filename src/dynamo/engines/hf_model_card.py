"""Build a worker's `ModelCard` from a Hugging Face model directory and a started engine.

Every real engine (vLLM, SGLang, TRT-LLM) loads a HF-style directory; its tokenizer files, chat
template and generation config say how to preprocess requests, and the engine's `EngineInfo`
says how much context and KV cache it really has.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from dynamo.engines.base import EngineInfo
from dynamo.protocols.model_card import ModelCard, WorkerRole
from dynamo.runtime.errors import ConfigError

# A tokenizer.json up to this size travels inside the card (discovery values have limits:
# etcd's default request size is 1.5 MiB); a larger one is read by the frontend from `source_path`.
INLINE_TOKENIZER_MAX_BYTES = 1 << 20


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ConfigError(f"cannot read {path}: {exc}") from exc
    return data if isinstance(data, dict) else {}


def _token_text(value: Any) -> str | None:
    """tokenizer_config.json writes special tokens as a string or as {"content": ...}."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and isinstance(value.get("content"), str):
        return value["content"]
    return None


def _as_id_list(value: Any) -> list[int]:
    if isinstance(value, int):
        return [value]
    if isinstance(value, list):
        return [v for v in value if isinstance(v, int)]
    return []


def chat_template_of(model_dir: Path, tokenizer_config: dict[str, Any]) -> str | None:
    """The chat template: `chat_template.jinja` (transformers >= 4.43 layout) or the config's."""
    jinja = model_dir / "chat_template.jinja"
    if jinja.is_file():
        return jinja.read_text(encoding="utf-8")
    tmpl = tokenizer_config.get("chat_template")
    if isinstance(tmpl, str):
        return tmpl
    if isinstance(tmpl, list):  # [{"name": "default", "template": ...}, ...]
        named = {t.get("name"): t.get("template") for t in tmpl if isinstance(t, dict)}
        chosen = named.get("default") or next(iter(named.values()), None)
        return chosen if isinstance(chosen, str) else None
    return None


def _token_id(tokenizer: dict[str, Any], text: str | None) -> int | None:
    if text is None:
        return None
    for tok in tokenizer.get("added_tokens", []):
        if isinstance(tok, dict) and tok.get("content") == text and isinstance(tok.get("id"), int):
            return int(tok["id"])
    vocab = tokenizer.get("model", {}).get("vocab")
    if isinstance(vocab, dict) and isinstance(vocab.get(text), int):
        return int(vocab[text])
    return None


def build_model_card(
    model_dir: str | Path,
    info: EngineInfo,
    *,
    name: str,
    role: WorkerRole = WorkerRole.AGGREGATED,
    migration_limit: int = 0,
    inline_tokenizer: bool | None = None,
    model_types: list[str] | None = None,
) -> ModelCard:
    """The card a worker registers for the model in `model_dir` served by an engine.

    `inline_tokenizer=None` inlines tokenizer.json when it is small enough for discovery.
    """
    root = Path(model_dir)
    tok_path = root / "tokenizer.json"
    if not tok_path.is_file():
        raise ConfigError(
            f"{root} has no tokenizer.json: the frontend needs a HF fast tokenizer to serve it"
        )
    tok_cfg = _read_json(root / "tokenizer_config.json")
    gen_cfg = _read_json(root / "generation_config.json")
    model_cfg = _read_json(root / "config.json")
    size = tok_path.stat().st_size
    inline = size <= INLINE_TOKENIZER_MAX_BYTES if inline_tokenizer is None else inline_tokenizer
    tok_text = tok_path.read_text(encoding="utf-8")
    tokenizer = json.loads(tok_text)

    bos = _token_text(tok_cfg.get("bos_token"))
    eos = _token_text(tok_cfg.get("eos_token"))
    eos_ids = _as_id_list(gen_cfg.get("eos_token_id")) or _as_id_list(model_cfg.get("eos_token_id"))
    eos_from_tok = _token_id(tokenizer, eos)
    if eos_from_tok is not None and eos_from_tok not in eos_ids:
        eos_ids.append(eos_from_tok)

    extra: dict[str, Any] = {}
    if model_types is not None:
        extra["model_types"] = model_types
    return ModelCard(
        name=name,
        source_path=str(root),
        tokenizer_json=tok_text if inline else None,
        chat_template=chat_template_of(root, tok_cfg),
        bos_token=bos,
        eos_token=eos,
        eos_token_ids=eos_ids,
        context_length=info.context_length,
        kv_block_size=info.kv_block_size,
        total_kv_blocks=info.total_kv_blocks,
        max_num_seqs=info.max_num_seqs,
        max_num_batched_tokens=info.max_num_batched_tokens,
        role=role,
        data_parallel_size=info.data_parallel_size,
        migration_limit=migration_limit,
        **extra,
    )
