"""The model deployment card a worker registers so frontends can serve its model."""

from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field


class WorkerRole(StrEnum):
    AGGREGATED = "aggregated"
    PREFILL = "prefill"
    DECODE = "decode"


class ModelCard(BaseModel):
    """What a frontend needs to preprocess, route and account for one model.

    `tokenizer_json` carries the HF `tokenizer.json` text inline (small enough for discovery
    values of test models); otherwise `source_path` names a local directory or hub id that
    holds `tokenizer.json` / `tokenizer_config.json`.
    """

    model_config = ConfigDict(extra="ignore", frozen=True)

    name: str = Field(description="served model name (what clients put in `model`)")
    source_path: str | None = Field(None, description="local dir or hub id of tokenizer files")
    tokenizer_json: str | None = Field(None, description="inline HF tokenizer.json", repr=False)
    chat_template: str | None = Field(None, description="Jinja chat template")
    bos_token: str | None = None
    eos_token: str | None = None
    eos_token_ids: list[int] = Field(default_factory=list)
    context_length: int = Field(8192, gt=0)
    kv_block_size: int = Field(16, gt=1)
    total_kv_blocks: int | None = Field(None, ge=0)
    max_num_seqs: int | None = None
    max_num_batched_tokens: int | None = None
    role: WorkerRole = WorkerRole.AGGREGATED
    model_types: list[str] = Field(default_factory=lambda: ["chat", "completions"])
    data_parallel_size: int = Field(1, ge=1)
    migration_limit: int = Field(0, ge=0)
