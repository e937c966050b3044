"""The model deployment card a worker registers so frontends can serve its model."""

from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field


class WorkerRole(StrEnum):
    AGGREGATED = "aggregated"
    PREFILL = "prefill"
    DECODE = "decode"


class BootstrapAddress(BaseModel):
    """Where a bootstrap-style prefill worker (SGLang) meets its decode workers: the decode
    engine connects there and names the request by its `bootstrap_room`."""

    model_config = ConfigDict(frozen=True)

    host: str = Field(min_length=1)
    port: int = Field(gt=0, lt=65536)


class ModelFile(BaseModel):
    """One of the model's tokenizer/config files, named by the sha256 of its content."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    name: str = Field(description="file name in the model directory, e.g. tokenizer.json")
    size_bytes: int = Field(ge=0)
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$", description="hex sha256 of the content")


class ModelCard(BaseModel):
    """What a frontend needs to preprocess, route and account for one model.

    The card stays small (a few KB, whatever the tokenizer's size): it lists the model's
    files (`tokenizer.json`, `tokenizer_config.json`, `chat_template.jinja`, `config.json`,
    `generation_config.json`) by name, size and sha256, and `files_url` is the worker's status
    server, which serves each at `/v1/model-files/{sha256}`. A frontend fetches them from any
    live worker listing the hash (or, failing that, from the hub repo `hub_repo`) and checks
    the hash. A card without `files` (test doubles) names a local directory in `source_path`.
    """

    model_config = ConfigDict(extra="ignore", frozen=True)

    name: str = Field(description="served model name (what clients put in `model`)")
    source_path: str | None = Field(None, description="the model as the worker was given it")
    files: list[ModelFile] = Field(default_factory=list, description="tokenizer/config files")
    files_url: str | None = Field(default=None, description="status server serving `files`")
    hub_repo: str | None = Field(None, description="hub repo id that also holds `files`")
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
    structured_output: bool = Field(
        default=False, description="the engine honours guided decoding (response_format)"
    )
    tool_call_parser: str | None = Field(default=None, description="the worker's tool-call parser")
    reasoning_parser: str | None = Field(default=None, description="the worker's reasoning parser")
    bootstrap: BootstrapAddress | None = Field(
        None, description="a bootstrap-style prefill worker's address (SGLang)"
    )
