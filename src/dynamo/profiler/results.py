"""The output directory, in Dynamo's layout, plus `profiling_results.json` for the controller.

selected_prefill_interpolation/raw_data.npz   prefill_isl, prefill_ttft (ms), prefill_thpt_per_gpu
selected_decode_interpolation/raw_data.npz    x_kv_usage, y_context_length, z_itl (ms),
                                              z_thpt_per_gpu, max_kv_tokens
prefill_raw_data.json, decode_raw_data.json   the same arrays as JSON (the ConfigMap's keys)
config_with_planner.yaml                      ConfigMap planner-profile-data + the DGD
mocker_config_with_planner.yaml               ConfigMap planner-profile-data + the mocker DGD
profiling_results.json                        the choice, its predictions and every sweep point
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

from dynamo.profiler.config import ProfileRequest
from dynamo.profiler.dgd import dump_documents, mocker_graph, profile_configmap, real_graph
from dynamo.profiler.hardware import engine
from dynamo.profiler.measure import DecodePoint, PrefillPoint
from dynamo.profiler.npz import write_npz
from dynamo.profiler.select import Selection
from dynamo.profiler.sweep import Sweep

CONFIG_FILE = "config_with_planner.yaml"
MOCKER_CONFIG_FILE = "mocker_config_with_planner.yaml"
RESULTS_FILE = "profiling_results.json"


def prefill_arrays(points: list[PrefillPoint]) -> dict[str, list[float]]:
    return {
        "prefill_isl": [float(p.isl) for p in points],
        "prefill_ttft": [p.ttft_ms for p in points],
        "prefill_thpt_per_gpu": [p.thpt_per_gpu for p in points],
    }


def decode_arrays(points: list[DecodePoint]) -> dict[str, list[float]]:
    return {
        "x_kv_usage": [d.kv_usage for d in points],
        "y_context_length": [d.context_length for d in points],
        "z_itl": [d.itl_ms for d in points],
        "z_thpt_per_gpu": [d.thpt_per_gpu for d in points],
        "max_kv_tokens": [float(points[0].max_kv_tokens)],
    }


def _point(p: PrefillPoint | DecodePoint) -> dict[str, Any]:
    out = asdict(p)
    out["thpt_per_gpu"] = p.thpt_per_gpu
    if isinstance(p, DecodePoint):
        out["kv_usage"] = p.kv_usage
    return out


def results_document(
    request: ProfileRequest, sweep: Sweep, selection: Selection, wall_s: float
) -> dict[str, Any]:
    sla, p, d = request.sla, selection.prefill, selection.decode
    return {
        "model": request.model,
        "backend": request.backend,
        "mode": request.mode,
        "gpuType": request.hardware.gpu_type,
        "sla": {"isl": sla.isl, "osl": sla.osl, "ttftMs": sla.ttft_ms, "itlMs": sla.itl_ms},
        "meetsSla": selection.meets_sla,
        "shortfall": selection.shortfall(sla) or None,
        "selected": {
            "prefill": {
                "tensorParallelSize": p.gpus,
                "gpus": p.gpus,
                "ttftMs": p.ttft_ms,
                "throughputPerGpu": p.thpt_per_gpu,
            },
            "decode": {
                "tensorParallelSize": d.gpus,
                "gpus": d.gpus,
                "concurrency": d.concurrency,
                "itlMs": d.itl_ms,
                "throughputPerGpu": d.thpt_per_gpu,
            },
        },
        # rapid's TTFT = the engine's + this (thorough measures it)
        "servingOverhead": (
            {
                "fixedMs": request.serving_overhead.fixed_ms,
                "per1kTokensMs": request.serving_overhead.per_1k_tokens_ms,
            }
            if request.mode == "rapid"
            else None
        ),
        "sweep": {
            "prefill": [_point(x) for x in sweep.prefill],
            "decode": [_point(x) for x in sweep.decode],
            # each TP at the ITL target (select.py): what the decode pick compared
            "decodeAtSla": [_point(x) for x in selection.decode_at_sla],
        },
        "wallSeconds": round(wall_s, 3),
    }


def write_outputs(
    out_dir: Path,
    request: ProfileRequest,
    sweep: Sweep,
    selection: Selection,
    prefill_profile: list[PrefillPoint],
    decode_profile: list[DecodePoint],
    wall_s: float,
) -> list[Path]:
    """Write every output file; returns their paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    p_arrays, d_arrays = prefill_arrays(prefill_profile), decode_arrays(decode_profile)
    write_npz(out_dir / "selected_prefill_interpolation" / "raw_data.npz", p_arrays)
    write_npz(out_dir / "selected_decode_interpolation" / "raw_data.npz", d_arrays)
    json_forms = {
        "prefill_raw_data.json": p_arrays,
        "decode_raw_data.json": {**d_arrays, "max_kv_tokens": d_arrays["max_kv_tokens"][0]},
    }
    for name, data in json_forms.items():
        (out_dir / name).write_text(json.dumps(data, indent=1) + "\n")
    gpu = request.hardware.gpu_type
    prefill_engine = engine(gpu, selection.prefill.gpus)
    decode_engine = engine(gpu, selection.decode.gpus)
    configmap = profile_configmap(json_forms, request.namespace)
    (out_dir / CONFIG_FILE).write_text(
        dump_documents(configmap, real_graph(request, prefill_engine, decode_engine))
    )
    (out_dir / MOCKER_CONFIG_FILE).write_text(
        dump_documents(configmap, mocker_graph(request, prefill_engine, decode_engine))
    )
    document = results_document(request, sweep, selection, wall_s)
    (out_dir / RESULTS_FILE).write_text(json.dumps(document, indent=1) + "\n")
    return sorted(p for p in out_dir.rglob("*") if p.is_file())
