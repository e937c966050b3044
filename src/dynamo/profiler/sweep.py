"""The sweeps: candidates at the SLA's ISL/OSL, then the chosen engines in depth.

1. Every TP degree (powers of two between the min and max GPUs per engine): prefill TTFT at
   the ISL; decode ITL and throughput per GPU at `decode_granularity` concurrencies from 1 to
   what the KV cache holds (at most the engine's 256 sequences).
2. `select` (in `select.py`) picks the engines.
3. The picked prefill engine over ISL (`prefill_granularity` points up to the max context
   length); the picked decode engine over context length x concurrency (KV usage).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from dynamo.profiler.config import ProfileRequest
from dynamo.profiler.hardware import MAX_NUM_SEQS, Engine, engine
from dynamo.profiler.measure import DecodePoint, Measurer, PrefillPoint

DEFAULT_MAX_CONTEXT = 16384
MIN_ISL = 128

Progress = Callable[[str], None]  # called once per measured point, with what it was


def tp_candidates(min_gpus: int, max_gpus: int) -> list[int]:
    """Powers of two in [min_gpus, max_gpus]."""
    out, tp = [], 1
    while tp <= max_gpus:
        if tp >= min_gpus:
            out.append(tp)
        tp *= 2
    return out


def max_concurrency(eng: Engine, isl: int, osl: int) -> int:
    return max(1, min(eng.max_kv_tokens // (isl + osl), MAX_NUM_SEQS))


def concurrency_points(limit: int, count: int) -> list[int]:
    """`count` concurrencies from 1 to `limit`, evenly spread (fewer when `limit` is small)."""
    if count <= 1 or limit <= 1:
        return [limit]
    return sorted({max(1, round(1 + (limit - 1) * i / (count - 1))) for i in range(count)})


def spread(low: int, high: int, count: int) -> list[int]:
    """`count` integers from `low` to `high`, evenly spread."""
    if count <= 1 or high <= low:
        return [high]
    return sorted({round(low + (high - low) * i / (count - 1)) for i in range(count)})


@dataclass(frozen=True)
class Sweep:
    prefill: list[PrefillPoint]  # one per candidate, at the SLA's ISL
    decode: list[DecodePoint]  # per candidate x concurrency, at the SLA's ISL/OSL


def sweep_points(request: ProfileRequest) -> int:
    """How many points `sweep_candidates` measures (for the progress bar)."""
    sla, hw = request.sla, request.hardware
    total = 0
    for tp in tp_candidates(hw.min_gpus_per_engine, hw.max_gpus_per_engine):
        eng = engine(hw.gpu_type, tp)
        limit = max_concurrency(eng, sla.isl, sla.osl)
        total += 1 + len(concurrency_points(limit, request.decode_granularity))
    return total


def sweep_candidates(request: ProfileRequest, measurer: Measurer, progress: Progress) -> Sweep:
    sla, hw = request.sla, request.hardware
    prefill, decode = [], []
    for tp in tp_candidates(hw.min_gpus_per_engine, hw.max_gpus_per_engine):
        eng = engine(hw.gpu_type, tp)
        point = measurer.prefill(eng, sla.isl)
        prefill.append(point)
        progress(f"prefill TP{tp}: TTFT {point.ttft_ms:.1f} ms")
        limit = max_concurrency(eng, sla.isl, sla.osl)
        for c in concurrency_points(limit, request.decode_granularity):
            d = measurer.decode(eng, sla.isl, sla.osl, c)
            decode.append(d)
            progress(f"decode TP{tp} x{c}: ITL {d.itl_ms:.1f} ms")
    return Sweep(prefill, decode)


def max_context(request: ProfileRequest, eng: Engine) -> int:
    wanted = request.max_context_length or max(DEFAULT_MAX_CONTEXT, request.sla.isl * 2)
    return min(wanted, eng.max_kv_tokens)


def prefill_isls(request: ProfileRequest, eng: Engine) -> list[int]:
    top = max(MIN_ISL, max_context(request, eng) - request.sla.osl)
    return spread(MIN_ISL, top, request.prefill_granularity)


def decode_grid(request: ProfileRequest, eng: Engine) -> list[tuple[int, int]]:
    """(ISL, concurrency) points of the in-depth decode sweep."""
    osl, n = request.sla.osl, request.decode_granularity
    top = max(MIN_ISL, max_context(request, eng) - osl)
    return [
        (isl, c)
        for isl in spread(MIN_ISL, top, n)
        for c in concurrency_points(max_concurrency(eng, isl, osl), n)
    ]


def interpolation_points(request: ProfileRequest, prefill_tp: int, decode_tp: int) -> int:
    hw = request.hardware
    return len(prefill_isls(request, engine(hw.gpu_type, prefill_tp))) + len(
        decode_grid(request, engine(hw.gpu_type, decode_tp))
    )


def profile_prefill(
    request: ProfileRequest, measurer: Measurer, tp: int, progress: Progress
) -> list[PrefillPoint]:
    eng = engine(request.hardware.gpu_type, tp)
    out = []
    for isl in prefill_isls(request, eng):
        point = measurer.prefill(eng, isl)
        out.append(point)
        progress(f"prefill TP{tp} ISL {isl}: TTFT {point.ttft_ms:.1f} ms")
    return out


def profile_decode(
    request: ProfileRequest, measurer: Measurer, tp: int, progress: Progress
) -> list[DecodePoint]:
    eng = engine(request.hardware.gpu_type, tp)
    out = []
    for isl, c in decode_grid(request, eng):
        point = measurer.decode(eng, isl, request.sla.osl, c)
        out.append(point)
        progress(f"decode TP{tp} ISL {isl} x{c}: ITL {point.itl_ms:.1f} ms")
    return out
