"""PlannerConfig: flags, the --config file (JSON/YAML, Dynamo 1.6.1 names), env, validation."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dynamo.planner.config import PlannerConfig, build_parser, planner_config
from dynamo.runtime.errors import ConfigError


def parse(argv: list[str], environ: dict[str, str] | None = None) -> PlannerConfig:
    return planner_config(build_parser().parse_args(argv), environ or {})


def test_the_issue_flags() -> None:
    argv = (
        "--environment local --backend mocker --mode disagg --adjustment-interval 10 "
        "--ttft 300 --itl 40 --isl 1000 --osl 100 --load-predictor constant "
        "--profile-results-dir /p --max-gpu-budget 6 --min-endpoint 1 "
        "--prefill-engine-num-gpu 2 --decode-engine-num-gpu 4 --no-operation --no-correction "
        "--metric-pulling-prometheus-endpoint http://prom:9090 "
        "--metric-reporting-prometheus-port 9085 --no-enable-load-scaling "
        "--enable-throughput-scaling"
    )
    cfg = parse(argv.split())
    assert cfg.environment == "local"
    assert cfg.backend == "mocker"
    assert cfg.throughput_adjustment_interval_seconds == 10
    assert (cfg.ttft_ms, cfg.itl_ms, cfg.isl, cfg.osl) == (300.0, 40.0, 1000, 100)
    assert cfg.load_predictor == "constant"
    assert cfg.profile_results_dir == "/p"
    assert (cfg.max_gpu_budget, cfg.min_endpoint) == (6, 1)
    assert (cfg.prefill_engine_num_gpu, cfg.decode_engine_num_gpu) == (2, 4)
    assert cfg.no_operation and cfg.no_correction
    assert cfg.metric_pulling_prometheus_endpoint == "http://prom:9090"
    assert cfg.metric_reporting_prometheus_port == 9085
    assert cfg.enable_throughput_scaling and not cfg.enable_load_scaling
    assert cfg.roles == ("prefill", "decode")


def test_env_vars_of_dynamo() -> None:
    cfg = parse([], {"PROMETHEUS_ENDPOINT": "http://p:9090", "PLANNER_PROMETHEUS_PORT": "9001"})
    assert cfg.metric_pulling_prometheus_endpoint == "http://p:9090"
    assert cfg.metric_reporting_prometheus_port == 9001


def test_environment_defaults_to_local_under_dynamo_serve() -> None:
    assert parse([], {}).environment in ("local", "kubernetes")
    import os

    os.environ["DYN_SERVE_CONTROL"] = "/tmp/x.sock"
    try:
        assert PlannerConfig().environment == "local"
    finally:
        del os.environ["DYN_SERVE_CONTROL"]
    assert PlannerConfig().environment == "kubernetes"


def test_yaml_config_file_with_dynamo_names_and_flags_winning(tmp_path: Path) -> None:
    path = tmp_path / "planner.yaml"
    path.write_text(
        "environment: virtual\nbackend: sglang\nthroughput_adjustment_interval_seconds: 30\n"
        "ttft_ms: 250\nitl_ms: 20\nload_predictor: constant\nadvisory: true\n"
        "max_gpu_budget: -1\n"
    )
    cfg = parse(["--config", str(path), "--itl", "15"], {"PROMETHEUS_ENDPOINT": "http://e"})
    assert cfg.environment == "virtual"
    assert cfg.backend == "sglang"
    assert cfg.throughput_adjustment_interval_seconds == 30
    assert cfg.ttft_ms == 250.0
    assert cfg.itl_ms == 15.0  # the flag wins over the file
    assert cfg.no_operation  # `advisory` is Dynamo 1.6.1's name
    assert cfg.max_gpu_budget == -1
    assert cfg.metric_pulling_prometheus_endpoint == "http://e"  # env where the file is silent


def test_json_file_and_inline_json(tmp_path: Path) -> None:
    path = tmp_path / "planner.json"
    path.write_text(json.dumps({"mode": "agg", "ttft": 100, "kalman_r": 3}))
    cfg = parse(["--config", str(path)])
    assert (cfg.mode, cfg.ttft_ms, cfg.kalman_r, cfg.roles) == ("agg", 100.0, 3.0, ("decode",))
    assert parse(["--config", '{"mode": "prefill"}']).roles == ("prefill",)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("optimization_target: sla\n", "unknown or unsupported field(s): optimization_target"),
        ("ttft_ms: fast\n", "ttft_ms: expected float, got 'fast'"),
        ("min_endpoint: true\n", "min_endpoint: expected int, got True"),
        ("- a\n", "expected a mapping of PlannerConfig fields"),
        ("backend: tgi\n", "'tgi' is not one of"),
    ],
)
def test_bad_config_files(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(content)
    with pytest.raises(ConfigError) as info:
        parse(["--config", str(path)])
    assert message in str(info.value)


def test_missing_config_file() -> None:
    with pytest.raises(ConfigError, match="no such file"):
        parse(["--config", "/nonexistent/planner.yaml"])


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--ttft", "0"], "--ttft must be > 0"),
        (["--adjustment-interval", "0"], "--adjustment-interval must be > 0"),
        (["--max-gpu-budget", "0"], "--max-gpu-budget: -1 or >= 1"),
        (["--min-endpoint", "-1"], "--min-endpoint must be >= 0"),
        (
            ["--no-enable-throughput-scaling", "--no-enable-load-scaling"],
            "leaves nothing to decide",
        ),
        (["--decode-scale-up-kv-rate", "0.4"], "--decode-scale-down-kv-rate <"),
    ],
)
def test_invalid_values(argv: list[str], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse(argv)
    assert message in str(info.value)


def test_budget_below_minimums_is_valid_config() -> None:
    # a safe hold at run time, not a crash loop at start (see test_decide)
    assert parse(["--max-gpu-budget", "1", "--min-endpoint", "1"]).max_gpu_budget == 1
