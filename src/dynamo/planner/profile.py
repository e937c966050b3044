"""What one engine can do, from the profiler's data (or the mocker's own timing model).

`PrefillProfile`: TTFT and prefill throughput per GPU as functions of ISL (linear in ISL
between profiled points, clamped to the profiled range). `DecodeProfile`: ITL and decode
throughput per GPU over (KV usage, context length) points, bilinear between the profiled
context lengths; `best_throughput_per_gpu` is the throughput at the largest KV usage whose ITL
meets a target. `load_profile` reads Dynamo's layout (`selected_{prefill,decode}_interpolation/
raw_data.npz`, else `{prefill,decode}_raw_data.json`); `mocker_profile` samples the mocker's
timing polynomials into the same tables.
"""

from __future__ import annotations

import bisect
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dynamo.engines.mocker.timing import TimingModel
from dynamo.planner.npy import load_npz
from dynamo.runtime.errors import ConfigError

KV_SCAN_STEPS = 100


def interp(x: float, xs: Sequence[float], ys: Sequence[float]) -> float:
    """Piecewise-linear `y(x)` through sorted `xs`, clamped at both ends."""
    if x <= xs[0]:
        return ys[0]
    if x >= xs[-1]:
        return ys[-1]
    i = bisect.bisect_right(xs, x)
    x0, x1, y0, y1 = xs[i - 1], xs[i], ys[i - 1], ys[i]
    return y0 + (y1 - y0) * (x - x0) / (x1 - x0) if x1 > x0 else y1


def _curve(xs: Sequence[float], *ys: Sequence[float]) -> tuple[list[float], ...]:
    """Points sorted by x, duplicate x averaged."""
    merged: dict[float, list[list[float]]] = {}
    for i, x in enumerate(xs):
        merged.setdefault(float(x), []).append([float(y[i]) for y in ys])
    keys = sorted(merged)
    columns = [
        [sum(row[j] for row in merged[k]) / len(merged[k]) for k in keys] for j in range(len(ys))
    ]
    return (keys, *columns)


@dataclass(frozen=True)
class PrefillProfile:
    isl: list[float]
    ttft_ms: list[float]
    thpt_per_gpu: list[float]  # prompt tokens per second per GPU

    @classmethod
    def from_arrays(
        cls, isl: Sequence[float], ttft_ms: Sequence[float], thpt: Sequence[float] | None
    ) -> PrefillProfile:
        if not isl or len(isl) != len(ttft_ms) or (thpt is not None and len(thpt) != len(isl)):
            raise ConfigError(
                "prefill profile: prefill_isl/prefill_ttft differ in length or are empty"
            )
        if any(not math.isfinite(v) or v <= 0 for v in (*isl, *ttft_ms)):
            raise ConfigError("prefill profile: ISL and TTFT must be positive numbers")
        throughput = (
            thpt
            if thpt is not None
            else [i / t * 1000.0 for i, t in zip(isl, ttft_ms, strict=True)]
        )
        xs, ttft, tp = _curve(isl, ttft_ms, throughput)
        return cls(xs, ttft, tp)

    def ttft(self, isl: float) -> float:
        return interp(isl, self.isl, self.ttft_ms)

    def throughput_per_gpu(self, isl: float) -> float:
        return interp(isl, self.isl, self.thpt_per_gpu)


@dataclass(frozen=True)
class DecodeProfile:
    """Rows of (kv_usage -> itl_ms, thpt_per_gpu), one per profiled context length."""

    context_lengths: list[float]
    rows: list[tuple[list[float], list[float], list[float]]]  # (kv_usage, itl_ms, thpt)
    max_kv_tokens: int

    @classmethod
    def from_points(
        cls,
        kv_usage: Sequence[float],
        context_length: Sequence[float],
        itl_ms: Sequence[float],
        thpt_per_gpu: Sequence[float] | None,
        max_kv_tokens: int,
    ) -> DecodeProfile:
        n = len(kv_usage)
        if not n or len(context_length) != n or len(itl_ms) != n:
            raise ConfigError("decode profile: x_kv_usage/y_context_length/z_itl differ or empty")
        if max_kv_tokens <= 0:
            raise ConfigError("decode profile: max_kv_tokens must be > 0")
        if thpt_per_gpu is None:  # requests in the batch / ITL
            thpt_per_gpu = [
                max(1.0, kv * max_kv_tokens / ctx) / (itl / 1000.0)
                for kv, ctx, itl in zip(kv_usage, context_length, itl_ms, strict=True)
            ]
        if len(thpt_per_gpu) != n:
            raise ConfigError("decode profile: z_thpt_per_gpu differs in length")
        groups: dict[float, list[int]] = {}
        for i, ctx in enumerate(context_length):
            groups.setdefault(float(ctx), []).append(i)
        ctxs = sorted(groups)
        rows = []
        for ctx in ctxs:
            idx = groups[ctx]
            rows.append(
                _curve(
                    [kv_usage[i] for i in idx],
                    [itl_ms[i] for i in idx],
                    [thpt_per_gpu[i] for i in idx],
                )
            )
        return cls(ctxs, [(r[0], r[1], r[2]) for r in rows], int(max_kv_tokens))

    def _at(self, column: int, kv_usage: float, context_length: float) -> float:
        ctxs = self.context_lengths
        values = [interp(kv_usage, row[0], row[column]) for row in self.rows]
        return interp(context_length, ctxs, values)

    def itl(self, kv_usage: float, context_length: float) -> float:
        return self._at(1, kv_usage, context_length)

    def itl_at_concurrency(self, concurrency: float, context_length: float) -> float:
        kv = concurrency * context_length / self.max_kv_tokens
        return self.itl(min(1.0, kv), context_length)

    def throughput_per_gpu(self, kv_usage: float, context_length: float) -> float:
        return self._at(2, kv_usage, context_length)

    def best_throughput_per_gpu(self, itl_ms: float, context_length: float) -> tuple[float, bool]:
        """(throughput at the largest KV usage whose ITL <= `itl_ms`, whether one meets it).

        When none does, the throughput at the lowest profiled KV usage (the fastest point).
        """
        low = min(row[0][0] for row in self.rows)
        for step in range(KV_SCAN_STEPS, -1, -1):
            kv = low + (1.0 - low) * step / KV_SCAN_STEPS
            if self.itl(kv, context_length) <= itl_ms:
                return self.throughput_per_gpu(kv, context_length), True
        return self.throughput_per_gpu(low, context_length), False


