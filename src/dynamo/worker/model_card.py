"""Build a worker's model card from a local model directory and the started engine's facts."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dynamo.engines.base import EngineInfo
from dynamo.protocols.model_card import ModelCard, WorkerRole
from dynamo.runtime.errors import ConfigError


@dataclass(frozen=True, slots=True)
class TokenizerFacts:
    """What a worker needs to know about its tokenizer before the engine starts."""

    directory: Path
    vocab_size: int
    eos_token_ids: list[int]
    eos_token: str | None
    bos_token: str | None
    chat_template: str | None
    context_length: int | None


def _token_text(value: object) -> str | None:
    if isinstance(value, dict):  # {"content": "</s>", ...} in older tokenizer_config files
        content = value.get("content")
        return content if isinstance(content, str) else None
    return value if isinstance(value, str) else None


def read_tokenizer_facts(directory: str | Path) -> TokenizerFacts:
    """Read tokenizer.json / tokenizer_config.json / config.json of an HF model directory."""
    root = Path(directory)
    tok_path = root / "tokenizer.json"
    if not tok_path.is_file():
        raise ConfigError(f"{root}: no tokenizer.json (need an HF model directory)")
    tokenizer = json.loads(tok_path.read_text())
    tok_cfg = _read_json(root / "tokenizer_config.json")
    model_cfg = _read_json(root / "config.json")
    vocab: dict[str, int] = dict(tokenizer.get("model", {}).get("vocab", {}) or {})
    for added in tokenizer.get("added_tokens", []):
        vocab[added["content"]] = added["id"]
    vocab_size = max(
        int(model_cfg.get("vocab_size") or 0), (max(vocab.values()) + 1) if vocab else 0
    )
    eos = _token_text(tok_cfg.get("eos_token"))
    eos_ids = model_cfg.get("eos_token_id")
    if isinstance(eos_ids, int):
        eos_ids = [eos_ids]
    if not eos_ids and eos is not None and eos in vocab:
        eos_ids = [vocab[eos]]
    context = model_cfg.get("max_position_embeddings") or tok_cfg.get("model_max_length")
    template = tok_cfg.get("chat_template")
    if template is None and (root / "chat_template.jinja").is_file():
        template = (root / "chat_template.jinja").read_text()
    return TokenizerFacts(
        directory=root,
        vocab_size=vocab_size,
        eos_token_ids=[int(i) for i in (eos_ids or [])],
        eos_token=eos,
        bos_token=_token_text(tok_cfg.get("bos_token")),
        chat_template=template if isinstance(template, str) else None,
        context_length=int(context) if isinstance(context, int | float) and context > 0 else None,
    )


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path}: invalid JSON: {exc}") from exc
    return data if isinstance(data, dict) else {}


def build_model_card(
    name: str,
    facts: TokenizerFacts,
    info: EngineInfo,
    *,
    role: WorkerRole = WorkerRole.AGGREGATED,
    source_path: str | None = None,
    hub_repo: str | None = None,
) -> ModelCard:
    """The card without its files; the worker adds them once it hosts them (`model_files`)."""
    return ModelCard(
        name=name,
        source_path=source_path or str(facts.directory),
        hub_repo=hub_repo,
        chat_template=facts.chat_template,
        bos_token=facts.bos_token,
        eos_token=facts.eos_token,
        eos_token_ids=facts.eos_token_ids,
        context_length=info.context_length,
        kv_block_size=info.kv_block_size,
        total_kv_blocks=info.total_kv_blocks,
        max_num_seqs=info.max_num_seqs,
        max_num_batched_tokens=info.max_num_batched_tokens,
        role=role,
        data_parallel_size=info.data_parallel_size,
        structured_output=info.structured_output,
        migration_limit=0,
        bootstrap=info.bootstrap,
    )
