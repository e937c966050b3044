"""One engine candidate (GPU type x tensor parallelism) as the mocker settings that simulate it.

The mocker's timing polynomials are Dynamo's, fitted on one H100-class GPU running vLLM; its
default KV cache is 16384 blocks of 64 tokens. Other GPUs scale them by datasheet ratios to
the H100 SXM: prefill by dense BF16 FLOPS, decode by memory bandwidth, the KV cache by memory.
Tensor parallelism `tp` multiplies the KV cache by `tp` and the prefill speed by
`tp * TP_EFFICIENCY**log2(tp)` (compute split over the GPUs, less all-reduce overhead). Decode
time is the mocker's polynomial in the fraction of the KV cache in use, i.e. of each GPU's
shard, so TP's decode gain already comes through that fraction; only the all-reduce
efficiency is applied on top. The backend does not change the model (there is one timing
model, vLLM's); it only picks the worker command of the generated graph.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from dynamo.engines.mocker.config import MockerConfig
from dynamo.runtime.errors import ConfigError

BASE_KV_BLOCKS = 16384
BLOCK_SIZE = 64
MAX_NUM_SEQS = 256
TP_EFFICIENCY = 0.9  # per doubling of the TP degree


@dataclass(frozen=True)
class Gpu:
    prefill_speed: float  # FLOPS ratio to the H100 SXM
    decode_speed: float  # memory-bandwidth ratio to the H100 SXM
    memory_gb: int


# datasheet figures: BF16 dense TFLOPS 989 (H100/H200), 312 (A100), 362 (L40S), 2250 (B200);
# bandwidth TB/s 3.35 (H100), 4.8 (H200), 2.04 (A100 80GB), 0.864 (L40S), 8.0 (B200)
GPUS: dict[str, Gpu] = {
    "h100_sxm": Gpu(1.0, 1.0, 80),
    "h200_sxm": Gpu(1.0, 4.8 / 3.35, 141),
    "a100_sxm": Gpu(312 / 989, 2.04 / 3.35, 80),
    "l40s": Gpu(362 / 989, 0.864 / 3.35, 48),
    "b200_sxm": Gpu(2250 / 989, 8.0 / 3.35, 180),
}


def gpu(name: str) -> Gpu:
    try:
        return GPUS[name]
    except KeyError:
        raise ConfigError(
            f"hardware.gpu_type: unknown GPU {name!r} (known: {', '.join(sorted(GPUS))})"
        ) from None


@dataclass(frozen=True)
class Engine:
    """One candidate engine: its GPUs and the mocker settings that stand for it."""

    gpus: int
    speedup_ratio: float  # prefill speed vs one H100
    decode_speedup_ratio: float  # extra decode factor (the mocker multiplies the two)
    num_gpu_blocks: int

    @property
    def max_kv_tokens(self) -> int:
        return self.num_gpu_blocks * BLOCK_SIZE

    def mocker_config(self, **overrides: object) -> MockerConfig:
        fields: dict[str, object] = {
            "speedup_ratio": self.speedup_ratio,
            "decode_speedup_ratio": self.decode_speedup_ratio,
            "num_gpu_blocks": self.num_gpu_blocks,
            "block_size": BLOCK_SIZE,
            "max_num_seqs": MAX_NUM_SEQS,
        }
        fields.update(overrides)
        return MockerConfig(**fields)  # type: ignore[arg-type]

    def mocker_args(self) -> list[str]:
        """The `python -m dynamo.mocker` flags of this engine."""
        return [
            "--speedup-ratio",
            f"{self.speedup_ratio:.6g}",
            "--decode-speedup-ratio",
            f"{self.decode_speedup_ratio:.6g}",
            "--num-gpu-blocks-override",
            str(self.num_gpu_blocks),
            "--block-size",
            str(BLOCK_SIZE),
            "--max-num-seqs",
            str(MAX_NUM_SEQS),
        ]


def engine(gpu_type: str, tp: int) -> Engine:
    """The engine of `tp` GPUs of `gpu_type`."""
    if tp < 1:
        raise ConfigError(f"tensor parallelism must be >= 1, got {tp}")
    g = gpu(gpu_type)
    efficiency = TP_EFFICIENCY ** math.log2(tp)
    prefill = g.prefill_speed * tp * efficiency
    decode = g.decode_speed * efficiency
    blocks = int(BASE_KV_BLOCKS * g.memory_gb / 80 * tp)
    return Engine(tp, prefill, decode / prefill, blocks)
