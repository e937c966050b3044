"""The planner's configuration: one frozen dataclass, Dynamo 1.6.1's `PlannerConfig` field names.

Sources, strongest first: command-line flags, the `--config` file (JSON or YAML, or inline
JSON, with the same field names), `DYN_*` / `PROMETHEUS_ENDPOINT` / `PLANNER_PROMETHEUS_PORT`
env vars, then the defaults below. Units are in the names (`ttft_ms`, `..._seconds`).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from dynamo.deploy.state import CONTROL_ENV
from dynamo.planner.connectors.base import ROLES, Role
from dynamo.runtime.config import add_arguments, option, resolve
from dynamo.runtime.errors import ConfigError

BACKENDS = ("vllm", "sglang", "trtllm", "mocker")
MODES = ("disagg", "agg", "prefill", "decode")
ENVIRONMENTS = ("local", "kubernetes", "virtual")
PREDICTORS = ("constant", "kalman", "arima", "prophet")

# Other names a config file may use for a field (Dynamo's older and newer spellings).
FILE_ALIASES = {
    "throughput_adjustment_interval": "throughput_adjustment_interval_seconds",
    "adjustment_interval": "throughput_adjustment_interval_seconds",
    "ttft": "ttft_ms",
    "itl": "itl_ms",
    "advisory": "no_operation",
    "prometheus_port": "metric_reporting_prometheus_port",
    "load_adjustment_interval": "load_adjustment_interval_seconds",
}


def _default_environment() -> str:
    """`local` inside `dynamo serve` (it hands its children the control socket), else k8s."""
    return "local" if os.environ.get(CONTROL_ENV) else "kubernetes"


@dataclasses.dataclass(frozen=True)
class PlannerConfig:
    """Everything `python -m dynamo.planner` reads."""

    environment: str = option(
        default_factory=_default_environment,
        help="where replicas change: local (`dynamo serve`), kubernetes (the DGD), virtual "
        "(an external system); default local under `dynamo serve`, else kubernetes",
        choices=ENVIRONMENTS,
    )
    backend: str = option("vllm", help="engine of the workers", choices=BACKENDS)
    mocker_speedup_ratio: float = option(
        1.0,
        help="--backend mocker without profile data: the workers' --speedup-ratio, so the "
        "mocker's timing model matches them",
    )
    mode: str = option(
        "disagg",
        help="disagg scales prefill and decode; agg one aggregated worker pool; prefill or "
        "decode only that role",
        choices=MODES,
    )
    throughput_adjustment_interval_seconds: int = option(
        180,
        flag="--adjustment-interval",
        aliases=("--throughput-adjustment-interval",),
        env="DYN_ADJUSTMENT_INTERVAL",
        help="seconds between two decisions (the observation window)",
    )
    ttft_ms: float = option(500.0, flag="--ttft", env="DYN_TTFT", help="TTFT target in ms")
    itl_ms: float = option(50.0, flag="--itl", env="DYN_ITL", help="ITL target in ms")
    isl: int = option(3000, help="expected prompt tokens until traffic is observed")
    osl: int = option(150, help="expected output tokens until traffic is observed")
    load_predictor: str = option(
        "kalman",
        help="forecast of next interval's load: constant, kalman (local linear trend), arima "
        "(pydynamo[planner-arima]), prophet (pydynamo[planner-prophet])",
        choices=PREDICTORS,
    )
    prophet_window_size: int = option(50, help="prophet: points it refits on")
    kalman_q_level: float = option(1.0, help="kalman: process noise of the level")
    kalman_q_trend: float = option(0.1, help="kalman: process noise of the trend")
    kalman_r: float = option(10.0, help="kalman: measurement noise")
    kalman_min_points: int = option(5, help="kalman: points before it forecasts (else last)")
    profile_results_dir: str = option(
        "profiling_results",
        help="the profiler's output (selected_*_interpolation/raw_data.npz or "
        "prefill_raw_data.json + decode_raw_data.json); with --backend mocker and no data, "
        "the mocker's own timing model is used",
    )
    max_gpu_budget: int = option(8, help="most GPUs prefill + decode may use (-1 = no limit)")
    min_endpoint: int = option(1, help="fewest replicas per role")
    prefill_engine_num_gpu: int = option(1, help="GPUs of one prefill worker")
    decode_engine_num_gpu: int = option(1, help="GPUs of one decode (or aggregated) worker")
    max_throughput_scaling_replicas: int = option(
        8, help="largest replica change per role in one decision"
    )
    # plain fields: their flags are `--no-operation` / `--no-correction` (see build_parser)
    no_operation: bool = False
    no_correction: bool = False
    enable_throughput_scaling: bool = option(
        True, help="size replicas from predicted load and the profile"
    )
    enable_load_scaling: bool = option(
        True, help="add replicas when workers queue prefill tokens or fill their KV cache"
    )
    load_adjustment_interval_seconds: float = option(
        1.0,
        flag="--load-adjustment-interval",
        env="DYN_LOAD_ADJUSTMENT_INTERVAL",
        help="seconds between load checks inside an interval: a queue or KV usage over its "
        "up threshold, or a frontend arrival rate beyond the live workers, adds workers at "
        "once, as many as the queue's growth or the arrival rate calls for (they never scale "
        "down; 0 = only at decisions)",
    )
    prefill_scale_up_queue_tokens: int | None = option(
        None,
        help="load scaling: queued prefill tokens per prefill worker that add one "
        "(default: what it prefills within the TTFT target)",
    )
    prefill_scale_down_queue_tokens: int | None = option(
        None, help="load scaling: below this per worker, one may go (default: 1/5 of up)"
    )
    decode_scale_up_kv_rate: float = option(
        0.9, help="load scaling: mean decode KV usage (0-1) that adds a decode worker"
    )
    decode_scale_down_kv_rate: float = option(
        0.5, help="load scaling: below this mean KV usage a decode worker may go"
    )
    forecast_margin_sigmas: float = option(
        0.0,
        help="throughput scaling sizes for the forecast request count plus this many of its "
        "Poisson standard deviations (sqrt of the count): room for arrival noise and a "
        "rising load before the next decision",
    )
    rising_margin_sigmas: float = option(
        2.0,
        help="while the load rises (the last interval's requests above the mean of the three "
        "before), size for this many Poisson standard deviations above the forecast "
        "instead of --forecast-margin-sigmas, when larger: the workers added now serve a "
        "load that is still growing",
    )
    scale_down_headroom: float = option(
        0.8,
        help="scale down only when the remaining workers carry the load at this fraction of "
        "their capacity (no 2<->1 oscillation at steady load)",
    )
    scale_down_cooldown_intervals: int = option(
        2, help="intervals after a role scaled up before it may scale down"
    )
    metric_pulling_prometheus_endpoint: str | None = option(
        None,
        env="PROMETHEUS_ENDPOINT",
        help="read frontend metrics from this Prometheus HTTP API (default: scrape the "
        "frontends found through discovery)",
    )
    metric_reporting_prometheus_port: int = option(
        0,
        env="PLANNER_PROMETHEUS_PORT",
        help="port of the planner's /metrics and /health (0 = the runtime's --system-port, "
        "else off)",
    )
    model_name: str | None = option(
        None, help="only count this model's traffic (default: every model of the namespace)"
    )
    prefill_service: str | None = option(
        None, help="graph service of the prefill role (default: by subComponentType, name)"
    )
    decode_service: str | None = option(
        None, help="graph service of the decode role (default: by subComponentType, name)"
    )

    def __post_init__(self) -> None:
        checks = (
            (self.throughput_adjustment_interval_seconds > 0, "--adjustment-interval must be > 0"),
            (_positive(self.ttft_ms), "--ttft must be > 0 (ms)"),
            (_positive(self.itl_ms), "--itl must be > 0 (ms)"),
            (self.isl > 0 and self.osl > 0, "--isl and --osl must be > 0"),
            (_positive(self.mocker_speedup_ratio), "--mocker-speedup-ratio must be > 0"),
            (self.max_gpu_budget == -1 or self.max_gpu_budget >= 1, "--max-gpu-budget: -1 or >= 1"),
            (self.min_endpoint >= 0, "--min-endpoint must be >= 0"),
            (
                self.prefill_engine_num_gpu >= 1 and self.decode_engine_num_gpu >= 1,
                "--prefill-engine-num-gpu and --decode-engine-num-gpu must be >= 1",
            ),
            (self.max_throughput_scaling_replicas >= 1, "--max-throughput-scaling-replicas >= 1"),
            (self.prophet_window_size >= 2, "--prophet-window-size must be >= 2"),
            (
                self.kalman_q_level >= 0 and self.kalman_q_trend >= 0 and self.kalman_r > 0,
                "--kalman-q-level/--kalman-q-trend must be >= 0 and --kalman-r > 0",
            ),
            (self.kalman_min_points >= 1, "--kalman-min-points must be >= 1"),
            (
                0 <= self.decode_scale_down_kv_rate < self.decode_scale_up_kv_rate <= 1,
                "need 0 <= --decode-scale-down-kv-rate < --decode-scale-up-kv-rate <= 1",
            ),
            (0 < self.scale_down_headroom <= 1, "--scale-down-headroom must be in (0, 1]"),
            (self.forecast_margin_sigmas >= 0, "--forecast-margin-sigmas must be >= 0"),
            (self.rising_margin_sigmas >= 0, "--rising-margin-sigmas must be >= 0"),
            (self.scale_down_cooldown_intervals >= 0, "--scale-down-cooldown-intervals >= 0"),
            (
                self.load_adjustment_interval_seconds >= 0,
                "--load-adjustment-interval must be >= 0",
            ),
            (
                self.enable_throughput_scaling or self.enable_load_scaling,
                "--no-enable-throughput-scaling with --no-enable-load-scaling leaves nothing "
                "to decide",
            ),
            (
                0 <= self.metric_reporting_prometheus_port <= 65535,
                "--metric-reporting-prometheus-port must be a port (0-65535)",
            ),
        )
        for ok, message in checks:
            if not ok:
                raise ConfigError(message)
        up, down = self.prefill_scale_up_queue_tokens, self.prefill_scale_down_queue_tokens
        if (up is not None and up <= 0) or (down is not None and down < 0):
            raise ConfigError("prefill queue thresholds must be positive tokens")
        if up is not None and down is not None and down >= up:
            raise ConfigError("--prefill-scale-down-queue-tokens must be below the up threshold")

    @property
    def interval_s(self) -> float:
        return float(self.throughput_adjustment_interval_seconds)

    @property
    def roles(self) -> tuple[Role, ...]:
        """The roles this planner scales; aggregated workers are the `decode` role."""
        if self.mode == "prefill":
            return ("prefill",)
        if self.mode in ("decode", "agg"):
            return ("decode",)
        return ROLES

    def engine_gpus(self, role: Role) -> int:
        return self.prefill_engine_num_gpu if role == "prefill" else self.decode_engine_num_gpu


def _positive(value: float) -> bool:
    return math.isfinite(value) and value > 0


def build_parser(prog: str = "python -m dynamo.planner") -> argparse.ArgumentParser:
    """`--config`, the planner's flags (every field) and `--log-level`; the runtime's are added
    by the caller."""
    parser = argparse.ArgumentParser(
        prog=prog, description="SLA planner: scales prefill/decode workers to latency targets."
    )
    parser.add_argument(
        "--config",
        default=None,
        help="JSON or YAML file (or inline JSON) with PlannerConfig fields; flags win",
    )
    add_arguments(parser, PlannerConfig, title="planner")
    switches = parser.add_argument_group("planner switches")
    switches.add_argument(
        "--no-operation",
        action="store_const",
        const=True,
        default=None,
        help="dry run: decide and log, never scale (config file: no_operation or advisory)",
    )
    switches.add_argument(
        "--no-correction",
        action="store_const",
        const=True,
        default=None,
        help="ignore the ratio of observed to profiled TTFT/ITL",
    )
    return parser


def load_config_file(source: str) -> dict[str, Any]:
    """The fields of a `--config` value: a JSON/YAML file path or an inline JSON object."""
    path = Path(source)
    try:
        is_file = path.is_file()
    except OSError:  # an inline JSON string too long for a path
        is_file = False
    if is_file:
        try:
            data = yaml.safe_load(path.read_text())  # YAML is a superset of JSON
        except (OSError, yaml.YAMLError) as exc:
            raise ConfigError(f"--config {source}: cannot read: {exc}") from exc
    elif source.lstrip().startswith("{"):
        try:
            data = json.loads(source)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"--config: not valid JSON: {exc}") from exc
    else:
        raise ConfigError(f"--config {source}: no such file (nor inline JSON)")
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"--config {source}: expected a mapping of PlannerConfig fields")
    return _check_file_fields(data, source)


def _check_file_fields(data: Mapping[str, Any], source: str) -> dict[str, Any]:
    hints = typing.get_type_hints(PlannerConfig)
    fields = {f.name for f in dataclasses.fields(PlannerConfig)}
    values: dict[str, Any] = {}
    unknown = []
    for key, value in data.items():
        name = FILE_ALIASES.get(str(key), str(key)).replace("-", "_")
        if name not in fields:
            unknown.append(str(key))
            continue
        values[name] = _typed(value, hints[name], f"--config {source}: {key}")
    if unknown:
        raise ConfigError(
            f"--config {source}: unknown or unsupported field(s): {', '.join(sorted(unknown))}"
        )
    return values


def _typed(value: Any, hint: Any, where: str) -> Any:
    """`value` checked against a field type (int, float, bool, str, optional of these)."""
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    optional = bool(typing.get_args(hint)) and len(args) < len(typing.get_args(hint))
    base = args[0] if optional else hint
    if value is None:
        if optional:
            return None
        raise ConfigError(f"{where}: must not be null")
    if base is bool:
        if isinstance(value, bool):
            return value
    elif base is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif base is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
    elif base is str and isinstance(value, str):
        return value
    raise ConfigError(f"{where}: expected {getattr(base, '__name__', base)}, got {value!r}")


def planner_config(
    args: argparse.Namespace | Mapping[str, Any],
    environ: Mapping[str, str] | None = None,
) -> PlannerConfig:
    """Flags beat the `--config` file, which beats env vars, which beat the defaults."""
    given = dict(vars(args) if isinstance(args, argparse.Namespace) else args)
    source = given.pop("config", None)
    merged = load_config_file(source) if source else {}
    merged.update({k: v for k, v in given.items() if v is not None})
    return resolve(PlannerConfig, merged, environ)


def parse_planner_config(argv: Sequence[str] | None = None) -> PlannerConfig:
    """Parse planner flags alone (tests and tools); `main` adds the runtime's."""
    return planner_config(build_parser().parse_args(argv))
