"""Mocker engine configuration: one frozen dataclass from which every mocker flag is derived.

Flag names follow Dynamo's `python -m dynamo.mocker`; each flag also reads `DYN_<FLAG>`.
"""

from __future__ import annotations

import dataclasses

from dynamo.runtime.config import option
from dynamo.runtime.errors import ConfigError

PREEMPTION_MODES = ("lifo", "fifo")
DISAGGREGATION_MODES = ("agg", "prefill", "decode")


@dataclasses.dataclass(frozen=True)
class MockerConfig:
    """A simulated vLLM engine: KV cache size, batching limits, timing speedups, roles."""

    model_path: str | None = option(
        None, help="local model directory or HF id; tokenizer and chat template come from it"
    )
    model_name: str | None = option(None, help="served model name (default: the model path)")
    canned_outputs: str | None = option(
        None,
        help='JSON Lines file of {"match": "<substring of the rendered prompt>", "text": '
        '"<output>"}: the first match is generated (then EOS), otherwise hashed tokens',
    )
    endpoint: str | None = option(
        None,
        help="dyn://namespace.component.endpoint to serve "
        "(default dyn://<ns>.backend.generate, prefill workers dyn://<ns>.prefill.generate)",
    )
    num_workers: int = option(1, help="simulated workers in this process, each its own instance")
    is_prefill_worker: bool = option(
        False, help="register as a prefill worker (same as --disaggregation-mode prefill)"
    )
    is_decode_worker: bool = option(
        False, help="register as a decode worker (same as --disaggregation-mode decode)"
    )
    disaggregation_mode: str | None = option(
        None,
        choices=DISAGGREGATION_MODES,
        help="agg (default), prefill (return KV transfer params) or decode (pull the KV "
        "named by transfer params, then decode)",
    )
    kv_transfer_bandwidth_gb_s: float = option(
        25.0,
        flag="--kv-transfer-bandwidth",
        env="DYN_KV_TRANSFER_BANDWIDTH",
        help="decode workers: simulated KV transfer bandwidth in GB/s (0 = instantaneous)",
    )
    kv_bytes_per_token: int | None = option(
        None,
        help="KV bytes per token (default: 2 x layers x KV heads x head dim x dtype bytes from "
        "the model's config.json, else 114688)",
    )
    kv_transfer_keep_s: float = option(
        60.0,
        flag="--kv-transfer-keep",
        env="DYN_KV_TRANSFER_KEEP",
        help="prefill workers: seconds their transfer params stay valid",
    )
    num_gpu_blocks: int = option(
        16384,
        flag="--num-gpu-blocks-override",
        env="DYN_NUM_GPU_BLOCKS_OVERRIDE",
        help="KV cache blocks per data-parallel rank",
    )
    block_size: int = option(64, help="tokens per KV block")
    max_num_seqs: int = option(256, help="most requests running at once")
    max_num_batched_tokens: int = option(8192, help="token budget of one scheduler step")
    enable_prefix_caching: bool = option(True, help="reuse cached KV blocks across requests")
    enable_chunked_prefill: bool = option(True, help="split long prompts over several steps")
    watermark: float = option(
        0.01, help="fraction of KV blocks kept free when admitting a new request"
    )
    preemption_mode: str = option(
        "lifo",
        choices=PREEMPTION_MODES,
        help="which running request to preempt when decode runs out of blocks",
    )
    speedup_ratio: float = option(
        1.0, help="divide simulated step times by this (0 = no delays at all)"
    )
    decode_speedup_ratio: float = option(
        1.0, help="extra divisor of decode step times (effective: speedup * decode speedup)"
    )
    data_parallel_size: int = option(1, help="data-parallel ranks, each with its own KV cache")
    startup_time_s: float | None = option(
        None, flag="--startup-time", env="DYN_STARTUP_TIME", help="simulated startup delay (s)"
    )
    max_model_len: int | None = option(
        None, help="longest sequence (prompt + output) in tokens (default: the whole KV cache)"
    )

    def __post_init__(self) -> None:
        checks = [
            (self.num_gpu_blocks >= 1, "--num-gpu-blocks-override must be >= 1"),
            (self.block_size >= 2, "--block-size must be >= 2"),
            (self.max_num_seqs >= 1, "--max-num-seqs must be >= 1"),
            (self.max_num_batched_tokens >= 1, "--max-num-batched-tokens must be >= 1"),
            (0.0 <= self.watermark < 1.0, "--watermark must be in [0, 1)"),
            (self.speedup_ratio >= 0.0, "--speedup-ratio must be >= 0"),
            (self.decode_speedup_ratio > 0.0, "--decode-speedup-ratio must be > 0"),
            (self.data_parallel_size >= 1, "--data-parallel-size must be >= 1"),
            (self.num_workers >= 1, "--num-workers must be >= 1"),
            (
                self.startup_time_s is None or self.startup_time_s >= 0.0,
                "--startup-time must be >= 0",
            ),
            (
                self.max_model_len is None or self.max_model_len >= 1,
                "--max-model-len must be >= 1",
            ),
            (self.preemption_mode in PREEMPTION_MODES, "--preemption-mode must be lifo or fifo"),
            (
                not (self.is_prefill_worker and self.is_decode_worker),
                "--is-prefill-worker and --is-decode-worker are exclusive",
            ),
            (
                self.disaggregation_mode is None
                or not (self.is_prefill_worker or self.is_decode_worker)
                or self.disaggregation_mode == self.mode_from_booleans,
                f"--disaggregation-mode {self.disaggregation_mode} contradicts "
                f"--is-{self.mode_from_booleans}-worker",
            ),
            (self.kv_transfer_bandwidth_gb_s >= 0.0, "--kv-transfer-bandwidth must be >= 0"),
            (
                self.kv_bytes_per_token is None or self.kv_bytes_per_token >= 1,
                "--kv-bytes-per-token must be >= 1",
            ),
            (self.kv_transfer_keep_s > 0.0, "--kv-transfer-keep must be > 0"),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(message)

    @property
    def mode_from_booleans(self) -> str:
        if self.is_prefill_worker:
            return "prefill"
        return "decode" if self.is_decode_worker else "agg"

    @property
    def mode(self) -> str:
        """agg, prefill or decode: `--disaggregation-mode`, else the `--is-*-worker` flags."""
        return self.disaggregation_mode or self.mode_from_booleans

    @property
    def capacity_tokens(self) -> int:
        """Tokens the KV cache of one rank holds."""
        return self.num_gpu_blocks * self.block_size

    @property
    def effective_max_model_len(self) -> int:
        """Longest sequence a request may reach: the flag, capped by what one rank can hold.

        Without chunked prefill a whole sequence must also fit one step's token budget
        (a preempted request recomputes it in one go), as vLLM requires.
        """
        limit = self.capacity_tokens
        if self.max_model_len is not None:
            limit = min(limit, self.max_model_len)
        if not self.enable_chunked_prefill:
            limit = min(limit, self.max_num_batched_tokens)
        return limit

    def endpoint_for(self, namespace: str) -> str:
        """The endpoint to serve: `--endpoint`, else Dynamo's default for this worker role."""
        if self.endpoint:
            return self.endpoint
        component = "prefill" if self.mode == "prefill" else "backend"
        return f"dyn://{namespace}.{component}.generate"