@dataclass(frozen=True)
class EngineProfile:
    prefill: PrefillProfile
    decode: DecodeProfile
    source: str  # where it came from, for the log


def _arrays(path: Path) -> Mapping[str, Any]:
    if path.suffix == ".npz":
        return load_npz(path)
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a JSON object of arrays")
    return data


def _floats(data: Mapping[str, Any], key: str, path: Path, required: bool = True) -> Any:
    if key not in data:
        if required:
            raise ConfigError(f"{path}: no {key!r}")
        return None
    value = data[key]
    values = value if isinstance(value, list) else [value]
    try:
        return [float(v) for v in values]
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{path}: {key!r} must be numbers") from exc


def _find(directory: Path, role: str) -> Path:
    for candidate in (
        directory / f"selected_{role}_interpolation" / "raw_data.npz",
        directory / f"{role}_raw_data.json",
    ):
        if candidate.is_file():
            return candidate
    raise ConfigError(
        f"no {role} profile in {directory} (looked for selected_{role}_interpolation/"
        f"raw_data.npz and {role}_raw_data.json): run the profiler or mount its ConfigMap"
    )


def load_profile(directory: str | Path) -> EngineProfile:
    """The profile in `directory` (the profiler's output dir or its ConfigMap mount)."""
    root = Path(directory)
    prefill_path, decode_path = _find(root, "prefill"), _find(root, "decode")
    p = _arrays(prefill_path)
    prefill = PrefillProfile.from_arrays(
        _floats(p, "prefill_isl", prefill_path),
        _floats(p, "prefill_ttft", prefill_path),
        _floats(p, "prefill_thpt_per_gpu", prefill_path, required=False),
    )
    d = _arrays(decode_path)
    max_kv = _floats(d, "max_kv_tokens", decode_path)
    decode = DecodeProfile.from_points(
        _floats(d, "x_kv_usage", decode_path),
        _floats(d, "y_context_length", decode_path),
        _floats(d, "z_itl", decode_path),
        _floats(d, "z_thpt_per_gpu", decode_path, required=False),
        int(max_kv[0]),
    )
    return EngineProfile(prefill, decode, f"{prefill_path} + {decode_path}")


# The mocker's defaults (dynamo.engines.mocker.config): 16384 blocks of 64 tokens, 256 seqs.
MOCKER_KV_TOKENS = 16384 * 64
MOCKER_MAX_NUM_SEQS = 256
MOCKER_ISL_POINTS = (16, 64, 256, 512, 1024, 2048, 4096, 8192, 16384, 32768)
MOCKER_CONTEXT_POINTS = (128, 512, 1024, 2048, 4096, 8192, 16384)


def mocker_profile(
    speedup_ratio: float = 1.0,
    *,
    max_kv_tokens: int = MOCKER_KV_TOKENS,
    max_num_seqs: int = MOCKER_MAX_NUM_SEQS,
) -> EngineProfile:
    """The mocker's timing model as a profile: what `--backend mocker` plans with by default."""
    if speedup_ratio <= 0:
        raise ConfigError("the mocker's speedup ratio must be > 0 to plan with its timing")
    timing = TimingModel(speedup_ratio=speedup_ratio)
    ttft = [timing.prefill_s(int(isl)) * 1000.0 for isl in MOCKER_ISL_POINTS]
    prefill = PrefillProfile.from_arrays(list(MOCKER_ISL_POINTS), ttft, None)
    kv_points = [i / 20 for i in range(1, 21)]
    xs, ys, itl, thpt = [], [], [], []
    for ctx in MOCKER_CONTEXT_POINTS:
        for kv in kv_points:
            batch = min(kv * max_kv_tokens / ctx, max_num_seqs)
            usage = batch * ctx / max_kv_tokens  # what the cache actually holds
            step_ms = timing.decode_s(usage) * 1000.0
            xs.append(kv)
            ys.append(float(ctx))
            itl.append(step_ms)
            thpt.append(max(batch, 1.0) / (step_ms / 1000.0))
    decode = DecodeProfile.from_points(xs, ys, itl, thpt, max_kv_tokens)
    return EngineProfile(prefill, decode, f"the mocker's timing model (speedup {speedup_ratio:g})")
