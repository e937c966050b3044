"""PNG plots of a profiling run (matplotlib, from `pydynamo[profiler]`).

prefill_performance.png: TTFT per TP degree at the SLA's ISL against the TTFT target;
decode_performance.png: ITL vs throughput per GPU per TP degree against the ITL target, each
TP degree's value at the target (interpolated, `select.py`) marked;
prefill_ttft_interpolation.png: the chosen prefill engine's TTFT over ISL;
decode_itl_interpolation.png: the chosen decode engine's ITL over KV usage per context length.
The chosen points are marked.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from dynamo.profiler.config import Sla
from dynamo.profiler.measure import DecodePoint, PrefillPoint
from dynamo.profiler.select import Selection
from dynamo.profiler.sweep import Sweep
from dynamo.runtime.extras import import_extra


def _pyplot() -> Any:
    matplotlib = import_extra("matplotlib", "profiler")
    matplotlib.use("Agg")
    return import_extra("matplotlib.pyplot", "profiler")


def write_plots(
    out_dir: Path,
    sla: Sla,
    sweep: Sweep,
    selection: Selection,
    prefill_profile: list[PrefillPoint],
    decode_profile: list[DecodePoint],
) -> list[Path]:
    """Write the PNGs; MissingExtraError when matplotlib is not installed."""
    plt = _pyplot()
    written = []

    def save(fig: Any, name: str) -> None:
        path = out_dir / name
        fig.tight_layout()
        fig.savefig(path, dpi=80)
        plt.close(fig)
        written.append(path)

    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.bar([f"TP{p.gpus}" for p in sweep.prefill], [p.ttft_ms for p in sweep.prefill])
    ax.axhline(sla.ttft_ms, color="red", linestyle="--", label=f"TTFT target {sla.ttft_ms:g} ms")
    ax.set_ylabel("TTFT (ms)")
    ax.set_title(f"Prefill at ISL {sla.isl} (chosen: TP{selection.prefill.gpus})")
    ax.legend()
    save(fig, "prefill_performance.png")

    fig, ax = plt.subplots(figsize=(5.5, 3.5))
    for tp in sorted({d.gpus for d in sweep.decode}):
        pts = [d for d in sweep.decode if d.gpus == tp]
        ax.plot([d.itl_ms for d in pts], [d.thpt_per_gpu for d in pts], "o-", label=f"TP{tp}")
    ax.axvline(sla.itl_ms, color="red", linestyle="--", label=f"ITL target {sla.itl_ms:g} ms")
    at_sla = selection.decode_at_sla
    if at_sla:
        ax.plot([d.itl_ms for d in at_sla], [d.thpt_per_gpu for d in at_sla], "kx", label="at SLA")
    chosen = selection.decode
    ax.plot([chosen.itl_ms], [chosen.thpt_per_gpu], "k*", markersize=14, label="chosen")
    ax.set_xlabel("ITL (ms)")
    ax.set_ylabel("output tokens/s per GPU")
    ax.set_title(f"Decode at ISL {sla.isl}, OSL {sla.osl}")
    ax.legend(fontsize=8)
    save(fig, "decode_performance.png")

    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.plot([p.isl for p in prefill_profile], [p.ttft_ms for p in prefill_profile], "o-")
    ax.axhline(sla.ttft_ms, color="red", linestyle="--", label="TTFT target")
    ax.set_xlabel("ISL (tokens)")
    ax.set_ylabel("TTFT (ms)")
    ax.set_title(f"Prefill TP{selection.prefill.gpus}: TTFT over ISL")
    ax.legend()
    save(fig, "prefill_ttft_interpolation.png")

    fig, ax = plt.subplots(figsize=(5.5, 3.5))
    for ctx in sorted({d.context_length for d in decode_profile}):
        pts = [d for d in decode_profile if d.context_length == ctx]
        ax.plot([d.kv_usage for d in pts], [d.itl_ms for d in pts], "o-", label=f"ctx {ctx:g}")
    ax.axhline(sla.itl_ms, color="red", linestyle="--", label="ITL target")
    ax.set_xlabel("KV cache usage")
    ax.set_ylabel("ITL (ms)")
    ax.set_title(f"Decode TP{selection.decode.gpus}: ITL over KV usage")
    ax.legend(fontsize=7)
    save(fig, "decode_itl_interpolation.png")
    return written
