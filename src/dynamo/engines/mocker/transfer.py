"""The mocker's simulated KV transfer between a prefill worker and a decode worker.

A prefill worker returns `kv_transfer_params` naming the prompt's full blocks (their sequence
hashes) and how long it keeps them; a decode worker checks them against its own hashes of the
prompt (`check_params`), pulls the blocks it does not cache over one `KvLink` per worker
(bytes = tokens x KV bytes per token, at the link's bandwidth, one transfer at a time) and then
decodes without a prefill step.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from dynamo.protocols.hashing import block_hashes, sequence_hashes
from dynamo.runtime.errors import KvTransferError

ENGINE = "mocker"
# Qwen3-0.6B in bf16 (28 layers x 8 KV heads x 128 dims x K and V x 2 bytes): used when the
# model's config.json does not say.
DEFAULT_KV_BYTES_PER_TOKEN = 114_688
_DTYPE_BYTES = {"float32": 4, "float16": 2, "bfloat16": 2, "float8_e4m3fn": 1, "fp8": 1}


def kv_bytes_per_token(model_dir: str | Path | None) -> int:
    """K and V bytes per token of every layer, from `config.json` (else the default)."""
    if model_dir is None:
        return DEFAULT_KV_BYTES_PER_TOKEN
    try:
        cfg: dict[str, Any] = json.loads((Path(model_dir) / "config.json").read_text())
        cfg = cfg.get("text_config", cfg)
        layers = int(cfg["num_hidden_layers"])
        heads = int(cfg.get("num_attention_heads") or 0)
        kv_heads = int(cfg.get("num_key_value_heads") or heads)
        head_dim = int(cfg.get("head_dim") or int(cfg["hidden_size"]) // heads)
        dtype = _DTYPE_BYTES.get(str(cfg.get("torch_dtype") or cfg.get("dtype")), 2)
    except (OSError, ValueError, KeyError, TypeError, ZeroDivisionError):
        return DEFAULT_KV_BYTES_PER_TOKEN
    return 2 * layers * kv_heads * head_dim * dtype


def prompt_hashes(prompt: Sequence[int], block_size: int) -> list[int]:
    """Sequence hashes of the prompt's full blocks (the router's and the KV events' hashes)."""
    return sequence_hashes(
        block_hashes(prompt[: len(prompt) // block_size * block_size], block_size)
    )


def transfer_params(
    prompt: Sequence[int],
    block_size: int,
    *,
    now_s: float,
    keep_s: float,
    hashes: Sequence[int] | None = None,
) -> dict[str, object]:
    """What a prefill worker returns as `disaggregated_params`; `hashes`: the prompt's
    `prompt_hashes` when the caller has them already (8,192 tokens cost ~0.25 ms to hash)."""
    return {
        "kv_transfer_params": {
            "engine": ENGINE,
            "block_size": block_size,
            "num_tokens": len(prompt),
            "block_hashes": list(hashes)
            if hashes is not None
            else prompt_hashes(prompt, block_size),
            "expires_at_unix_s": now_s + keep_s,
        }
    }


def check_params(
    params: object,
    prompt: Sequence[int],
    block_size: int,
    *,
    now_s: float,
    hashes: list[int] | None = None,
) -> list[int]:
    """The prompt's block hashes if `params` are valid transfer params for it; else
    `KvTransferError` saying what is wrong. `hashes`: the prompt's `prompt_hashes`, when the
    caller has them already."""
    inner = params.get("kv_transfer_params") if isinstance(params, dict) else None
    if not isinstance(inner, dict):
        raise KvTransferError(
            "disaggregated_params has no kv_transfer_params object", param="disaggregated_params"
        )
    if inner.get("engine") != ENGINE:
        raise KvTransferError(
            f"kv_transfer_params are for engine {inner.get('engine')!r}, not {ENGINE!r}",
            param="disaggregated_params",
        )
    if inner.get("block_size") != block_size:
        raise KvTransferError(
            f"kv_transfer_params use block size {inner.get('block_size')!r}; this worker's is "
            f"{block_size}",
            param="disaggregated_params",
        )
    ours = prompt_hashes(prompt, block_size) if hashes is None else hashes
    if inner.get("num_tokens") != len(prompt) or inner.get("block_hashes") != ours:
        raise KvTransferError(
            "kv_transfer_params name blocks of another prompt", param="disaggregated_params"
        )
    expires = inner.get("expires_at_unix_s")
    if not isinstance(expires, int | float) or expires < now_s:
        raise KvTransferError(
            "kv_transfer_params are stale: the prefill worker no longer holds those blocks",
            param="disaggregated_params",
        )
    return ours


class KvLink:
    """One worker's inbound link: transfers queue behind each other at a fixed bandwidth."""

    __slots__ = ("_free_at", "bytes_per_s")

    def __init__(self, bandwidth_gb_s: float, speedup_ratio: float = 1.0) -> None:
        # speedup 0 (no delays) or bandwidth 0 (unlimited) make transfers instantaneous
        rate = bandwidth_gb_s * 1e9 * speedup_ratio
        self.bytes_per_s = rate if rate > 0 else float("inf")
        self._free_at = 0.0

    def schedule(self, nbytes: int, now_s: float) -> float:
        """Book a transfer of `nbytes` starting no earlier than `now_s`; when it completes."""
        start = max(now_s, self._free_at)
        self._free_at = start + nbytes / self.bytes_per_s
        return self._free_at
