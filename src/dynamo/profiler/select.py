"""Pick the engines: the highest throughput per GPU among the points that meet the SLA.

Prefill points meet it when TTFT <= target, decode points when ITL <= target. When none does,
the selection is the fastest point (lowest TTFT / ITL) and `meets_sla` is False, with the best
achievable latency in the message.
"""

from __future__ import annotations

from dataclasses import dataclass

from dynamo.profiler.config import Sla
from dynamo.profiler.measure import DecodePoint, PrefillPoint


@dataclass(frozen=True)
class Selection:
    prefill: PrefillPoint
    decode: DecodePoint
    prefill_meets: bool
    decode_meets: bool

    @property
    def meets_sla(self) -> bool:
        return self.prefill_meets and self.decode_meets

    def shortfall(self, sla: Sla) -> str:
        """One line on what no candidate reaches (empty when the SLA is met)."""
        parts = []
        if not self.prefill_meets:
            parts.append(
                f"TTFT target {sla.ttft_ms:g} ms: best achievable {self.prefill.ttft_ms:.1f} ms "
                f"(TP{self.prefill.gpus})"
            )
        if not self.decode_meets:
            parts.append(
                f"ITL target {sla.itl_ms:g} ms: best achievable {self.decode.itl_ms:.1f} ms "
                f"(TP{self.decode.gpus}, concurrency {self.decode.concurrency})"
            )
        return "; ".join(parts)


def select(prefill: list[PrefillPoint], decode: list[DecodePoint], sla: Sla) -> Selection:
    if not prefill or not decode:
        raise ValueError("nothing was measured")
    p_ok = [p for p in prefill if p.ttft_ms <= sla.ttft_ms]
    d_ok = [d for d in decode if d.itl_ms <= sla.itl_ms]
    best_p = (
        max(p_ok, key=lambda p: (p.thpt_per_gpu, -p.gpus))
        if p_ok
        else min(prefill, key=lambda p: p.ttft_ms)
    )
    best_d = (
        max(d_ok, key=lambda d: (d.thpt_per_gpu, -d.gpus))
        if d_ok
        else min(decode, key=lambda d: d.itl_ms)
    )
    return Selection(best_p, best_d, bool(p_ok), bool(d_ok))
