"""Mocker engine configuration: one frozen dataclass from which every mocker flag is derived.

Flag names follow Dynamo's `python -m dynamo.mocker`; each flag also reads `DYN_<FLAG>`.
"""

from __future__ import annotations

import dataclasses

from dynamo.runtime.config import option
from dynamo.runtime.errors import ConfigError

PREEMPTION_MODES = ("lifo", "fifo")


@dataclasses.dataclass(frozen=True)
class MockerConfig:
    """A simulated vLLM engine: KV cache size, batching limits, timing speedups, roles."""

    model_path: str | None = option(
        None, help="local model directory or HF id; tokenizer and chat template come from it"
    )
    model_name: str | None = option(None, help="served model name (default: the model path)")
    endpoint: str | None = option(
        None,
        help="dyn://namespace.component.endpoint to serve "
        "(default dyn://<ns>.backend.generate, prefill workers dyn://<ns>.prefill.generate)",
    )
    num_workers: int = option(1, help="simulated workers in this process, each its own instance")
    is_prefill_worker: bool = option(False, help="register as a prefill worker (disaggregation)")
    is_decode_worker: bool = option(False, help="register as a decode worker (disaggregation)")
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
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(message)

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
        component = "prefill" if self.is_prefill_worker else "backend"
        return f"dyn://{namespace}.{component}.generate"
